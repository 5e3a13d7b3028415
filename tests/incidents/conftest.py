"""Incident fixtures: a workspace with a real demo incident (real probes, recorder, drift and
incident monitors), and a helper that writes synthetic series into a real store."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from app.core.demo import demo_endpoints
from app.core.domain import Metric, Sample
from app.core.drift_monitor import DriftMonitor
from app.core.incidents import IncidentMonitor, RuleConfig
from app.core.monitor import Monitor
from app.core.references import demo_reference, set_reference
from app.core.store import Store
from tests.helpers import wait_until

NS = 1_000_000_000
T0 = 1_700_000_000 * NS  # synthetic series start here


def write_series(store: Store, endpoint: str, metric: str,
                 points: Iterable[tuple[float, float]]) -> None:
    """(seconds after T0, value) points as samples of one series."""
    store.write_batch([Sample(endpoint, T0 + int(t * NS), metric, v) for t, v in points], [])


def write_requests(store: Store, endpoint: str, start_s: float, end_s: float, *,
                   rate_hz: float = 10.0, latency_ms: float = 1.0,
                   failure_share: float = 0.0) -> None:
    """Requests at a steady rate; failures spread evenly so that the share is exact."""
    n = int((end_s - start_s) * rate_hz)
    samples = []
    for i in range(n):
        ts = T0 + int((start_s + i / rate_hz) * NS)
        samples.append(Sample(endpoint, ts, Metric.LATENCY_MS, latency_ms))
        if int((i + 1) * failure_share) > int(i * failure_share):
            samples.append(Sample(endpoint, ts, Metric.FAILURE, 1.0))
    store.write_batch(samples, [])


@pytest.fixture(scope="session")
def demo_incident_db(tmp_path_factory) -> tuple[Path, int]:
    """The demo at four times its rate with a 10 s rules window, until the error-rate burst
    opens an incident by itself; drift evaluated live as in the window. (workspace, id)."""
    db = tmp_path_factory.mktemp("demo-incident") / "demo.db"
    monitor = Monitor(db)
    drift_watch = DriftMonitor(db, interval_s=1.0, window_rows=300, min_rows=50)
    incidents = IncidentMonitor(db, defaults=RuleConfig(window_s=10.0), interval_s=1.0)
    opened = []
    incidents.subscribe(lambda e: opened.append(e) if e.kind == "opened" else None)
    monitor.subscribe(drift_watch)
    monitor.subscribe(incidents)
    try:
        production = monitor.attach(demo_endpoints(rate_scale=4.0)[0], start=False)
        store = Store(db)
        set_reference(store, production.endpoint, demo_reference())
        store.close()
        drift_watch.start()
        incidents.start()
        monitor.start()
        production.start()
        assert wait_until(lambda: bool(opened), timeout_s=90), "the demo opened no incident"
        # Some more traffic after the opening, so the report shows the incident under way.
        committed = monitor.stats().committed_samples
        wait_until(lambda: monitor.stats().committed_samples > committed + 800, timeout_s=30)
    finally:
        monitor.close()
        incidents.close()
        drift_watch.close()
    return db, opened[0].incident_id


@pytest.fixture
def demo_incident(demo_incident_db, tmp_path) -> tuple[Path, int]:
    """A private copy of the demo workspace for tests that change it."""
    db, incident_id = demo_incident_db
    copy = tmp_path / "demo.db"
    src = Store(db)
    src.backup_to(copy)
    src.close()
    return copy, incident_id

