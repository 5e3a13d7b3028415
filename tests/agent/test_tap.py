"""The tap as a real process in front of a real model server process: clients see the very
bytes the server sent, and every inference call becomes a capture."""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.core.domain import CaptureStatus
from app.core.store import Store
from tests.agent.conftest import ROOT, Proc, env_with
from tests.helpers import wait_until

MODEL = ROOT / "assets" / "demo" / "wine-v1.onnx"
ROW = [14.1073, 2.1564, 2.1327, 15.8808, 93.2727, 2.9264, 3.303, 0.2425, 2.1661, 5.7784,
       1.0091, 3.4976, 1023.1786]
RECORD_LIMIT = 2000


class ModelServer(Proc):
    def __init__(self, port: int = 0) -> None:
        import subprocess

        self.popen = subprocess.Popen(
            [sys.executable, str(ROOT / "tools" / "onnx_http_server.py"), "--model", str(MODEL),
             "--port", str(port)], cwd=ROOT, env=env_with(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        assert self.popen.stdout is not None
        self.first_line = self.popen.stdout.readline().strip()
        assert self.first_line.startswith("serving"), self.popen.stderr.read()

    @property
    def url(self) -> str:
        return self.first_line.split()[1]


@pytest.fixture
def server(procs) -> ModelServer:
    s = ModelServer()
    procs.append(s)
    return s


@pytest.fixture
def tap(tmp_path, server, procs) -> Iterator[tuple[Proc, Path]]:
    db = tmp_path / "ws.db"
    t = Proc(["tap", "--listen", "127.0.0.1:0", "--upstream", server.url, "--db", str(db),
              "--max-record-bytes", str(RECORD_LIMIT), "--timeout", "1"])
    procs.append(t)
    yield t, db


def connect(url: str, timeout_s: float = 10) -> socket.socket:
    """A bare TCP connection to ``http://HOST:PORT``."""
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout_s)


def raw_exchange(url: str, method: str, path: str, body: bytes = b"",
                 headers: dict[str, str] | None = None) -> bytes:
    """Send one request over a bare socket and return every byte of the answer."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {url.removeprefix('http://')}",
             "Connection: close",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    with connect(url) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return recv_all(s)


def recv_all(s: socket.socket) -> bytes:
    """Every byte until the other side closes."""
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def without_date(response: bytes) -> bytes:
    return b"\r\n".join(line for line in response.split(b"\r\n")
                        if not line.lower().startswith(b"date:"))


def v2_body(rows: list[list[float]], rid: str = "req-1") -> bytes:
    return json.dumps({"id": rid, "inputs": [{"name": "features", "datatype": "FP32",
                                               "shape": [len(rows), 13],
                                               "data": [v for row in rows for v in row]}]}).encode()


CALLS = [
    ("v2", "/v2/models/wine-v1/infer", v2_body([ROW])),
    ("tfserving", "/v1/models/wine-v1:predict", json.dumps({"instances": [ROW]}).encode()),
    ("torchserve", "/predictions/wine-v1", json.dumps([ROW]).encode()),
]


def captures(db: Path, failed: bool | None = None):
    store = Store(db, readonly=True)
    try:
        return [c.capture for c in store.captures(failed=failed)]
    finally:
        store.close()


def test_clients_see_the_servers_bytes_and_each_call_is_recorded(tap, server):
    proxy, db = tap
    for _, path, body in CALLS:
        through = raw_exchange(proxy.url, "POST", path, body)
        direct = raw_exchange(server.url, "POST", path, body)
        assert through.startswith(b"HTTP/1.1 200")
        assert without_date(through) == without_date(direct)
    # Not inference calls: forwarded, not recorded.
    assert without_date(raw_exchange(proxy.url, "GET", "/v2/models/wine-v1")) == \
        without_date(raw_exchange(server.url, "GET", "/v2/models/wine-v1"))
    assert wait_until(lambda: db.exists() and len(captures(db)) == 3)
    by_kind = {c.endpoint.split("+", 1)[0]: c for c in captures(db)}
    host = server.url.removeprefix("http://")
    assert set(by_kind) == {"v2", "tfserving", "torchserve"}
    assert by_kind["v2"].endpoint == f"v2+http://{host}/models/wine-v1"
    assert by_kind["v2"].request_id == "req-1"
    for c in by_kind.values():
        assert c.status is CaptureStatus.OK and not c.truncated
        assert np.allclose(c.inputs[0].to_array().reshape(-1), ROW)
        assert c.prediction == "0" and c.confidence is not None
    assert by_kind["v2"].inputs[0].to_array().dtype == np.float32
    assert by_kind["v2"].inputs[0].shape == (1, 13)


def test_keep_alive_clients_are_served_through_the_pool(tap, server):
    proxy, db = tap
    with httpx.Client(base_url=proxy.url) as client:
        answers = [client.post("/v2/models/wine-v1/infer", content=v2_body([ROW], f"k{i}"))
                   for i in range(30)]
    assert all(a.status_code == 200 for a in answers)
    assert [a.json()["id"] for a in answers] == [f"k{i}" for i in range(30)]
    assert wait_until(lambda: db.exists() and len(captures(db)) == 30)


def test_server_errors_and_timeouts_are_recorded_as_failures(tap, server):
    proxy, db = tap
    bad = json.dumps([[1.0, 2.0]]).encode()
    through = raw_exchange(proxy.url, "POST", "/predictions/wine-v1", bad)
    assert without_date(through) == without_date(
        raw_exchange(server.url, "POST", "/predictions/wine-v1", bad))
    assert through.startswith(b"HTTP/1.1 500")
    slow = raw_exchange(proxy.url, "POST", "/v2/models/wine-v1/infer", v2_body([ROW]),
                        {"X-Test-Delay-S": "3"})
    assert slow.startswith(b"HTTP/1.1 504")
    assert wait_until(lambda: db.exists() and len(captures(db, failed=True)) == 2)
    statuses = {c.status: c for c in captures(db, failed=True)}
    assert set(statuses) == {CaptureStatus.ERROR, CaptureStatus.TIMEOUT}
    assert "HTTP 500" in statuses[CaptureStatus.ERROR].error
    assert "did not answer within 1 s" in statuses[CaptureStatus.TIMEOUT].error


def test_upstream_down_gives_502_and_a_failure(tap, server):
    proxy, db = tap
    server.kill()
    answer = raw_exchange(proxy.url, "POST", "/v2/models/wine-v1/infer", v2_body([ROW]))
    assert answer.startswith(b"HTTP/1.1 502")
    assert wait_until(lambda: db.exists() and len(captures(db, failed=True)) == 1)
    assert captures(db, failed=True)[0].status is CaptureStatus.ERROR


def test_oversized_payload_is_forwarded_whole_and_recorded_truncated(tap, server):
    proxy, db = tap
    body = v2_body([ROW] * 400)
    assert len(body) > RECORD_LIMIT
    through = raw_exchange(proxy.url, "POST", "/v2/models/wine-v1/infer", body)
    direct = raw_exchange(server.url, "POST", "/v2/models/wine-v1/infer", body)
    assert without_date(through) == without_date(direct)
    assert len(json.loads(through.split(b"\r\n\r\n", 1)[1])["outputs"][0]["data"]) == 1200
    assert wait_until(lambda: db.exists() and len(captures(db)) == 1)
    (c,) = captures(db)
    assert c.truncated and c.status is CaptureStatus.OK
    assert c.inputs[0].name == "request_body"
    assert c.inputs[0].data == body[:RECORD_LIMIT]


class CannedUpstream:
    """A bare TCP server that reads one request per connection and answers with fixed bytes."""

    def __init__(self, answer: bytes) -> None:
        import socketserver
        import threading

        self.requests: list[bytes] = []
        self.head_seen_at: list[float] = []  # when each request's head had fully arrived
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += self.request.recv(65536)
                outer.head_seen_at.append(time.monotonic())
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += self.request.recv(65536)
                outer.requests.append(head + b"\r\n\r\n" + body)
                self.request.sendall(answer)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def canned(tmp_path, procs):
    made = []

    def make(answer: bytes) -> tuple[CannedUpstream, Proc, Path]:
        up = CannedUpstream(answer)
        made.append(up)
        db = tmp_path / "canned.db"
        t = Proc(["tap", "--listen", "127.0.0.1:0", "--upstream", up.url, "--db", str(db)])
        procs.append(t)
        return up, t, db

    yield make
    for up in made:
        up.close()


def test_a_chunked_answer_passes_byte_for_byte_and_is_decoded_for_the_record(canned):
    doc = json.dumps({"predictions": [[0.1, 0.7, 0.2]]}).encode()
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              b"Transfer-Encoding: chunked\r\nX-Server: canned\r\n\r\n"
              + b"%x\r\n%s\r\n" % (10, doc[:10]) + b"%x\r\n%s\r\n" % (len(doc) - 10, doc[10:])
              + b"0\r\n\r\n")
    up, proxy, db = canned(answer)
    got = raw_exchange(proxy.url, "POST", "/v1/models/m:predict",
                       json.dumps({"instances": [ROW]}).encode(), {"X-Request-Id": "abc"})
    assert got == answer
    forwarded = up.requests[0]
    assert b"X-Request-Id: abc" in forwarded
    assert f"Host: {up.url.removeprefix('http://')}".encode() in forwarded
    assert wait_until(lambda: db.exists() and len(captures(db)) == 1)
    (c,) = captures(db)
    assert c.request_id == "abc" and c.prediction == "1"
    assert np.allclose(c.outputs[0].to_array(), [[0.1, 0.7, 0.2]])


def test_expect_100_continue_is_answered_and_the_body_still_forwarded(canned):
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]"
    up, proxy, _ = canned(answer)
    body = json.dumps([ROW]).encode()
    with connect(proxy.url) as s:
        s.sendall(f"POST /predictions/m HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        rest = recv_all(s)
    assert rest == answer
    assert up.requests[0].endswith(body)
    assert b"expect" not in up.requests[0].lower()


def test_a_garbage_answer_is_a_502_with_a_clear_error(canned):
    _, proxy, db = canned(b"NOT HTTP AT ALL\r\n\r\n")
    got = raw_exchange(proxy.url, "POST", "/v2/models/m/infer", v2_body([ROW]))
    assert got.startswith(b"HTTP/1.1 502")
    assert b"malformed response" in got
    assert wait_until(lambda: db.exists() and len(captures(db, failed=True)) == 1)
    assert "malformed response" in captures(db, failed=True)[0].error


def test_stopping_the_tap_records_every_call_it_forwarded(tap, server):
    proxy, db = tap
    with httpx.Client(base_url=proxy.url) as client:
        for i in range(20):
            assert client.post("/v2/models/wine-v1/infer",
                               content=v2_body([ROW], f"s{i}")).status_code == 200
    proxy.stop()  # SIGTERM right after the last answer: nothing may be left unrecorded
    assert proxy.popen.returncode == 0
    assert len(captures(db)) == 20


def test_a_client_that_hangs_up_early_still_has_its_call_recorded(tap, server):
    proxy, db = tap
    body = v2_body([ROW], "gone")
    with connect(proxy.url) as s:
        s.sendall(b"POST /v2/models/wine-v1/infer HTTP/1.1\r\nHost: x\r\nX-Test-Delay-S: 0.3\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    assert wait_until(lambda: db.exists() and len(captures(db)) == 1)
    (c,) = captures(db)
    assert c.request_id == "gone" and c.status is CaptureStatus.OK


def test_the_tap_refuses_to_listen_beyond_loopback(tmp_path):
    from app.core.tap import Tap, TapError

    db = tmp_path / "w.db"
    with pytest.raises(TapError, match="loopback only"):
        Tap("http://127.0.0.1:9", db, host="0.0.0.0", port=0)
    assert not db.exists()  # refused before anything was written


@pytest.mark.parametrize(("upstream", "words"), [
    ("http://127.0.0.1:99999", "has no valid port"),
    ("http://127.0.0.1:abc", "has no valid port"),
    ("ftp://127.0.0.1:21", "must be http://HOST:PORT"),
    ("http://127.0.0.1:8000/v2", "must not have a path"),
    ("http://svc:Sup3rS3cret@127.0.0.1:8000", "must not carry a user or password"),
])
def test_a_bad_upstream_is_one_line_before_anything_is_written(tmp_path, capsys, upstream,
                                                               words):
    from app.cli import main

    db = tmp_path / "w.db"
    assert main(["tap", "--upstream", upstream, "--db", str(db), "--listen", "127.0.0.1:0",
                 "--seconds", "1"]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "internal error" not in err
    assert "Sup3rS3cret" not in err
    assert not db.exists()


def test_a_body_sent_in_pieces_is_streamed_upstream_and_recorded_whole(canned):
    """The head goes upstream before the client has sent its body (the server starts reading
    while the client is still writing), and the record holds the whole body."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]"
    up, proxy, db = canned(answer)
    body = json.dumps([ROW]).encode()
    with connect(proxy.url) as s:
        s.sendall(f"POST /predictions/m HTTP/1.1\r\nHost: x\r\nX-Request-Id: slow\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode())
        assert wait_until(lambda: len(up.head_seen_at) == 1, timeout_s=5)
        time.sleep(0.2)
        body_sent_at = time.monotonic()
        s.sendall(body[:20])
        time.sleep(0.1)
        s.sendall(body[20:])
        rest = recv_all(s)
    assert rest == answer
    assert up.head_seen_at[0] < body_sent_at
    assert up.requests[0].endswith(body)
    assert wait_until(lambda: db.exists() and len(captures(db)) == 1)
    (c,) = captures(db)
    assert c.request_id == "slow" and c.status is CaptureStatus.OK
    assert c.inputs[0].to_array().tolist() == [pytest.approx(ROW, rel=1e-6)]


def test_an_upstream_that_drops_kept_connections_gets_one_fresh_try(canned):
    """The canned server closes each connection after one answer without saying so: the
    tap's kept connection is dead at the next request, which goes out again on a new one."""
    up, proxy, db = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]")
    with httpx.Client(base_url=proxy.url) as client:
        for i in range(3):
            r = client.post("/predictions/m", content=json.dumps([ROW]).encode(),
                            headers={"X-Request-Id": f"k{i}"})
            assert r.status_code == 200 and r.content == b"[]", r.content
            time.sleep(0.05)  # let the server's close reach the tap's kept connection
    assert len(up.requests) == 3
    assert wait_until(lambda: db.exists() and len(captures(db)) == 3)
    assert sorted(c.request_id for c in captures(db)) == ["k0", "k1", "k2"]
    assert all(c.status is CaptureStatus.OK for c in captures(db))


def test_an_answer_cut_short_reaches_the_client_as_sent_and_is_a_failure(canned):
    """Answer bytes go on as they arrive: when the server dies halfway, the client has what
    the server sent and a closed connection (not a 502 glued after it), and the call is
    recorded as failed."""
    partial = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b'{"outputs": ['
    _, proxy, db = canned(partial)
    got = raw_exchange(proxy.url, "POST", "/v2/models/m/infer", v2_body([ROW]))
    assert got == partial
    assert wait_until(lambda: db.exists() and len(captures(db, failed=True)) == 1)
    (c,) = captures(db, failed=True)
    assert c.status is CaptureStatus.ERROR and "connection lost" in c.error


def test_a_call_still_waiting_when_the_tap_stops_is_cut_and_recorded_as_failed(
        server, procs, tmp_path):
    """Stopping waits a few seconds for calls in flight; one that outlasts that is cut, its
    client's connection closed, and the call recorded as failed, not dropped."""
    import threading

    db = tmp_path / "ws.db"
    proxy = Proc(["tap", "--listen", "127.0.0.1:0", "--upstream", server.url, "--db", str(db),
                  "--timeout", "30"])
    procs.append(proxy)
    body = v2_body([ROW], "late")
    sent, got = threading.Event(), []

    def slow_call() -> None:
        with connect(proxy.url, 20) as s:
            s.sendall(b"POST /v2/models/wine-v1/infer HTTP/1.1\r\nHost: x\r\n"
                      b"X-Test-Delay-S: 12\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            sent.set()
            got.append(recv_all(s))

    caller = threading.Thread(target=slow_call, daemon=True)
    caller.start()
    assert sent.wait(5)
    time.sleep(0.3)
    err = proxy.stop()
    assert proxy.popen.returncode == 0, err
    assert "not recorded" not in err
    caller.join(5)
    assert got == [b""]  # closed, no made-up answer
    (c,) = captures(db)
    assert c.request_id == "late" and c.status is CaptureStatus.ERROR
    assert "tap stopped before the answer" in c.error


def test_if_the_recording_process_dies_calls_still_pass_and_the_loss_is_told(tap, server):
    import psutil

    proxy, _ = tap
    (recorder,) = psutil.Process(proxy.popen.pid).children()
    recorder.kill()
    assert wait_until(lambda: not recorder.is_running()
                      or recorder.status() == psutil.STATUS_ZOMBIE)  # the tap reaps it later
    with httpx.Client(base_url=proxy.url) as client:
        for i in range(3):
            r = client.post("/v2/models/wine-v1/infer", content=v2_body([ROW], f"d{i}"))
            assert r.status_code == 200
    time.sleep(0.2)  # the shipper's clock, so the loss is seen before the stop
    err = proxy.stop()
    assert proxy.popen.returncode == 1
    assert "recording process stopped" in err
    assert "3 forwarded calls were not recorded" in err


def test_calls_the_workspace_refuses_are_told_not_counted_as_recorded(tap, server):
    """Another program holds the workspace's write lock while calls pass: the tap used to
    say "recorded 6 captures" (queued) with none written and exit 0."""
    import sqlite3

    proxy, db = tap
    with httpx.Client(base_url=proxy.url) as client:
        assert client.post("/v2/models/wine-v1/infer",
                           content=v2_body([ROW], "before")).status_code == 200
        assert wait_until(lambda: db.exists() and len(captures(db)) == 1, timeout_s=30)
        holder = sqlite3.connect(db)
        holder.execute("BEGIN IMMEDIATE")
        try:
            for i in range(5):
                assert client.post("/v2/models/wine-v1/infer",
                                   content=v2_body([ROW], f"locked{i}")).status_code == 200
            time.sleep(0.2)  # the shipper's clock
            proxy.popen.send_signal(signal.SIGTERM)
            out, err = proxy.popen.communicate(timeout=90)
        finally:
            holder.rollback()
            holder.close()
    assert proxy.popen.returncode == 1
    assert "recorded 1 captures" in out
    assert "5 forwarded calls were not recorded" in err
    assert len(captures(db)) == 1


def test_bytes_a_server_sends_after_its_answer_do_not_reach_the_client(canned):
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]"
    _, proxy, db = canned(answer + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
    assert raw_exchange(proxy.url, "POST", "/predictions/m", json.dumps([ROW]).encode()) == answer
    assert wait_until(lambda: db.exists() and len(captures(db)) == 1)
