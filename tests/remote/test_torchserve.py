"""The torchserve+http probe and TorchServe's metrics, against a real TorchServe 0.12."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from app.core.bus import Bus
from app.core.domain import Capture, CaptureStatus, Sample
from probes import ProbeOptions

pytestmark = pytest.mark.timeout(300)


def test_torchserve_answers_are_judged_against_labels(opened, torchserve, demo_dir):
    rows = pd.read_csv(demo_dir / "validation.csv")
    rows = rows[~rows.isna().any(axis=1)].iloc[:60]
    bus = Bus()
    probe = opened(torchserve.uri, bus, ProbeOptions(payload=demo_dir / "validation.csv"))
    for _ in range(len(rows)):
        probe.measure_one()
    items, _ = bus.drain()
    captures = [i for i in items if isinstance(i, Capture)]
    assert len(captures) == len(rows) and all(c.error is None for c in captures)
    scores = np.vstack([c.outputs[0].to_array() for c in captures])
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    assert [c.prediction for c in captures] == scores.argmax(axis=1).astype(str).tolist()
    assert [c.confidence for c in captures] == pytest.approx(scores.max(axis=1).tolist())
    wrong = scores.argmax(axis=1).astype(str) != rows["label"].astype(str).to_numpy()
    assert [c.status is CaptureStatus.MISMATCH for c in captures] == wrong.tolist()
    assert wrong.mean() < 0.5  # a trained model, not noise
    first = rows.drop(columns=["id", "label"]).to_numpy(np.float64)[0]
    assert captures[0].inputs[0].to_array().reshape(-1).tolist() == first.tolist()


def test_torchserve_metrics_become_request_rate_and_mean_latency(opened, torchserve, demo_dir):
    bus = Bus()
    traffic = opened(torchserve.uri, bus, ProbeOptions(payload=demo_dir / "reference.csv"))
    traffic.measure_one()  # so that TorchServe's per-model series exist before the window
    prom = opened(f"{torchserve.metrics_uri}?model=wine&window_s=600", bus)
    before1 = time.monotonic()
    prom.scrape_once()
    after1 = time.monotonic()
    sent = 20
    for _ in range(sent):
        traffic.measure_one()
    before2 = time.monotonic()
    values = {s.metric: s.value for s in prom.scrape_once() if isinstance(s, Sample)}
    after2 = time.monotonic()
    assert sent / (after2 - before1) <= values["requests_per_s"] <= sent / (before2 - after1)
    assert values["latency_mean_ms"] > 0


def test_the_tap_in_front_of_torchserve_records_what_the_probe_would(torchserve, demo_dir,
                                                                      tmp_path):
    """``probescope tap`` between a client and a real TorchServe: the client gets TorchServe's
    own bytes, and each call is recorded on the probe's endpoint with the class and
    confidence read from TorchServe's {class: probability} answer."""
    import json

    from tests.agent.conftest import through_the_tap

    rows = pd.read_csv(demo_dir / "validation.csv").dropna().iloc[:15]
    features = rows.drop(columns=["id", "label"]).to_numpy(np.float64)
    direct_url = torchserve.uri.replace("torchserve+http://", "http://").rsplit("/", 1)[0]
    pairs, recorded = through_the_tap(direct_url, tmp_path / "tapped.db", [
        ("/predictions/wine", json.dumps({"data": row.tolist()}).encode(), {"X-Request-Id": rid})
        for rid, row in zip(rows["id"], features, strict=True)])
    answers = []
    for want, got in pairs:
        assert got.status_code == want.status_code == 200
        assert got.content == want.content
        answers.append(got.json())
    caps = {c.request_id: c for c in recorded}
    assert set(caps) == set(rows["id"])
    assert {c.endpoint for c in caps.values()} == {torchserve.uri}
    for rid, answer in zip(rows["id"], answers, strict=True):
        top = max(answer, key=answer.get)
        assert caps[rid].prediction == top
        assert caps[rid].confidence == pytest.approx(answer[top])
        assert caps[rid].status is CaptureStatus.OK
