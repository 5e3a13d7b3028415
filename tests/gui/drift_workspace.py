"""Builds a workspace with real drift history: the demo's production rows, classified by the real
wine-v1 ONNX session, recorded as captures and fed to a real DriftMonitor evaluation by
evaluation against the demo's reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from app.core.domain import Batch, Capture, CaptureStatus, TensorBlob
from app.core.drift_monitor import DriftMonitor, DriftUpdate
from app.core.references import demo_reference, set_reference
from app.core.store import Store
from probes.onnx_local import classify, load_session

ENDPOINT = "onnx:assets/demo/wine-v1.onnx?provider=cpu"
START_NS = 1_790_000_000 * 10**9
STEP_NS = 20_000_000  # 50 requests a second


def demo_captures(demo_dir: Path, start: int, stop: int) -> list[Capture]:
    rows = pd.read_csv(demo_dir / "production.csv").iloc[start:stop]
    features = rows.drop(columns=["id", "label"]).to_numpy(dtype=np.float32)
    session = load_session(demo_dir / "wine-v1.onnx")
    name = session.get_inputs()[0].name
    captures = []
    for i, (row, request_id) in enumerate(zip(features, rows["id"], strict=True)):
        x = row.reshape(1, -1)
        prediction, confidence = classify(session.run(None, {name: x})[0])
        captures.append(Capture(ENDPOINT, START_NS + (start + i) * STEP_NS, 1.0,
                                CaptureStatus.OK, inputs=(TensorBlob.from_array(name, x),),
                                request_id=str(request_id), prediction=prediction,
                                confidence=confidence))
    return captures


def record(db: Path, monitor: DriftMonitor, captures: list[Capture]) -> None:
    """What the recorder does: commit the batch, then hand it to its listener."""
    store = Store(db)
    try:
        store.write_batch([], captures)
    finally:
        store.close()
    monitor(Batch(captures=tuple(captures)))


def build_drift_workspace(db: Path, demo_dir: Path, *, rows: int = 2000, every: int = 100
                          ) -> list[DriftUpdate]:
    """Rows 0..``rows`` of production.csv (drift ramps in from row 1,000), one drift
    evaluation after every ``every`` rows; returns the monitor's updates."""
    store = Store(db)
    store.write_batch([], demo_captures(demo_dir, 0, 1))  # the endpoint exists
    set_reference(store, ENDPOINT, demo_reference())
    store.close()
    monitor = DriftMonitor(db, window_rows=500, min_rows=50, interval_s=3600)
    updates: list[DriftUpdate] = []
    monitor.subscribe(updates.append)
    monitor.start()
    try:
        captures = demo_captures(demo_dir, 1, rows)
        for k in range(0, len(captures), every):
            record(db, monitor, captures[k:k + every])
            assert monitor.evaluate_soon().wait(30), "drift monitor did not evaluate"
    finally:
        monitor.close()
    if monitor.last_error:
        raise AssertionError(monitor.last_error)
    return updates
