"""The v2+http probe and the replay's remote target against KServe's own ModelServer (a second
real Open Inference Protocol server beside MLServer) serving the demo's wine-v2 as ONNX, so
every answer can be checked against a local onnxruntime session of the same file."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from app.core.bus import Bus
from app.core.domain import Capture, CaptureStatus
from app.core.replay import Selection, replay, select_case_set
from app.core.replay_targets import LocalOnnxTarget, open_target
from app.core.store import Store
from probes import ProbeOptions
from tests.conftest import DEMO
from tests.replay.conftest import record_stream
from tests.servers.kserve_peer import MODEL_PATH, MODEL_VERSION

pytestmark = pytest.mark.timeout(300)


def _clean_rows(demo_dir, n: int) -> pd.DataFrame:
    rows = pd.read_csv(demo_dir / "production.csv")
    return rows[~rows.isna().any(axis=1)].iloc[:n]


def _local(features: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(MODEL_PATH), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: features.astype(np.float32)})[0]


def test_each_answer_is_the_models_own_and_is_judged_by_its_label(opened, kserve, demo_dir,
                                                                   tmp_path):
    rows = _clean_rows(demo_dir, 80)
    payload = tmp_path / "rows.csv"
    rows.to_csv(payload, index=False)
    bus = Bus()
    probe = opened(f"{kserve.v2_uri}?input=features", bus, ProbeOptions(payload=payload))
    for _ in range(len(rows)):
        probe.measure_one()
    items, _ = bus.drain()
    captures = [i for i in items if isinstance(i, Capture)]
    assert len(captures) == len(rows) and all(c.error is None for c in captures)

    # The server's answers are exactly the model's: float32 through JSON and back.
    proba = np.vstack([c.outputs[0].to_array() for c in captures])
    want = _local(rows.drop(columns=["id", "label"]).to_numpy())
    assert proba.dtype == np.float32 and np.array_equal(proba, want)
    assert {c.model_version for c in captures} == {MODEL_VERSION}
    assert [c.request_id for c in captures] == rows["id"].tolist()
    predicted = want.argmax(axis=1).astype(str)
    assert [c.prediction for c in captures] == predicted.tolist()
    mismatch = predicted != rows["label"].astype(str).to_numpy()
    assert mismatch.any() and not mismatch.all(), "the demo stream should hold some mistakes"
    assert [c.status is CaptureStatus.MISMATCH for c in captures] == mismatch.tolist()


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> str:
    """wine-v1 walking the demo stream through the real onnx probe, its captures stored."""
    db = tmp_path_factory.mktemp("kserve-replay") / "captured.db"
    record_stream(db, DEMO / "wine-v1.onnx", rows=1500)
    return str(db)


def test_replaying_on_kserve_gives_what_the_same_model_gives_locally(kserve, captured):
    """A replay target across the network: KServe's answers to wine-v1's captured failures
    and controls, in batches, are the local session's to the bit, so the verdicts agree.
    (Rows holding NaN are left out: JSON has no NaN, and the server refuses them.)"""
    store = Store(captured)
    try:
        cases = select_case_set(store, Selection(kinds=("mismatch", "low_confidence"),
                                                 limit=300, controls=100))
    finally:
        store.close()
    local = LocalOnnxTarget(MODEL_PATH, name="local")
    remote = open_target(f"{kserve.v2_uri}?input=features", name="kserve")
    try:
        result = replay(cases, [local, remote], batch_size=64)
    finally:
        remote.close()
        local.close()
    here, there = result.runs
    assert len(cases) > 200 and 0 < result.failing[0].sum() < len(cases)
    assert not there.errors, list(there.errors.values())[:3]
    assert np.array_equal(next(iter(here.outputs.values())), next(iter(there.outputs.values())),
                          equal_nan=True)
    assert np.array_equal(result.failing[0], result.failing[1])
    assert result.summaries()[0].to_json() | {"version": "x", "latency_ms": None} == \
        result.summaries()[1].to_json() | {"version": "x", "latency_ms": None}
