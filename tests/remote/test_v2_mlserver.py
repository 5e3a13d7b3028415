"""The v2+http probe against a real MLServer 1.7.1 (scikit-learn runtime) on 127.0.0.1."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest

from app.cli import main as cli_main
from app.core.bus import Bus
from app.core.domain import Capture, CaptureStatus, Metric, Sample
from app.core.monitor import Monitor
from app.core.store import Store
from probes import EndpointState, ProbeError, ProbeOptions, open_probe
from tests.helpers import wait_until
from tests.servers.mlserver import MODEL, MODEL_VERSION

pytestmark = pytest.mark.timeout(180)


def _drain(bus: Bus) -> tuple[list[Sample], list[Capture]]:
    items, _ = bus.drain()
    return ([i for i in items if isinstance(i, Sample)],
            [i for i in items if isinstance(i, Capture)])


def test_a_model_without_declared_inputs_needs_a_payload_and_says_so(mlserver):
    meta = httpx.get(f"{mlserver.url}/v2/models/{MODEL}").json()
    assert meta["inputs"] == []  # the real runtime's behaviour this probe must cope with
    with pytest.raises(ProbeError) as err:
        open_probe(f"{mlserver.v2_uri}", Bus())
    message = str(err.value)
    assert "declares no inputs" in message and "--payload" in message


def test_payload_rows_reach_mlserver_exactly_and_are_judged_by_their_labels(
        opened, mlserver, demo_dir, tmp_path):
    rows = pd.read_csv(demo_dir / "production.csv")
    rows = rows[~rows.isna().any(axis=1)].iloc[:120]
    payload = tmp_path / "rows.csv"
    rows.to_csv(payload, index=False)
    bus = Bus()
    base = mlserver.v2_uri
    scores = opened(f"{base}?outputs=predict_proba", bus, ProbeOptions(payload=payload))
    for _ in range(len(rows)):
        scores.measure_one()
    samples, captures = _drain(bus)
    assert len([s for s in samples if s.metric == Metric.LATENCY_MS]) == len(rows)
    assert all(c.error is None for c in captures), captures[0].error

    features = rows.drop(columns=["id", "label"]).to_numpy(np.float64)
    first = captures[0]
    assert first.request_id == rows["id"].iloc[0]
    assert first.inputs[0].name == "input-0" and first.inputs[0].shape == (1, 13)
    assert first.inputs[0].to_array().tobytes() == features[:1].tobytes()
    assert first.model_version == MODEL_VERSION
    proba = np.vstack([c.outputs[0].to_array() for c in captures])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)
    expected = proba.argmax(axis=1).astype(str)
    assert [c.prediction for c in captures] == expected.tolist()
    assert [c.confidence for c in captures] == pytest.approx(proba.max(axis=1).tolist())
    mismatch = expected != rows["label"].astype(str).to_numpy()
    assert mismatch.any() and not mismatch.all(), "the demo stream should hold some mistakes"
    assert [c.status is CaptureStatus.MISMATCH for c in captures] == mismatch.tolist()

    # The runtime's default output is the class itself (INT64): same verdicts, no confidence.
    labels = opened(base, bus, ProbeOptions(payload=payload))
    for _ in range(len(rows)):
        labels.measure_one()
    _, plain = _drain(bus)
    assert [c.prediction for c in plain] == expected.tolist()
    assert all(c.confidence is None for c in plain)


def test_nan_rows_are_refused_by_the_server_and_recorded_as_errors(opened, mlserver, demo_dir,
                                                                   tmp_path):
    row = pd.read_csv(demo_dir / "reference.csv").iloc[:1].copy()
    row["alcohol"] = np.nan
    payload = tmp_path / "nan.csv"
    row.to_csv(payload, index=False)
    bus = Bus()
    probe = opened(f"{mlserver.v2_uri}", bus,
                       ProbeOptions(payload=payload))
    probe.measure_one()
    samples, captures = _drain(bus)
    assert captures[0].status is CaptureStatus.ERROR
    assert captures[0].error.startswith("HTTP 4")  # MLServer refuses JSON with NaN in it
    assert np.isnan(captures[0].inputs[0].to_array()[0, 0])  # kept exactly, for replay
    assert [s.metric for s in samples].count(Metric.FAILURE) == 1


def test_a_versioned_uri_and_an_unknown_model(opened, mlserver, demo_dir):
    bus = Bus()
    probe = opened(f"{mlserver.v2_uri}/versions/{MODEL_VERSION}", bus,
                       ProbeOptions(payload=demo_dir / "reference.csv"))
    assert probe.measure_one().status is not CaptureStatus.ERROR
    assert probe.info()["model"] == MODEL
    with pytest.raises(ProbeError, match="no model 'nope'"):
        open_probe(mlserver.v2_uri.replace(MODEL, "nope"), bus,
                   ProbeOptions(payload=demo_dir / "reference.csv"))


def test_watch_records_requests_from_mlserver(mlserver, demo_dir, tmp_path, capsys):
    db = tmp_path / "watch.db"
    uri = mlserver.v2_uri
    code = cli_main(["watch", uri, "--payload", str(demo_dir / "reference.csv"),
                     "--seconds", "5", "--db", str(db), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    [summary] = result["endpoints"]
    assert summary["uri"] == uri
    assert summary["requests"] > 10 and summary["latency_ms"]["p50"] > 0
    store = Store(db, readonly=True)
    try:
        stored = store.captures(uri, limit=5)
        assert stored and stored[0].capture.inputs[0].shape == (1, 13)
        assert stored[0].capture.model_version == MODEL_VERSION
        assert store.count_captures(uri) >= summary["requests"] - summary["errors"]
    finally:
        store.close()


def test_a_killed_server_marks_the_endpoint_down_and_it_comes_back(own_mlserver, demo_dir,
                                                                   tmp_path):
    uri = f"{own_mlserver.v2_uri}?timeout_s=2"
    monitor = Monitor(tmp_path / "ws.db")
    try:
        probe = monitor.attach(uri, ProbeOptions(payload=demo_dir / "reference.csv",
                                                 rate_hz=50))
        assert wait_until(lambda: probe.requests >= 10 and probe.state is EndpointState.UP)
        own_mlserver.kill()
        assert wait_until(lambda: probe.state is EndpointState.DOWN, timeout_s=10)
        assert "cannot connect" in probe.last_error or "connection lost" in probe.last_error
        down_at = probe.requests
        own_mlserver.start()
        assert wait_until(lambda: probe.state is EndpointState.UP
                          and probe.requests >= down_at + 10, timeout_s=30)
        assert probe.alive and probe.last_error is None
    finally:
        monitor.close()
    store = Store(tmp_path / "ws.db", readonly=True)
    try:
        _, up = store.values(probe.endpoint, "up")
        assert 0.0 in up.tolist() and up[-1] == 1.0  # went down, came back
        ok = store.count_captures(probe.endpoint, failed=False)
        failed = store.count_captures(probe.endpoint, failed=True)
        assert ok >= 20 and failed >= 1
    finally:
        store.close()


def test_watch_without_a_payload_prints_one_line_and_exits_2(mlserver, tmp_path, capsys):
    code = cli_main(["watch", mlserver.v2_uri, "--seconds", "1", "--db",
                     str(tmp_path / "w.db")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "declares no inputs" in err and "Traceback" not in err


def test_the_tap_in_front_of_mlserver_passes_its_answers_and_records_each_call(
        mlserver, demo_dir, tmp_path):
    """``probescope tap`` between a client and a real MLServer: the client reads what MLServer
    answers directly, byte for byte in the body, and each call becomes a capture of the same
    endpoint a v2 probe would use, with MLServer's model version and the client's id."""
    from tests.agent.conftest import through_the_tap

    rows = pd.read_csv(demo_dir / "production.csv").dropna().iloc[:25]
    features = rows.drop(columns=["id", "label"]).to_numpy(np.float64)
    path = f"/v2/models/{MODEL}/infer"
    pairs, caps = through_the_tap(mlserver.url, tmp_path / "tapped.db", [
        (path, json.dumps({"id": rid, "inputs": [
            {"name": "input-0", "datatype": "FP64", "shape": [1, 13], "data": row.tolist()}]
        }).encode(), {}) for rid, row in zip(rows["id"], features, strict=True)])
    for want, got in pairs:
        assert got.status_code == want.status_code == 200
        assert got.content == want.content
        assert got.headers["content-type"] == want.headers["content-type"]
    assert len(caps) == len(rows)
    assert {c.endpoint for c in caps} == {mlserver.v2_uri}
    assert sorted(c.request_id for c in caps) == sorted(rows["id"])
    assert {c.model_version for c in caps} == {MODEL_VERSION}
    by_id = {c.request_id: c for c in caps}
    for rid, row in zip(rows["id"], features, strict=True):
        assert by_id[rid].inputs[0].to_array().tolist() == [row.tolist()]
        assert by_id[rid].status is CaptureStatus.OK  # answered, no label to disagree with
        assert by_id[rid].prediction in {"0", "1", "2"}  # the runtime's class output
