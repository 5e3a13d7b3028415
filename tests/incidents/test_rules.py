"""Incident rules on synthetic series in a real workspace: each rule opens, hysteresis keeps a
flapping metric to one incident, incidents clear, overrides apply, history judged twice is not
counted twice."""

from __future__ import annotations

import pytest

from app.core.domain import Metric
from app.core.incident_rules import IncidentError, RuleConfig
from app.core.incidents import Status, evaluate_range
from app.core.store import Store
from tests.incidents.conftest import NS, T0, write_requests, write_series

EP = "onnx:model.onnx"


@pytest.fixture
def store(workspace):
    s = Store(workspace)
    s.endpoint_id(EP, "onnx")
    s.set_endpoint_info(EP, slo_ms=5.0)
    yield s
    s.close()


def judge(store: Store, end_s: float, **rules) -> list:
    return evaluate_range(store, T0, T0 + int(end_s * NS), step_s=5.0,
                          defaults=RuleConfig(**rules))


def test_slow_requests_open_one_latency_incident_that_clears_after_recovery(store):
    write_requests(store, EP, 0, 60, latency_ms=1.0)
    write_requests(store, EP, 60, 120, latency_ms=12.0)
    write_requests(store, EP, 120, 300, latency_ms=1.0)
    events = judge(store, 300, disabled=("down",))
    assert [(e.kind, e.rule) for e in events] == [("opened", "latency"), ("cleared", "latency")]
    [incident] = store.incidents()
    assert incident["rule"] == "latency" and incident["severity"] == "critical"
    # Opened once p95 of the 30 s window passed 5 ms, confirmed on the next evaluation.
    assert T0 + 60 * NS < incident["opened_ns"] < T0 + 75 * NS
    assert incident["trigger_ns"] == incident["opened_ns"] + 5 * NS
    # Clear once the window holds only fast requests again (t >= 150 s) and then 30 s more.
    assert T0 + 120 * NS <= incident["cleared_ns"] <= T0 + 155 * NS
    assert incident["status"] == Status.RESOLVED
    notes = [n["text"] for n in store.incident_notes(incident["id"])]
    assert notes[0].startswith("Opened: p95 12.00 ms") and notes[-1].startswith("Cleared")


def test_a_metric_in_the_hysteresis_band_keeps_its_incident_open(store):
    write_requests(store, EP, 0, 60, latency_ms=12.0)
    # 4.5 ms: under the 5 ms SLO but above the closing line (0.8 x 5 ms = 4 ms).
    write_requests(store, EP, 60, 240, latency_ms=4.5)
    judge(store, 240, disabled=("down",))
    [incident] = store.incidents()
    assert incident["cleared_ns"] is None and incident["status"] == Status.OPEN


def test_a_flapping_error_rate_opens_one_incident_not_one_per_flap(store):
    # Ten bursts of 40 s at 40 % failures, each followed by 100 s healthy: long enough to clear
    # (30 s window + 30 s below the closing line), short enough to count as the same trouble.
    for k in range(10):
        write_requests(store, EP, k * 140, k * 140 + 40, failure_share=0.4)
        write_requests(store, EP, k * 140 + 40, k * 140 + 140)
    events = judge(store, 1400, disabled=("down",))
    assert [e.kind for e in events].count("opened") == 1
    assert [e.kind for e in events].count("reopened") == 9
    [incident] = store.incidents()
    assert incident["rule"] == "error_rate"
    assert incident["value"] == pytest.approx(0.4, abs=0.01)
    texts = [n["text"] for n in store.incident_notes(incident["id"])]
    assert sum(t.startswith("Reopened") for t in texts) == 9


def test_without_the_reopen_window_each_flap_is_its_own_incident(store):
    # The same traffic with reopening switched off shows what the hysteresis is saving.
    for k in range(4):
        write_requests(store, EP, k * 80, k * 80 + 40, failure_share=0.4)
        write_requests(store, EP, k * 80 + 40, k * 80 + 80)
    judge(store, 320, disabled=("down",), reopen_within_s=0.0, close_after_s=5.0)
    assert len(store.incidents()) == 4


def test_a_short_spike_does_not_open_an_incident(store):
    # One evaluation over the threshold is not enough (open_after = 2).
    write_requests(store, EP, 0, 100, failure_share=0.1)
    write_requests(store, EP, 100, 103, rate_hz=100.0, failure_share=1.0)
    write_requests(store, EP, 103, 200, failure_share=0.1)
    events = judge(store, 200, disabled=("down",), window_s=5.0)
    assert events == [] and store.incidents() == []


def test_memory_growth_opens_and_flat_memory_does_not(store):
    flat = "onnx:flat.onnx"
    write_series(store, EP, Metric.RSS_MB, [(t, 200 + t * 0.5) for t in range(0, 300, 2)])
    write_series(store, flat, Metric.RSS_MB, [(t, 200 + (t % 7) * 0.1) for t in range(0, 300, 2)])
    events = judge(store, 300, disabled=("down",))
    assert [(e.endpoint, e.rule, e.kind) for e in events] == [(EP, "memory", "opened")]
    [incident] = store.incidents()
    assert incident["value"] == pytest.approx(30.0, rel=0.05)  # 0.5 MB/s = 30 MB/min


def test_memory_that_steps_up_once_and_stays_is_not_a_leak(store):
    # Start-up: +250 MB in the first 20 s, flat after. Over the first two to three minutes the
    # fitted slope is well above 20 MB/min; the later half of each window is flat.
    write_series(store, EP, Metric.RSS_MB,
                 [(t, 200 + min(t, 20) * 12.5) for t in range(0, 320, 2)])
    assert judge(store, 320, disabled=("down",)) == []


def test_an_endpoint_that_stops_reporting_is_down_until_it_reports_again(store):
    write_requests(store, EP, 0, 60)
    write_requests(store, EP, 120, 200)
    events = judge(store, 200)
    assert [(e.rule, e.kind) for e in events] == [("down", "opened"), ("down", "cleared")]
    [incident] = store.incidents()
    assert incident["severity"] == "critical"
    # The outage began at the last request (59.9 s); the rule could tell 15 s later.
    assert incident["opened_ns"] == T0 + int(59.9 * NS)
    assert T0 + 75 * NS <= incident["trigger_ns"] <= T0 + 80 * NS
    assert T0 + 120 * NS <= incident["cleared_ns"] <= T0 + 125 * NS


def test_drift_share_opens_a_drift_incident(store):
    for t in range(0, 120, 5):
        share = 0.2 if t < 50 else 0.75
        store.write_drift_evaluation(
            EP, T0 + t * NS, source="fast", rows_reference=500, rows_current=500,
            share_drifted=share, points=[("alcohol", "ks", 0.001, 0.05, share > 0.5)])
    events = judge(store, 120, disabled=("down",))
    assert [(e.rule, e.kind) for e in events] == [("drift", "opened")]
    assert store.incidents()[0]["value"] == pytest.approx(0.75)


def test_per_endpoint_overrides_change_the_rules(store):
    write_requests(store, EP, 0, 120, failure_share=0.25)
    store.set_incident_rules(EP, {"error_rate": 0.5})
    assert judge(store, 120, disabled=("down",)) == []
    store.set_incident_rules(EP, {"error_rate": "0.2"})
    assert [e.rule for e in judge(store, 120, disabled=("down",))] == ["error_rate"]


def test_unknown_settings_are_refused_with_the_known_ones_named():
    with pytest.raises(IncidentError, match=r"unknown incident setting.*error_rte"):
        RuleConfig().merged({"error_rte": 0.2})
    with pytest.raises(IncidentError, match=r"unknown rule.*latncy"):
        RuleConfig().merged({"disabled": ["latncy"]})
    with pytest.raises(IncidentError, match="not a float"):
        RuleConfig().merged({"window_s": "soon"})


def test_judging_the_same_history_twice_does_not_duplicate_incidents(store):
    write_requests(store, EP, 0, 60)
    write_requests(store, EP, 60, 200, failure_share=0.25)
    first = judge(store, 200, disabled=("down",))
    again = judge(store, 200, disabled=("down",))
    assert [e.kind for e in first] == ["opened"] and again == []
    assert len(store.incidents()) == 1
