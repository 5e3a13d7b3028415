"""Incidents judged live: the monitor listens to a real recorder, judges on its own thread and
connection, and the demo opens an incident by itself."""

from __future__ import annotations

import json
import time

import pytest

from app.cli import main
from app.core.bus import Bus
from app.core.domain import Metric, Sample
from app.core.incidents import IncidentEvent, IncidentMonitor, RuleConfig
from app.core.recorder import Recorder
from app.core.store import Store
from tests.helpers import wait_until

EP = "onnx:live.onnx"
RULES = RuleConfig(window_s=5.0, min_requests=5, min_failures=3)


@pytest.fixture
def live(workspace):
    bus = Bus()
    recorder = Recorder(bus, lambda: Store(workspace))
    events: list[IncidentEvent] = []
    states: dict[str, str] = {EP: "up"}  # what Monitor.probes would say: attached, answering
    # Evaluations only on request, so the test decides when the rules look.
    monitor = IncidentMonitor(workspace, defaults=RULES, interval_s=3600, states=lambda: states)
    monitor.subscribe(events.append)
    recorder.subscribe(monitor)
    recorder.start()
    monitor.start()
    yield bus, recorder, monitor, events, states
    recorder.stop()
    monitor.close()


def _traffic(bus: Bus, failures: int) -> None:
    now = time.time_ns()
    for i in range(40):
        ts = now - 2_000_000_000 + i * 50_000_000
        bus.put(Sample(EP, ts, Metric.LATENCY_MS, 1.0))
        if i < failures:
            bus.put(Sample(EP, ts, Metric.FAILURE, 1.0))


def test_a_failure_burst_on_the_recorder_opens_an_incident_on_the_second_look(live, workspace):
    bus, recorder, monitor, events, _ = live
    _traffic(bus, failures=20)
    assert wait_until(lambda: recorder.stats().committed_samples >= 60)
    assert wait_until(lambda: bool(monitor._last_seen))  # the listener saw the batch
    assert monitor.evaluate_soon().wait(10)
    assert events == []  # one tripped evaluation is not enough
    assert monitor.evaluate_soon().wait(10)
    assert [(e.kind, e.rule, e.endpoint) for e in events] == [("opened", "error_rate", EP)]
    store = Store(workspace, readonly=True)
    try:
        [incident] = store.incidents()
    finally:
        store.close()
    assert incident["value"] == pytest.approx(0.5) and incident["status"] == "open"
    assert monitor.opened == 1 and monitor.last_error is None


def test_a_probe_that_says_down_opens_a_down_incident(live):
    bus, _, monitor, events, states = live
    _traffic(bus, failures=0)
    assert wait_until(lambda: bool(monitor._last_seen))
    states[EP] = "down"
    for _ in range(2):
        assert monitor.evaluate_soon().wait(10)
    assert [(e.kind, e.rule) for e in events] == [("opened", "down")]


def test_the_demo_opens_an_incident_by_itself(demo_incident_db):
    db, incident_id = demo_incident_db
    store = Store(db, readonly=True)
    try:
        incident = store.incident(incident_id)
        endpoint = incident["endpoint"]
        first = store.time_range(endpoint, Metric.LATENCY_MS)[0]
    finally:
        store.close()
    # The drifted rows start a third of the way through the stream: mismatches burst.
    assert incident["rule"] == "error_rate" and "wine-v1" in endpoint
    assert incident["trigger_ns"] - first < 120 * 1_000_000_000 / 4  # the demo ran 4x fast


@pytest.mark.slow
def test_probescope_demo_opens_an_incident_within_two_minutes(workspace, capsys):
    assert main(["demo", "--db", str(workspace), "--seconds", "100", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["incidents_opened"] >= 1


def test_paused_or_detached_endpoints_are_not_down(live):
    bus, _, monitor, events, states = live
    _traffic(bus, failures=0)
    assert wait_until(lambda: bool(monitor._last_seen))
    states[EP] = "paused"
    for _ in range(3):
        assert monitor.evaluate_soon().wait(10)
    del states[EP]  # detached
    for _ in range(3):
        assert monitor.evaluate_soon().wait(10)
    assert events == []
