"""Which captured rows drift compares: every row of a batched request, and only the captures
taken at random (a failure kept only because it failed would tilt the sample)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from app.cli import main
from app.core.domain import Batch, Capture, CaptureStatus, TensorBlob
from app.core.drift import drift
from app.core.drift_monitor import DriftMonitor, DriftUpdate
from app.core.references import demo_reference, set_reference
from app.core.store import Store

T0_NS = 1_700_000_000_000_000_000
ENDPOINT = "v2+http://127.0.0.1:9/models/wine-v1"


def _batched_captures(rows: np.ndarray, per_request: int) -> list[Capture]:
    """The production rows as a tap records a client that sends ``per_request`` per call."""
    return [Capture(ENDPOINT, T0_NS + i * 10**7, 1.0, CaptureStatus.OK,
                    inputs=(TensorBlob.from_array("features", rows[s:s + per_request]),),
                    prediction="0")
            for i, s in enumerate(range(0, len(rows), per_request))]


def test_every_row_of_a_batched_request_is_compared(tmp_path, demo_dir, capsys):
    production = pd.read_csv(demo_dir / "production.csv")
    drifted = production.iloc[1000:3000]
    features = [c for c in drifted.columns if c not in ("id", "label")]
    db = tmp_path / "w.db"
    store = Store(db)
    try:
        store.write_batch([], _batched_captures(drifted[features].to_numpy(np.float32), 50))
        set_reference(store, ENDPOINT, demo_reference())
    finally:
        store.close()
    assert main(["drift", "--db", str(db), "--endpoint", "wine-v1", "--window", "1h",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"]["current"] == 2000  # 40 requests of 50 rows, not 40 rows
    expected = drift(pd.read_csv(demo_dir / "reference.csv"),
                     drifted[features].astype(np.float32))
    got = {c["name"]: c["drifted"] for c in report["columns"] if c["name"] in features}
    assert got == {n: expected.column(n).drifted for n in features}
    assert sum(got.values()) >= 10


def test_the_live_window_holds_rows_not_requests(tmp_path, demo_dir):
    production = pd.read_csv(demo_dir / "production.csv")
    features = [c for c in production.columns if c not in ("id", "label")]
    rows = production.iloc[1000:1500][features].to_numpy(np.float32)
    db = tmp_path / "w.db"
    store = Store(db)
    try:
        set_reference(store, ENDPOINT, demo_reference())
    finally:
        store.close()
    watcher = DriftMonitor(db, window_rows=500, min_rows=50, interval_s=60)
    updates: list[DriftUpdate] = []
    watcher.subscribe(updates.append)
    watcher.start()
    try:
        watcher(Batch(captures=tuple(_batched_captures(rows, 25))))
        assert watcher.evaluate_soon().wait(10)
    finally:
        watcher.close()
    assert updates and updates[-1].result.rows_current == 500


def test_a_sparse_capture_sample_is_not_tilted_by_its_failures(tmp_path, demo_dir, demo_model):
    """Traffic with ~6% failures, 1 request in 20 captured: failures are all kept (for
    replay), but drift compares only the captures drawn at random, which hold the traffic's
    own share of failures. Before, every failure counted: half the sample was failures, and
    undrifted traffic read as drifted."""
    from app.core.drift_window import endpoint_drift
    from app.core.monitor import Monitor
    from tests.helpers import wait_until

    calm = tmp_path / "calm.csv"
    pd.read_csv(demo_dir / "production.csv").iloc[:1000].to_csv(calm, index=False)
    db = tmp_path / "w.db"
    monitor = Monitor(db)
    probe = monitor.attach(f"onnx:{demo_model}?provider=cpu&payload={calm}&rate=0&capture=0.05")
    try:
        assert wait_until(lambda: probe.requests >= 6000, timeout_s=60)
    finally:
        monitor.close()
    requests, errors = probe.requests, probe.errors
    reader = Store(db)
    try:
        set_reference(reader, probe.endpoint, demo_reference())
        kept_failures = reader.count_captures(probe.endpoint, failed=True)
        sampled, sampled_failures = reader.db.execute(
            "SELECT count(*), sum(status != 'ok') FROM captures WHERE sampled = 1").fetchone()
    finally:
        reader.close()
    assert errors > 0.03 * requests and kept_failures == errors  # every failure is kept...
    # ...the sample is 1 request in 20, drawn at random (within 5 standard deviations)...
    assert abs(sampled - 0.05 * requests) < 5 * (requests * 0.05 * 0.95) ** 0.5
    # ...and holds failures at the traffic's rate, not every one of them.
    rate = errors / requests
    assert abs(sampled_failures / sampled - rate) < 5 * (rate * (1 - rate) / sampled) ** 0.5
    assert endpoint_drift(db, probe.endpoint, 3600).result.rows_current == sampled
