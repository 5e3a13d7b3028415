"""Clients' credentials through the tap: forwarded untouched, but never recorded, even when
the upstream writes them back into its answer (plainly or JSON-escaped)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from app.core.tap_decode import Exchange, to_capture
from app.core.tap_proxy import ProxyServer, ProxySettings
from tests.agent.conftest import through_the_tap
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)

SECRET = "TAPSECRET123456789/abc=="
V2 = "/v2/models/m/infer"
BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
                               "data": [1.0, 2.0]}]}).encode()


class EchoUpstream:
    """Answers every POST by repeating its credential headers: a 500 error (``/error``
    spellings below) or, for TorchServe's path, a 200 label."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                seen = " ".join(f"{k}={v}" for k, v in self.headers.items()
                                if k.lower() in ("authorization", "x-api-key"))
                style = self.headers.get("x-echo", "plain")
                if style == "gson":  # '=' as \u003d, as TorchServe's Gson writes it
                    body = ('{"error": ' + json.dumps("bad auth " + seen)
                            .replace("=", "\\u003d") + "}").encode()
                elif style == "slash":
                    body = json.dumps({"error": "bad auth " + seen}).replace("/", "\\/").encode()
                else:
                    body = json.dumps({"error": "bad auth " + seen}).encode()
                status = 200 if self.path.startswith("/predictions/") else 500
                if status == 200:
                    body = json.dumps(seen).replace("=", "\\u003d").encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[EchoUpstream]:
    up = EchoUpstream()
    yield up
    up.close()


@pytest.fixture
def proxy(upstream) -> Iterator[tuple[str, list[Exchange]]]:
    """The tap's proxy in this process, its exchanges collected as the recorder gets them."""
    got: list[Exchange] = []
    server = ProxyServer("127.0.0.1", 0, ProxySettings(
        "127.0.0.1", upstream.port, None, 5.0, 1 << 20, got.append))
    server.start()
    host, port = server.address
    yield f"http://{host}:{port}", got
    server.close()


def _recorded(x: Exchange, upstream: EchoUpstream) -> str:
    """Everything of an exchange that reaches the workspace, as text."""
    decoded = to_capture(x, f"127.0.0.1:{upstream.port}")
    assert decoded is not None
    capture, _ = decoded
    blobs = b"".join(t.data for t in (*capture.inputs, *capture.outputs))
    return " ".join([repr(x.request_body), repr(x.response_body), str(x.error),
                     str(capture.error), str(capture.prediction), repr(blobs)])


BASIC = base64.b64encode(f"user:{SECRET}".encode()).decode()


@pytest.mark.parametrize(("headers", "echoed"), [
    ({"Authorization": f"Bearer {SECRET}"}, SECRET),
    ({"Authorization": f"Bearer {SECRET}", "X-Echo": "gson"}, SECRET),
    ({"Authorization": f"Bearer {SECRET}", "X-Echo": "slash"}, SECRET),
    ({"X-Api-Key": SECRET, "X-Echo": "gson"}, SECRET),
    ({"Authorization": f"Basic {BASIC}"}, BASIC),
], ids=["bearer", "bearer-gson", "bearer-slash", "api-key-gson", "basic"])
def test_an_echoed_credential_is_forwarded_but_not_recorded(upstream, proxy, headers, echoed):
    url, got = proxy
    direct = httpx.post(upstream.url + V2, content=BODY, headers=headers)
    tapped = httpx.post(url + V2, content=BODY, headers=headers)
    assert tapped.status_code == 500 and tapped.content == direct.content  # untouched
    assert echoed in tapped.json()["error"]  # the client still sees its own echo
    assert wait_until(lambda: len(got) == 1)
    text = _recorded(got[0], upstream)
    assert echoed not in text and "TAPSECRET" not in text and "[redacted]" in text
    assert "HTTP 500" in text  # the failure is still recorded, masked


def test_a_credential_decoded_into_a_prediction_is_not_recorded(upstream, proxy):
    url, got = proxy
    headers = {"Authorization": f"Bearer {SECRET}"}
    tapped = httpx.post(url + "/predictions/m", content=b"[1.0, 2.0]", headers=headers)
    assert SECRET in tapped.json()
    assert wait_until(lambda: len(got) == 1)
    assert "TAPSECRET" not in _recorded(got[0], upstream)


def test_a_workspace_recorded_through_the_tap_holds_no_credential(upstream, tmp_path: Path):
    db = tmp_path / "ws.db"
    calls = [(V2, BODY, {"Authorization": f"Bearer {SECRET}", "X-Echo": style})
             for style in ("plain", "gson", "slash")]
    pairs, captures = through_the_tap(upstream.url, db, calls)
    for direct, tapped in pairs:
        assert tapped.content == direct.content and b"TAPSECRET" in tapped.content
    assert len(captures) == 3 and all("[redacted]" in (c.error or "") for c in captures)
    written = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("ws.db"))
    assert b"TAPSECRET" not in written
