"""Pages an agent (a broken or hostile one) may send: a page that cannot be read is reported
and pulled again, an item that cannot be stored is refused and counted, and nothing stops
the probe. The agent here is a hand-written HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from app.core.bus import Bus
from app.core.domain import Metric, Sample
from probes import EndpointState, ProbeError, open_probe
from probes.agent import SEQ_METRIC
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)


class FakeAgent:
    """Answers ``/v1/items`` from ``pages`` (raw bodies, one per pull; the last one repeats
    once they run out) and ``/v1/info`` with a fixed document."""

    def __init__(self) -> None:
        self.pages: list[bytes] = []
        self.trickle = threading.Event()  # set: answer pages one byte every 0.2 s, head first
        self.released = threading.Event()
        self.pulls: list[str] = []
        self.info: dict = {"agent": "probescope", "sources": ["x"]}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                if self.path.startswith("/v1/info"):
                    body = json.dumps(owner.info).encode()
                else:
                    owner.pulls.append(self.path)
                    body = owner.pages.pop(0) if len(owner.pages) > 1 else owner.pages[0]
                    if owner.trickle.is_set():
                        self._trickle(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"
                                      % (len(body), body))
                        return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _trickle(self, answer: bytes) -> None:
                self.close_connection = True
                try:
                    for i in range(len(answer)):
                        self.wfile.write(answer[i:i + 1])
                        self.wfile.flush()
                        if owner.released.wait(0.2):
                            return
                except OSError:
                    pass  # the probe gave up: what it should do

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.uri = f"agent+http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def agent(monkeypatch) -> Iterator[FakeAgent]:
    monkeypatch.setenv("PROBESCOPE_AGENT_TOKEN", "t" * 32)
    a = FakeAgent()
    yield a
    a.close()


def page(first: int, samples: list[list], captures: list[dict] | None = None,
         **override: object) -> bytes:
    last = max([first - 1] + [row[0] for row in samples if isinstance(row[0], int)]
               + [c["seq"] for c in captures or []])
    doc = {"agent_id": "a", "first_seq": first, "last_seq": last, "next_seq": last,
           "samples": samples, "captures": captures or []}
    doc.update(override)
    return json.dumps(doc).encode()


NOW = time.time_ns()


@pytest.mark.parametrize("body", [
    page(1, [[1, NOW, "latency_ms", 1.0]]).replace(b'"next_seq": 1', b'"next_seq": Infinity'),
    page(1, [[1, NOW, "latency_ms", 1.0]], next_seq=2**70),
    b"[" * 100000 + b"]" * 100000,
    b'{"samples": ' + b"[" * 100000 + b"]" * 100000 + b"}",
], ids=["next-seq-infinity", "next-seq-past-int64", "deep", "deep-samples"])
def test_a_page_that_cannot_be_read_is_a_probe_error(agent, body):
    agent.pages = [body]
    probe = open_probe(agent.uri, Bus())
    with httpx.Client(base_url=probe.base_url) as client, \
            pytest.raises(ProbeError, match="sent a page that cannot be read"):
        probe.pull_once(client)


def test_items_with_timestamps_outside_int64_epoch_ns_are_refused_and_counted(agent):
    good = [[1, NOW, "latency_ms", 1.0], [4, NOW + 1, "latency_ms", 4.0]]
    bad = [[2, 2**70, "latency_ms", 2.0], [3, -5, "latency_ms", 3.0]]
    bad_capture = {"seq": 5, "ts_ns": 2**63, "latency_ms": 1.0, "status": "ok"}
    agent.pages = [page(1, good + bad, [bad_capture])]
    bus = Bus()
    probe = open_probe(agent.uri, bus)
    with httpx.Client(base_url=probe.base_url) as client:
        assert probe.pull_once(client) is False
    items, _ = bus.drain()
    samples = [i for i in items if isinstance(i, Sample)]
    assert all(0 <= s.ts_ns < 2**63 for s in samples)
    assert [s.value for s in samples if s.metric == "latency_ms"] == [1.0, 4.0]
    assert [s.value for s in samples if s.metric == Metric.DROPPED] == [3.0]
    assert [s.value for s in samples if s.metric == SEQ_METRIC] == [5.0]
    assert probe.cursor == 5 and probe.refused == 3  # not pulled again: counted once
    assert "3 items that cannot be read" in probe.last_error
    assert "2**63" in probe.last_error


def test_a_bad_page_is_reported_and_pulling_goes_on(agent, caplog):
    broken = page(1, [[1, NOW, "latency_ms", 1.0]]).replace(b'"next_seq": 1',
                                                            b'"next_seq": Infinity')
    agent.pages = [broken, broken, page(1, [[1, NOW, "latency_ms", 1.0]])]
    probe = open_probe(agent.uri + "?interval=0.05", Bus())
    probe.start()
    try:
        assert wait_until(lambda: probe.pulled >= 1, timeout_s=30), \
            "the probe stopped on a bad page"
        assert probe.alive and probe.state is EndpointState.UP
    finally:
        probe.stop()
    assert probe.errors == 2 and len(agent.pulls) >= 3
    assert "sent a page that cannot be read" in caplog.text


def test_an_agent_trickling_its_answer_is_given_up_on_at_timeout_s(agent):
    """httpx's timeouts are per read: an answer sent a byte every 0.2 s, head included,
    never trips them, and held the pulling thread (and closing the dashboard) for good."""
    agent.pages = [page(1, [[1, NOW, "latency_ms", 1.0]])]
    agent.trickle.set()
    probe = open_probe(agent.uri + "?timeout_s=1", Bus())
    errors: list[str] = []

    def pull() -> None:
        with probe.client() as client:
            try:
                probe.pull_once(client)
            except ProbeError as exc:
                errors.append(str(exc))

    worker = threading.Thread(target=pull, daemon=True)
    worker.start()
    worker.join(20)
    agent.released.set()
    assert not worker.is_alive(), "a trickling agent held the probe past its timeout_s"
    assert errors == [f"agent at {probe.base_url} did not answer within 1 s"]


def test_an_agent_whose_clock_is_off_is_said_once_and_shown(agent, caplog):
    """An edge box that booted without a clock source: its samples land an hour back, out of
    the live view, and the dashboard said nothing (0 requests, exit 0)."""
    agent.info = {"agent": "probescope", "sources": ["x"],
                  "now_ns": time.time_ns() - 3600 * 10**9}
    agent.pages = [page(1, [[1, NOW - 3600 * 10**9, "latency_ms", 1.0]])]
    probe = open_probe(agent.uri, Bus())
    with httpx.Client(base_url=probe.base_url) as client:
        for _ in range(3):
            probe.pull_once(client)
    assert probe.state is EndpointState.DEGRADED
    assert probe.last_error.startswith("the agent's clock is 3,600 s behind this machine's")
    assert probe.info()["agent clock"].startswith("-3600.")
    said = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
    assert len(said) == 1  # once, not at every pull
    agent.info["now_ns"] = time.time_ns()  # the clock set right: nothing more to say
    probe._next_info_s = 0.0  # read /v1/info again now rather than in 10 s
    with httpx.Client(base_url=probe.base_url) as client:
        probe.pull_once(client)
    assert probe.state is EndpointState.UP and probe.last_error is None
