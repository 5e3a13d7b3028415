"""What a client may hold of the tap, shown the way the audit broke it: running the tap out of
file descriptors (it stopped accepting for good), clients that send slowly or not at all
(held forever), bodies of any size (held whole in memory), malformed heads (a traceback and
no answer). Real sockets on 127.0.0.1; the tap's proxy in this process, or ``probescope tap``
as a process under a low descriptor limit."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.core.tap_decode import Exchange
from app.core.tap_proxy import ClientLimits, ProxyServer, ProxySettings
from tests.agent.conftest import Proc
from tests.agent.test_tap_audit_fixes import RawUpstream, ok_answer, recv_answers
from tests.helpers import until_closed, wait_until

pytestmark = pytest.mark.timeout(120)

V2 = "/v2/models/m/infer"
BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2],
                               "data": [1.0, 2.0]}]}).encode()
Address = tuple[str, int]


@pytest.fixture
def limited_tap() -> Iterator[Callable[..., tuple[Address, list[Exchange], ProxyServer]]]:
    """The tap's proxy in this process, in front of an upstream port, with these limits."""
    servers: list[ProxyServer] = []

    def make(port: int, limits: ClientLimits) -> tuple[Address, list[Exchange], ProxyServer]:
        got: list[Exchange] = []
        server = ProxyServer("127.0.0.1", 0, ProxySettings(
            "127.0.0.1", port, None, 30.0, 1 << 20, got.append, limits))
        server.start()
        servers.append(server)
        return server.address, got, server

    yield make
    for server in servers:
        server.close(grace_s=1)


def head(extra: str = "", method: str = "POST") -> bytes:
    return f"{method} {V2} HTTP/1.1\r\nHost: tap\r\n{extra}".encode()


def test_silent_slow_and_idle_clients_are_cut_at_their_deadlines(limited_tap, caplog):
    up = RawUpstream(ok_answer)
    addr, _, _ = limited_tap(up.port, ClientLimits(client_timeout_s=0.5, idle_timeout_s=0.4))
    t0 = time.monotonic()
    silent, half, promised = (socket.create_connection(addr) for _ in range(3))
    half.sendall(head())  # the head never ends
    promised.sendall(head("Content-Length: 100\r\n\r\n") + b'{"inputs"')  # nor the body
    answer, at_s = until_closed(silent, 3.0, t0)
    assert answer == b"" and 0.4 <= at_s < 1.5  # closed quietly, as an idle one
    answer, at_s = until_closed(half, 3.0, t0)
    assert answer.startswith(b"HTTP/1.1 408 ") and at_s < 1.5
    answer, at_s = until_closed(promised, 3.0, t0)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"body" in answer and at_s < 2.0
    assert up.bodies == []  # the upstream connection that had the head was dropped too

    # A head trickled a byte every 0.1 s: each read gets a byte, yet it is cut at 0.5 s.
    trickle = socket.create_connection(addr)
    trickle.sendall(head())
    t0 = time.monotonic()
    trickle.settimeout(0.1)
    answer = b""
    while time.monotonic() - t0 < 4.0:
        try:
            trickle.sendall(b"X")
            answer = trickle.recv(100)
            break
        except TimeoutError:
            continue
        except OSError:
            break
    assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - t0 < 1.2
    assert "did not send its request" in caplog.text  # once: the others are counted

    # Between requests a kept-alive connection may wait idle_timeout_s.
    kept = socket.create_connection(addr, timeout=5)
    kept.sendall(head(f"Content-Length: {len(BODY)}\r\n\r\n") + BODY)
    assert recv_answers(kept, 1)[0].startswith(b"HTTP/1.1 200 ")
    answer, idle_s = until_closed(kept, 3.0)
    assert answer == b"" and 0.3 <= idle_s < 1.2


def test_a_body_over_the_limit_is_answered_413_and_never_forwarded(limited_tap):
    up = RawUpstream(ok_answer)
    addr, got, _ = limited_tap(up.port, ClientLimits(max_body_bytes=1000))
    declared = socket.create_connection(addr)
    declared.sendall(head("Content-Length: 5000\r\n\r\n"))  # not a byte of it sent
    answer, _ = until_closed(declared, 3.0)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"--max-body-bytes" in answer
    # A chunked body is refused as soon as it passes the limit, without waiting for its end.
    chunked = socket.create_connection(addr)
    chunk = b"258\r\n" + b"x" * 600 + b"\r\n"
    chunked.sendall(head("Transfer-Encoding: chunked\r\n\r\n") + chunk + chunk)
    answer, _ = until_closed(chunked, 3.0)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert up.bodies == [] and got == []
    # At the limit, a body goes through as before.
    sent = httpx.post(f"http://{addr[0]}:{addr[1]}{V2}", content=b"x" * 1000, timeout=5)
    assert sent.status_code == 200 and up.bodies == [b"x" * 1000]


def test_malformed_heads_get_431_or_400_one_log_line_and_no_traceback(limited_tap, caplog,
                                                                      monkeypatch):
    crashed: list[object] = []
    monkeypatch.setattr(threading, "excepthook", crashed.append)
    caplog.set_level(logging.WARNING, logger="app.core.tap_proxy")
    up = RawUpstream(ok_answer)
    addr, _, server = limited_tap(up.port, ClientLimits())
    big = head("X-Big: " + "a" * 70_000 + "\r\n\r\n", method="GET")
    whole = socket.create_connection(addr)
    whole.sendall(big)  # all of it at once: the size was checked only while its end was due
    answer, _ = until_closed(whole, 3.0)
    assert answer.startswith(b"HTTP/1.1 431 ")
    pieces = socket.create_connection(addr)
    for i in range(0, len(big), 4096):
        pieces.sendall(big[i:i + 4096])
    answer, _ = until_closed(pieces, 3.0)
    assert answer.startswith(b"HTTP/1.1 431 ")
    no_colon = socket.create_connection(addr)
    no_colon.sendall(head("a line with no colon\r\n\r\n", method="GET"))
    answer, _ = until_closed(no_colon, 3.0)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"bad header line" in answer
    assert up.bodies == [] and crashed == []
    refused = [r for r in caplog.records if "tap refused a request" in r.getMessage()]
    assert len(refused) == 1  # the others are counted, and said at the stop:
    server.close(grace_s=1)
    refused = [r.getMessage() for r in caplog.records if "tap refused" in r.getMessage()]
    assert len(refused) == 2 and "1 more of this kind" in refused[1]


def test_at_its_connection_limit_the_tap_makes_the_next_client_wait_not_fail(limited_tap):
    up = RawUpstream(ok_answer)
    addr, _, _ = limited_tap(up.port, ClientLimits(max_connections=2, client_timeout_s=30))
    held = [socket.create_connection(addr) for _ in range(2)]
    result: list[int] = []
    url = f"http://{addr[0]}:{addr[1]}{V2}"
    caller = threading.Thread(target=lambda: result.append(
        httpx.post(url, content=BODY, timeout=10).status_code))
    caller.start()
    caller.join(0.5)
    assert result == []  # waiting in the listen queue
    held[0].close()
    caller.join(5)
    assert result == [200]


def test_the_tap_accepts_again_after_running_out_of_file_descriptors(tmp_path: Path, procs):
    up = RawUpstream(ok_answer)
    # 40 descriptors: the tap uses about 11, so the flood runs it out; the old one's accept
    # thread then ended for good, and the tap ran on accepting nobody.
    tap = Proc(["tap", "--listen", "127.0.0.1:0", "--upstream", f"http://127.0.0.1:{up.port}",
                "--db", str(tmp_path / "ws.db"), "--client-timeout", "1",
                "--max-body-bytes", "100"], nofile=40)
    procs.append(tap)
    url = tap.url + V2
    assert httpx.post(url, content=BODY, timeout=5).status_code == 200
    host, port = tap.url.removeprefix("http://").split(":")
    flood = [socket.create_connection((host, int(port)), timeout=5) for _ in range(60)]
    time.sleep(0.3)
    for sock in flood:
        sock.close()
    assert wait_until(lambda: httpx.post(url, content=BODY, timeout=5).status_code == 200, 10)
    assert httpx.post(url, content=b"x" * 101, timeout=5).status_code == 413  # the option
    err = tap.stop()
    assert "cannot accept a connection: Too many open files" in err
    assert err.count("cannot accept a connection") <= 2  # once, then counted
    assert "Traceback" not in err


def test_a_call_cut_by_the_taps_stop_ends_as_a_failed_call_not_an_internal_error():
    """The tap's stop closes a session from another thread while the session's own thread
    may be sending upstream: the send then fails as the call's failure (recorded as cut by
    the stop), and no fresh upstream connection is opened and left behind."""
    from app.core.tap_session import ClientSession
    from app.core.tap_upstream import UpstreamFailed

    upstream = RawUpstream(ok_answer)
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname())
    client, _ = listener.accept()
    session = ClientSession(client, ProxySettings("127.0.0.1", upstream.port, None, 30.0,
                                                  1 << 20, lambda exchange: None))
    try:
        session.upstream.send(head(), last=False)  # the head is upstream; the body follows
        session.close()  # the tap stops, from its own thread
        with pytest.raises(UpstreamFailed, match="the tap stopped before the answer came"):
            session.upstream.send_part(b"[1")
        with pytest.raises(UpstreamFailed, match="the tap stopped before the answer came"):
            session.upstream.send(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", last=True)
        assert session.upstream.sock is None  # nothing opened after the stop
    finally:
        for sock in (peer, listener):
            sock.close()
        upstream.close()
