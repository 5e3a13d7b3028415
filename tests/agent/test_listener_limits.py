"""What a stranger who can reach the agent's port may hold of it: a capped number of
connections, a deadline for a whole request head (a trickle is cut at it), log lines that a
flood cannot multiply, probes that outlive running out of file descriptors, and a JSON answer,
never a traceback, for bad input. Real servers on 127.0.0.1, real sockets."""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import json
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

import probes.base
from app.core.agent import Agent, AgentConfig
from app.core.agent_buffer import AgentBuffer
from app.core.agent_server import AgentHttpServer, ListenLimits, tls_context
from app.core.bus import Bus
from app.core.contract_agent import AgentModel
from app.core.domain import EndpointUri
from probes.base import EndpointState, Probe, ProbeOptions
from tests.agent.conftest import Proc
from tests.agent.test_agent import agent_args
from tests.conftest import DEMO
from tests.helpers import until_closed, wait_until

pytestmark = pytest.mark.timeout(120)

Serve = Callable[..., AgentHttpServer]


@pytest.fixture
def serve(tmp_path: Path, token: str) -> Iterator[Serve]:
    """The agent's HTTP server in this process, over an empty buffer."""
    servers: list[AgentHttpServer] = []

    def make(limits: ListenLimits | None = None, **kwargs: object) -> AgentHttpServer:
        buffer = tmp_path / "buffer.sqlite"
        AgentBuffer(buffer).close()
        server = AgentHttpServer(("127.0.0.1", 0), token=token, buffer_path=buffer,
                                 info={"agent": "probescope", "sources": []}, limits=limits,
                                 **kwargs)  # type: ignore[arg-type]
        server.serve_in_thread()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def url(server: AgentHttpServer, scheme: str = "http") -> str:
    host, port = server.server_address[:2]
    return f"{scheme}://{host}:{port}"


def connect(server: AgentHttpServer) -> socket.socket:
    return socket.create_connection(server.server_address[:2], timeout=5)


def test_connections_over_the_cap_are_answered_503_at_once(serve, token):
    server = serve(ListenLimits(max_connections=2, client_timeout_s=5.0))
    held = [connect(server) for _ in range(2)]  # accepted in order: these take both slots
    for sock in held:
        sock.sendall(b"GET /v1/info HTTP/1.1\r\n")  # and never finish their heads
    third = connect(server)
    answer, took_s = until_closed(third, 3.0)
    assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer
    assert b"limit of connections" in answer and took_s < 1.0
    for sock in held:
        sock.close()
    auth = {"Authorization": f"Bearer {token}"}
    # The slots come back as soon as their connections end.
    assert wait_until(lambda: httpx.get(url(server) + "/v1/info", headers=auth,
                                        timeout=2).status_code == 200, 5)


def test_a_trickled_or_silent_request_is_cut_at_its_deadline_not_kept_alive_by_each_byte(
        serve, token, caplog):
    server = serve(ListenLimits(client_timeout_s=0.6, idle_timeout_s=0.4))
    silent = connect(server)
    trickle = connect(server)
    trickle.sendall(b"GET /v1/info HTTP/1.1\r\n")
    t0 = time.monotonic()
    trickle.settimeout(0.1)
    while time.monotonic() - t0 < 4.0:  # a header byte every 0.1 s: each read gets one
        try:
            trickle.sendall(b"X")
            if trickle.recv(100) == b"":
                break
        except TimeoutError:
            continue
        except OSError:
            break
    assert 0.5 <= time.monotonic() - t0 < 1.5
    assert until_closed(silent, 1.0)[0] == b""  # it too had 0.6 s, now long past
    assert "did not send its request head within its time" in caplog.text

    # Between requests a kept-alive connection waits idle_timeout_s, then is closed quietly.
    kept = connect(server)
    kept.sendall(f"GET /v1/info HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n"
                 .encode())
    answer, took_s = until_closed(kept, 3.0)
    assert answer.startswith(b"HTTP/1.1 200 ") and 0.3 <= took_s < 1.5


def test_refused_tokens_are_logged_once_then_counted_not_line_by_line(serve, caplog):
    caplog.set_level(logging.WARNING, logger="app.core.agent_server")
    server = serve()
    with httpx.Client(base_url=url(server), timeout=5) as client:
        for _ in range(30):
            assert client.get("/v1/info").status_code == 401
    lines = [r.getMessage() for r in caplog.records if "refused a request" in r.getMessage()]
    assert len(lines) == 1
    server.server_close()  # says what it held back, in one line
    lines = [r.getMessage() for r in caplog.records if "refused a request" in r.getMessage()]
    assert len(lines) == 2 and "28 more of this kind" in lines[1]


class _Flaky(Probe):
    """A probe whose first runs end as reading /proc did when the agent was flooded."""

    def __init__(self, errors: list[OSError]) -> None:
        super().__init__(EndpointUri.parse("flaky:x"), Bus(), ProbeOptions())
        self.errors = errors
        self.running = threading.Event()

    def run(self, stop: threading.Event) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.running.set()
        stop.wait()


def test_a_probe_runs_again_after_running_out_of_file_descriptors(monkeypatch, caplog):
    monkeypatch.setattr(probes.base, "TRANSIENT_PAUSE_S", 0.01, raising=False)
    emfile = OSError(errno.EMFILE, "Too many open files", "/proc/1/statm")
    probe = _Flaky([emfile, OSError(errno.EMFILE, "Too many open files"),
                    OSError(errno.ENFILE, "Too many open files in system")])
    probe.start()
    try:
        assert probe.running.wait(5) and probe.alive
        assert probe.transient_errors == 3 and "retrying" in (probe.last_error or "")
        told = [r for r in caplog.records if r.name == "probes.base"]
        assert len(told) == 2 and all(r.levelno == logging.WARNING for r in told)  # by kind
    finally:
        probe.stop()
    # Any other error still ends it, said.
    broken = _Flaky([OSError(errno.ENOENT, "No such file or directory")])
    broken.start()
    assert wait_until(lambda: not broken.alive, 5)
    assert broken.state is EndpointState.DOWN and not broken.running.is_set()


def test_the_agents_info_says_when_a_probe_has_stopped(tmp_path, token):
    agent = Agent(AgentConfig(token=token, buffer_path=tmp_path / "agent.sqlite", port=0,
                              model=DEMO / "wine-v1.onnx", system_rate_hz=20))
    system = agent.probes[1]

    def broken() -> list:
        raise RuntimeError("psutil broke")

    system.measure_once = broken  # type: ignore[method-assign]
    agent.start()
    try:
        auth = {"Authorization": f"Bearer {token}"}
        assert wait_until(lambda: not system.alive, 5)
        info = httpx.get(agent.url + "/v1/info", headers=auth, timeout=5).json()
        by_endpoint = {p["endpoint"]: p for p in info["probes"]}
        assert by_endpoint[system.endpoint]["running"] is False
        assert by_endpoint[system.endpoint]["state"] == "down"
        assert "psutil broke" in by_endpoint[system.endpoint]["last_error"]
        assert by_endpoint[agent.probes[0].endpoint]["running"] is True
    finally:
        agent.close()


def test_a_connection_flood_under_a_low_descriptor_limit_stops_nothing(tmp_path, token_file,
                                                                       token, procs):
    # 48 descriptors: the agent uses about 12; the old one ran out at 36 connections, and
    # its probes stopped for good on reading /proc.
    agent = Proc(agent_args(tmp_path, token_file, 0, "--max-connections", "8",
                            "--client-timeout", "1"), nofile=48)
    procs.append(agent)
    auth = {"Authorization": f"Bearer {token}"}

    def last_seq() -> int:
        return httpx.get(f"{agent.url}/v1/info", headers=auth, timeout=5).json()["last_seq"]

    assert wait_until(lambda: last_seq() > 0, 30)
    host, port = agent.url.removeprefix("http://").split(":")
    flood = []
    for _ in range(120):
        sock = socket.create_connection((host, int(port)), timeout=5)
        with contextlib.suppress(OSError):  # one refused at once may be closed already
            sock.sendall(b"GET / HTTP/1.1\r\n")  # no token, and the head is never finished
        flood.append(sock)
    time.sleep(1.5)  # past --client-timeout: the flood's own connections have been cut
    before = last_seq()
    assert wait_until(lambda: last_seq() > before, 5)  # the probes still record
    for sock in flood:
        sock.close()
    info = httpx.get(f"{agent.url}/v1/info", headers=auth, timeout=5).json()
    assert all(p["running"] for p in info["probes"])
    err = agent.stop()
    assert "Traceback" not in err and "stopped on an unexpected error" not in err
    assert "Too many open files" not in err
    assert err.count("limit of 8 connections") <= 2  # said once, then counted


def test_bad_requests_get_json_errors_not_tracebacks(serve, token, capfd):
    model = AgentModel(DEMO / "wine-v1.onnx", "wine-v1", "f" * 64)
    server = serve(model=model)
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url(server), headers=auth, timeout=10) as client:
        past = client.get("/v1/items", params={"after": 10**20})
        assert past.status_code == 400 and "sequence number" in past.json()["error"]
        # A .npy header claiming 1.3e12 float64 values (10 TB) in a body of 100 bytes: it
        # is refused from the header, before anything is allocated.
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f8", "fortran_order": False, "shape": (1_300_000, 1_000_000)})
        features = base64.b64encode(header.getvalue() + b"\0" * 16).decode()
        huge = client.post("/v1/contract", json={
            "sha256": "f" * 64, "runs": 1, "validation": {"features": features, "labels": []}})
        assert huge.status_code == 400
        assert "declares 10,400,000,000,000 bytes" in huge.json()["error"]
        assert client.get("/v1/info").status_code == 200  # and the agent serves on
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_plain_http_to_a_tls_agent_is_closed_quietly(serve, token, tmp_path, capfd, caplog):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = serve(tls=tls_context(cert, key))
    for _ in range(3):
        with pytest.raises(httpx.TransportError):
            httpx.get(url(server) + "/v1/info", timeout=5)
    answer = httpx.get(url(server, "https") + "/v1/info", timeout=5,
                       verify=ssl.create_default_context(cafile=str(cert)),
                       headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and json.loads(answer.text)["agent"] == "probescope"
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_token_put_in_the_url_is_not_logged_even_with_debug(serve, token, caplog):
    server = serve()
    host, port = server.server_address[:2]
    with caplog.at_level("DEBUG", logger="app.core.agent_server"):
        answer = httpx.get(f"http://{host}:{port}/v1/info", params={"token": token}, timeout=5)
        assert answer.status_code == 401  # a token goes in the Authorization header only
        assert wait_until(lambda: any("/v1/info" in r.getMessage() for r in caplog.records), 5)
    lines = [r.getMessage() for r in caplog.records]
    assert not any(token in line for line in lines), lines
    assert any('"GET /v1/info?… HTTP/1.1" 401' in line for line in lines), lines
