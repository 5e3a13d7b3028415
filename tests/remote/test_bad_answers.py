"""Malformed, trickled and token-echoing answers from a model server: each becomes one failed
capture with a clear error, the probe keeps probing, and our bearer token never reaches a
capture, a log line or the workspace, however the server escaped it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.core.bus import Bus
from app.core.domain import Capture, CaptureStatus, EndpointUri, Metric, Sample
from probes import ProbeOptions
from probes.http_model import Decoded
from probes.v2_http import V2Probe
from tests.helpers import wait_until
from tests.remote.fault_server import SCORES, FaultServer

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "sEcReTtOkEn12345/67890abcdEF=="


class ScriptedServer(FaultServer):
    """The fault server, plus: POSTs answered from ``script`` (one canned body each, in
    order) while it lasts; ``trickle`` answers one byte every ``trickle_s``, and
    ``trickle_head`` does so from the first byte of the head."""

    def __init__(self) -> None:
        super().__init__()
        # (status, body), or (status, a function of the request's Authorization header)
        self.script: list[tuple[int, bytes | Callable[[str], str]]] = []
        self.trickle_s = 0.2

    def _answer(self, h, method: str) -> None:
        if method == "POST" and self.mode == "trickle_head":
            h.rfile.read(int(h.headers.get("content-length") or 0))
            head = b"HTTP/1.1 200 OK\r\nx-padding: " + b"a" * 100000
            try:
                for i in range(len(head)):
                    h.wfile.write(head[i:i + 1])
                    h.wfile.flush()
                    if self.release.wait(self.trickle_s):
                        break
            except OSError:
                pass
            h.close_connection = True
            return None
        if method == "POST" and self.mode == "trickle":
            length = int(h.headers.get("content-length") or 0)
            h.rfile.read(length)
            h.send_response(200)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", "100000")
            h.end_headers()
            try:
                for _ in range(100000):
                    h.wfile.write(b" ")
                    h.wfile.flush()
                    if self.release.wait(self.trickle_s):
                        break
            except OSError:
                pass  # the probe gave up: what it should do
            h.close_connection = True
            return None
        if method == "POST" and self.script:
            length = int(h.headers.get("content-length") or 0)
            h.rfile.read(length)
            self.authorizations.append(h.headers.get("authorization"))
            status, body = self.script.pop(0)
            if callable(body):
                body = body(str(h.headers.get("authorization"))).encode()
            return self._send(h, status, body)
        return super()._answer(h, method)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer()
    s.start()
    yield s
    s.stop()


def _v2(server: FaultServer, query: str = "") -> str:
    return f"v2+http://127.0.0.1:{server.port}/models/m{query}"


def _tensor(**fields: object) -> bytes:
    out = {"name": "probabilities", "datatype": "FP32", "shape": [1, 3], "data": SCORES}
    out.update(fields)
    return json.dumps({"model_name": "m", "outputs": [out]}).encode()


DEEP = b"[" * 100000 + b"]" * 100000

MALFORMED = [
    pytest.param(_tensor(shape=["a"]), "not a valid tensor", id="shape-of-text"),
    pytest.param(_tensor(shape=[None, 3]), "not a valid tensor", id="shape-with-null"),
    pytest.param(_tensor(shape={"a": 1}), "not a valid tensor", id="shape-an-object"),
    pytest.param(_tensor(datatype="INT64", shape=[1], data=[2**70]), "not a valid tensor",
                 id="int64-overflow"),
    pytest.param(DEEP, "nested too deeply", id="deeply-nested"),
    pytest.param(b'{"outputs": ' + DEEP + b"}", "nested too deeply", id="deep-outputs"),
]


@pytest.mark.parametrize(("answer", "words"), MALFORMED)
def test_a_malformed_v2_answer_is_one_error_capture_and_the_next_is_read(
        opened, server, demo_dir, answer, words):
    bus = Bus()
    probe = opened(_v2(server), bus, ProbeOptions(payload=demo_dir / "reference.csv"))
    server.script = [(200, answer)]
    capture = probe.measure_one()
    assert capture.status is CaptureStatus.ERROR
    assert words in capture.error and "\n" not in capture.error
    assert (probe.requests, probe.errors) == (1, 1)
    assert probe.measure_one().status is not CaptureStatus.ERROR  # the server's next answer
    assert (probe.requests, probe.errors) == (2, 1)


@pytest.mark.parametrize("answer", [DEEP, b"1" + b"0" * 400, b'{"a": 1' + b"0" * 400 + b"}"],
                         ids=["deeply-nested", "huge-number", "huge-score"])
def test_a_malformed_torchserve_answer_is_an_error_capture(opened, server, demo_dir, answer):
    probe = opened(f"torchserve+http://127.0.0.1:{server.port}/m", Bus(),
                   ProbeOptions(payload=demo_dir / "reference.csv"))
    server.script = [(200, answer)]
    capture = probe.measure_one()
    assert capture.status is CaptureStatus.ERROR and capture.error
    assert probe.measure_one().status is not CaptureStatus.ERROR


def test_one_malformed_answer_does_not_stop_the_probe(opened, server, demo_dir):
    bus = Bus()
    probe = opened(_v2(server, "?rate=50"), bus, ProbeOptions(payload=demo_dir / "reference.csv"))
    ok = [(200, _tensor())] * 3
    server.script = [*ok, (200, _tensor(shape=[None, 3])), *ok, (200, DEEP), *ok]
    probe.start()
    try:
        assert wait_until(lambda: not server.script and probe.requests >= 15, timeout_s=30), \
            f"the probe stopped after {probe.requests} requests"
        assert probe.alive
    finally:
        probe.stop()
    items, _ = bus.drain()
    errors = [c.error for c in items
              if isinstance(c, Capture) and c.status is CaptureStatus.ERROR]
    assert len(errors) == 2
    assert "not a valid tensor" in errors[0] and "nested too deeply" in errors[1]
    captures = [c for c in items if isinstance(c, Capture)]
    assert len(captures) == probe.requests  # every request recorded, the bad ones included


class BuggyDecoder(V2Probe):
    """A probe kind whose decoder has a bug that one answer in three trips."""

    calls = 0

    def decode(self, doc: object) -> Decoded:
        self.calls += 1
        if self.calls % 3 == 0:
            return {}["missing"]  # the bug: a KeyError no decoder contract allows
        return super().decode(doc)


def test_a_bug_in_a_decoder_is_logged_and_counted_and_probing_goes_on(server, demo_dir,
                                                                     caplog):
    bus = Bus()
    probe = BuggyDecoder(EndpointUri.parse(_v2(server, "?rate=50")), bus,
                         ProbeOptions(payload=demo_dir / "reference.csv"))
    probe.start()
    try:
        assert wait_until(lambda: probe.requests >= 12, timeout_s=30), \
            f"the probe stopped after {probe.requests} requests"
        assert probe.alive
    finally:
        probe.stop()
        probe.close()
    assert probe.errors >= 4 and "KeyError" in (probe.last_error or "KeyError")
    items, _ = bus.drain()
    failures = [s for s in items if isinstance(s, Sample) and s.metric == Metric.FAILURE]
    assert len(failures) >= probe.calls // 3
    tracebacks = [r for r in caplog.records if r.exc_info and "internal error" in r.message]
    assert len(tracebacks) == 1  # once, not once per answer


@pytest.mark.parametrize("mode", ["trickle", "trickle_head"])
def test_timeout_s_is_a_deadline_for_the_whole_answer(opened, server, demo_dir, mode):
    probe = opened(_v2(server, "?timeout_s=1"), Bus(),
                   ProbeOptions(payload=demo_dir / "reference.csv"))
    server.mode = mode  # one byte every 0.2 s: each read is quick, the answer never ends
    got: list[Capture] = []
    worker = threading.Thread(target=lambda: got.append(probe.measure_one()), daemon=True)
    worker.start()
    worker.join(30)
    server.release.set()
    assert not worker.is_alive(), "a trickling answer held the probe past its timeout_s"
    (capture,) = got
    assert capture.status is CaptureStatus.TIMEOUT
    assert "no answer within 1 s" in capture.error


def _escaped(text: str) -> str:
    """As Gson (TorchServe's JSON library) writes it: '=' as \\u003d."""
    return json.dumps(text).replace("=", "\\u003d")


def _error(text_json: str) -> str:
    return '{"error": ' + text_json + "}"


@pytest.mark.parametrize("echo", [
    pytest.param(lambda a: _error(_escaped("unauthorized: " + a)), id="gson"),
    pytest.param(lambda a: json.dumps({"error": "bad " + a}).replace("/", "\\/"), id="slash"),
    pytest.param(lambda a: _error(json.dumps("bad " + a).replace("T", "\\u0054")),
                 id="unicode-escape"),
    pytest.param(lambda a: json.dumps({"message": "bad " + a.replace("=", "%3D")}), id="url"),
])
def test_a_token_the_server_escapes_is_still_masked(opened, server, demo_dir, monkeypatch,
                                                     caplog, echo):
    monkeypatch.setenv("PS_TEST_TOKEN", TOKEN)
    probe = opened(_v2(server, "?token_env=PS_TEST_TOKEN"), Bus(),
                   ProbeOptions(payload=demo_dir / "reference.csv"))
    server.script = [(500, echo)]
    capture = probe.measure_one()
    assert server.authorizations[-1] == f"Bearer {TOKEN}"  # it was sent
    assert capture.status is CaptureStatus.ERROR and "[token]" in capture.error
    for text in (capture.error, probe.last_error, caplog.text):
        assert "sEcReTtOkEn" not in text


def test_a_token_inside_a_decoded_answer_is_masked(opened, server, demo_dir, monkeypatch):
    monkeypatch.setenv("PS_TEST_TOKEN", TOKEN)
    probe = opened(f"torchserve+http://127.0.0.1:{server.port}/m?token_env=PS_TEST_TOKEN",
                   Bus(), ProbeOptions(payload=demo_dir / "reference.csv"))
    server.script = [(200, _escaped)]  # a label: the header, escaped
    capture = probe.measure_one()
    assert capture.prediction == "Bearer [token]"


def test_an_escaped_token_never_reaches_the_workspace(server, demo_dir, tmp_path):
    server.script = [(500, lambda auth: _error(_escaped("unauthorized: " + auth)))] * 500
    db = tmp_path / "w.db"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "PS_TEST_TOKEN": TOKEN,
           "QT_QPA_PLATFORM": "offscreen"}
    run = subprocess.run(
        [sys.executable, "-m", "app.cli", "watch", _v2(server, "?token_env=PS_TEST_TOKEN&rate=20"),
         "--payload", str(demo_dir / "reference.csv"), "--seconds", "2", "--db", str(db),
         "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert server.authorizations and server.authorizations[-1] == f"Bearer {TOKEN}"
    assert "sEcReTtOkEn" not in run.stdout + run.stderr
    written = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("w.db"))
    assert b"[token]" in written  # the errors were recorded, masked
    assert b"sEcReTtOkEn" not in written


def test_garbage_with_terminal_escapes_is_shown_escaped():
    """A scrape of garbage put the server's bytes into the message as they were: a terminal
    escape sequence among them would reach the terminal or the window as itself."""
    from probes.http_common import BadResponse
    from probes.prometheus import parse_families

    with pytest.raises(BadResponse) as raised:
        parse_families("metric{\x1b[2J\x1b[31m} 1\n\x00")
    message = str(raised.value)
    assert message.startswith("not Prometheus text format")
    assert message.isprintable() and "\\x1b" in message
