"""Live drift as the window shows it: a real ONNX probe, the recorder, the drift monitor on its
own thread and the workspace; the demo's injected drift is found and named."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from app.core.demo import demo_endpoints
from app.core.drift import drift
from app.core.drift_history import drift_matrix, latest_table, share_series
from app.core.drift_monitor import DriftMonitor, DriftUpdate
from app.core.monitor import Monitor
from app.core.references import demo_reference, set_reference
from app.core.store import Store
from tests.helpers import wait_until


def _start(db: Path, uri: str, **drift_options) -> tuple[Monitor, DriftMonitor, str,
                                                          list[DriftUpdate]]:
    monitor = Monitor(db)
    watcher = DriftMonitor(db, **drift_options)
    updates: list[DriftUpdate] = []
    watcher.subscribe(updates.append)
    monitor.subscribe(watcher)
    probe = monitor.attach(uri, start=False)
    store = Store(db)
    set_reference(store, probe.endpoint, demo_reference())
    store.close()
    watcher.start()
    monitor.start()
    probe.start()
    return monitor, watcher, probe.endpoint, updates


def test_a_window_of_drifted_traffic_names_alcohol_and_color_intensity(
        tmp_path, demo_dir, demo_model):
    # The demo's drifted stretch as the payload, looped: once 500 captures are in, the window
    # holds exactly those rows, so the live verdicts must match the same rows read from file.
    production = pd.read_csv(demo_dir / "production.csv")
    drifted = production.iloc[1500:2000]
    payload = tmp_path / "drifted.csv"
    drifted.to_csv(payload, index=False)
    db = tmp_path / "ws.db"
    monitor, watcher, endpoint, updates = _start(
        db, f"onnx:{demo_model}?provider=cpu&payload={payload}&rate=0",
        window_rows=500, interval_s=0.2)
    reader = Store(db)
    try:
        assert wait_until(lambda: reader.count_captures(endpoint) >= 600, timeout_s=30)
    finally:
        monitor.close()
    assert watcher.evaluate_soon().wait(10)
    watcher.close()

    last = updates[-1].result
    assert last.rows_current == 500
    expected = drift(pd.read_csv(demo_dir / "reference.csv"), drifted)
    features = [c.name for c in expected.columns if c.name != "label"]
    assert {n: last.column(n).drifted for n in features} == {
        n: expected.column(n).drifted for n in features}
    assert {"alcohol", "color_intensity"} <= set(last.drifted_columns)
    assert not last.column("prediction").drifted  # baseline: the same rows' predictions

    table = latest_table(reader, endpoint)
    assert {table[0].feature, table[1].feature} == {"alcohol", "color_intensity"}
    matrix = drift_matrix(reader, endpoint)
    assert len(matrix) == len(updates) and "alcohol" in matrix.features
    ts, share = share_series(reader, endpoint)
    assert len(ts) == len(updates) and share[-1] == pytest.approx(last.share_drifted)
    reader.close()


def test_the_demo_stream_shows_its_drift_as_it_happens(tmp_path):
    # The demo's production endpoint at 8x its rate: 3,000 rows in about 8 s instead of a
    # minute; drift ramps in from row 1,000.
    production = demo_endpoints(rate_scale=8.0)[0]
    monitor, watcher, _, updates = _start(tmp_path / "ws.db", production,
                                          window_rows=500, interval_s=0.5)

    def found() -> bool:
        return any({"alcohol", "color_intensity"} <= set(u.result.drifted_columns)
                   for u in list(updates))

    try:
        assert wait_until(found, timeout_s=40)
    finally:
        monitor.close()
        watcher.close()
    first = updates[0].result
    assert not {"alcohol", "color_intensity"} & set(first.drifted_columns)


def test_an_endpoint_without_a_reference_is_left_alone(tmp_path, demo_model):
    db = tmp_path / "ws.db"
    monitor = Monitor(db)
    watcher = DriftMonitor(db, min_rows=10, interval_s=0.1).start()
    monitor.subscribe(watcher)
    probe = monitor.attach(f"onnx:{demo_model}?provider=cpu&rate=0")
    reader = Store(db)
    try:
        assert wait_until(lambda: reader.count_captures(probe.endpoint) >= 50)
        assert watcher.evaluate_soon().wait(10)
        assert reader.drift_evaluations(probe.endpoint) == []
        assert watcher.last_error is None
    finally:
        monitor.close()
        watcher.close()
        reader.close()


def test_after_a_restart_the_prediction_baseline_is_still_the_first_recorded(
        tmp_path, demo_dir, demo_model):
    # The reference has no prediction column, so predictions are compared with the
    # endpoint's first 500 recorded ones. Session 1 records calm traffic; after a restart,
    # session 2 sends the drifted stretch, whose classes are spread differently. Measured
    # against session 2's own first predictions (the old in-memory baseline) it would show
    # no prediction drift at all.
    production = pd.read_csv(demo_dir / "production.csv")
    db = tmp_path / "ws.db"
    payload = tmp_path / "traffic.csv"  # one file, so one endpoint URI in both sessions
    recorded = 0
    for k, (start, stop) in enumerate(((0, 500), (2000, 2500))):
        production.iloc[start:stop].to_csv(payload, index=False)
        monitor, watcher, endpoint, updates = _start(
            db, f"onnx:{demo_model}?provider=cpu&payload={payload}&rate=0",
            window_rows=500, interval_s=0.2)
        reader = Store(db)
        try:
            assert wait_until(lambda r=reader, e=endpoint, n=recorded + 600:
                              r.count_captures(e) >= n, timeout_s=30)
        finally:
            monitor.close()
        recorded = reader.count_captures(endpoint)
        reader.close()
        assert watcher.evaluate_soon().wait(10)
        watcher.close()
        last = updates[-1].result
        assert last.rows_current == 500
        assert last.column("prediction").drifted == (k == 1)
