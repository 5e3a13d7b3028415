"""The onnx: probe on the demo's real models: what it measures, keeps and refuses."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from app.core.bus import Bus
from app.core.domain import Capture, CaptureStatus, Metric, Sample
from probes import ProbeError, ProbeOptions, open_probe
from probes.onnx_local import available_providers, load_session, require_provider
from tests.helpers import wait_until


def _drain(bus: Bus) -> tuple[list[Sample], list[Capture]]:
    items, _ = bus.drain()
    return ([i for i in items if isinstance(i, Sample)],
            [i for i in items if isinstance(i, Capture)])


def test_each_request_gives_a_latency_sample_and_a_capture(demo_model):
    bus = Bus()
    probe = open_probe(f"onnx:{demo_model}", bus)
    for _ in range(10):
        probe.measure_one()
    samples, captures = _drain(bus)
    latencies = [s for s in samples if s.metric == Metric.LATENCY_MS]
    assert len(latencies) == 10 and all(s.value > 0 for s in latencies)
    assert len(captures) == 10
    c = captures[0]
    assert c.inputs[0].name == "features" and c.inputs[0].shape == (1, 13)
    assert c.outputs[0].to_array().shape == (1, 3)
    assert c.model_version == "1.0.0"  # from the model's metadata
    assert probe.info()["provider"] == "cpu"


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "batched"])
def test_payload_rows_are_sent_exactly_and_judged_against_their_labels(
        demo_dir, tmp_path, batched):
    rows = pd.read_csv(demo_dir / "production.csv").iloc[:600]
    payload = tmp_path / "rows.csv"
    rows.to_csv(payload, index=False)
    model = demo_dir / "wine-v1.onnx"
    bus = Bus()
    probe = open_probe(f"onnx:{model}?payload={payload}", bus)
    for _ in range(len(rows)):
        if batched:
            probe.step()  # judged in batches of up to 64, as the run loop does
        else:
            probe.measure_one()
    probe.settle()
    _, captures = _drain(bus)

    features = rows.drop(columns=["id", "label"]).to_numpy(np.float32)
    truth = ort.InferenceSession(str(model)).run(None, {"features": features})[0]
    nan_rows = np.isnan(features).any(axis=1)
    mismatch = (truth.argmax(1) != rows["label"].to_numpy()) & ~nan_rows
    assert mismatch.any() and nan_rows.any(), "the demo stream holds mistakes and NaN rows"
    expected = np.where(nan_rows, "non_finite", np.where(mismatch, "mismatch", "ok")).tolist()
    assert [str(c.status) for c in captures] == expected
    first = captures[0]
    assert first.request_id == rows["id"].iloc[0]
    assert first.prediction == str(truth[0].argmax())
    assert first.confidence == pytest.approx(float(truth[0].max()))
    assert first.inputs[0].to_array().tobytes() == features[:1].tobytes()
    np.testing.assert_allclose(first.outputs[0].to_array(), truth[:1], rtol=1e-6)


def test_nan_inputs_are_failures_with_non_finite_output(demo_dir, tmp_path):
    row = pd.read_csv(demo_dir / "reference.csv").iloc[:1].copy()
    row["alcohol"] = np.nan
    payload = tmp_path / "nan.csv"
    row.to_csv(payload, index=False)
    bus = Bus()
    probe = open_probe(f"onnx:{demo_dir / 'wine-v1.onnx'}", bus, ProbeOptions(payload=payload))
    probe.measure_one()
    samples, captures = _drain(bus)
    assert captures[0].status is CaptureStatus.NON_FINITE
    assert any(s.metric == Metric.FAILURE for s in samples)
    assert probe.errors == 1


def test_capture_rate_thins_successes_but_keeps_every_failure(demo_model):
    bus = Bus()
    probe = open_probe(f"onnx:{demo_model}?capture=0.25&slo_ms=1000", bus)
    for _ in range(2000):
        probe.measure_one()
    samples, captures = _drain(bus)
    assert sum(s.metric == Metric.LATENCY_MS for s in samples) == 2000
    # A random draw per request: 500 expected, within 5 standard deviations (~97).
    assert abs(len(captures) - 500) < 5 * (2000 * 0.25 * 0.75) ** 0.5
    assert all(c.sampled for c in captures)

    bus = Bus()
    strict = open_probe(f"onnx:{demo_model}?capture=0&slo_ms=0.000001", bus)
    for _ in range(50):
        strict.measure_one()
    _, captures = _drain(bus)
    assert len(captures) == 50 and all(c.status is CaptureStatus.SLOW for c in captures)
    assert not any(c.sampled for c in captures)  # kept for failing, not drawn: drift skips them


def test_the_running_probe_paces_itself_and_stops(demo_model):
    bus = Bus()
    probe = open_probe(f"onnx:{demo_model}?rate=200", bus)
    probe.start()
    try:
        assert wait_until(lambda: probe.requests >= 20)
    finally:
        probe.stop()
    assert not probe.alive
    assert probe.requests >= 20
    samples, _ = _drain(bus)
    assert any(s.metric == Metric.RSS_MB and s.value > 10 for s in samples)


def test_a_session_that_fell_back_to_cpu_is_refused_not_measured_as_cuda(demo_model):
    # What onnxruntime hands back when CUDA's provider fails to start: a CPU-only session.
    session = load_session(demo_model, "cpu")
    require_provider(session, "cpu", demo_model)
    with pytest.raises(ProbeError, match=r"could not start the 'cuda' provider .* fell back to "
                                         r"CPUExecutionProvider; check the GPU driver"):
        require_provider(session, "cuda", demo_model)


def test_an_absent_provider_names_the_installed_ones(demo_model):
    assert "azure" not in available_providers()
    with pytest.raises(ProbeError, match=r"provider 'cuda' is not installed here; available: cpu"):
        open_probe(f"onnx:{demo_model}?provider=cuda", Bus())
    with pytest.raises(ProbeError, match="unknown provider 'gpu'"):
        open_probe(f"onnx:{demo_model}?provider=gpu", Bus())


def test_missing_and_corrupt_models_are_clear_errors(tmp_path, demo_model):
    with pytest.raises(ProbeError, match="does not exist"):
        open_probe(f"onnx:{tmp_path / 'nope.onnx'}", Bus())
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(demo_model.read_bytes()[:300])
    with pytest.raises(ProbeError, match=r"cannot load .* as an ONNX model"):
        open_probe(f"onnx:{corrupt}", Bus())


def test_a_payload_of_the_wrong_width_is_refused(demo_model, tmp_path):
    payload = tmp_path / "narrow.csv"
    pd.DataFrame({"a": [1.0], "b": [2.0]}).to_csv(payload, index=False)
    with pytest.raises(ProbeError, match="2 values but input 'features' wants 13"):
        open_probe(f"onnx:{demo_model}?payload={payload}", Bus())


def test_npy_payloads_load_without_pickle(demo_model, tmp_path):
    good = tmp_path / "rows.npy"
    np.save(good, np.zeros((4, 13), dtype=np.float32))
    bus = Bus()
    probe = open_probe(f"onnx:{demo_model}?payload={good}", bus)
    probe.measure_one()
    _, captures = _drain(bus)
    assert captures[0].inputs[0].to_array().sum() == 0
    evil = tmp_path / "objects.npy"
    np.save(evil, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ProbeError, match="cannot read payload"):
        open_probe(f"onnx:{demo_model}?payload={evil}", Bus())


@pytest.mark.parametrize(("rows", "words"), [
    (np.full((4, 13), "abc"), "holds text"),  # was "internal error", exit 1
    (np.ones((4, 13), np.complex128) * 1j, "holds complex numbers"),  # imaginary part dropped
    (np.full((4, 13), np.datetime64("2026-01-01")), "holds dates"),  # sent as day numbers
])
def test_npy_and_npz_payloads_of_other_than_numbers_are_refused_in_one_line(
        demo_model, tmp_path, rows, words):
    for path, save in ((tmp_path / "rows.npy", lambda p: np.save(p, rows)),
                       (tmp_path / "rows.npz", lambda p: np.savez(p, x=rows))):
        save(path)
        with pytest.raises(ProbeError, match=words) as caught:
            open_probe(f"onnx:{demo_model}?payload={path}", Bus())
        assert "\n" not in str(caught.value)


def test_npz_payloads_carry_labels_and_ids_beside_rows_of_any_shape(demo_dir, tmp_path):
    """Images do not fit a CSV: an .npz holds the rows as one array, with their labels (so
    wrong answers are failures) and ids (so ``probescope label`` can join them later)."""
    rows = pd.read_csv(demo_dir / "production.csv").iloc[:200]
    features = rows.drop(columns=["id", "label"]).to_numpy(np.float32).reshape(200, 1, 13)
    payload = tmp_path / "rows.npz"
    np.savez(payload, x=features, label=rows["label"].to_numpy(), id=rows["id"].to_numpy(str))
    bus = Bus()
    probe = open_probe(f"onnx:{demo_dir / 'wine-v1.onnx'}?payload={payload}&capture=1", bus)
    for _ in range(200):
        probe.measure_one()
    _, captures = _drain(bus)
    assert [c.request_id for c in captures] == rows["id"].tolist()
    assert [c.label for c in captures] == [str(v) for v in rows["label"]]
    wrong = [c for c in captures if c.status == CaptureStatus.MISMATCH]
    assert wrong and all(c.prediction != c.label for c in wrong)
    for name, arrays, words in [
            ("two.npz", {"x": features, "y": features}, "holds the arrays x, y"),
            ("short.npz", {"x": features, "label": np.zeros(3)}, "one entry per row"),
            ("objects.npz", {"x": np.array([{"a": 1}], dtype=object)}, "cannot read payload")]:
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(ProbeError, match=words):
            open_probe(f"onnx:{demo_dir / 'wine-v1.onnx'}?payload={tmp_path / name}", Bus())


def test_secrets_and_nonsense_in_uris_are_refused(demo_model):
    with pytest.raises(ProbeError, match="secrets do not belong in a URI"):
        open_probe(f"onnx:{demo_model}?token=abc", Bus())
    # Not only the seven exact names it knew: the usual spellings of keys and tokens too.
    for key in ("access_token", "X-Api-Key", "api-key", "client_secret", "db_password", "jwt",
                "sig"):
        with pytest.raises(ProbeError, match=f"secrets do not belong in a URI \\(found {key}\\)"):
            open_probe(f"v2+http://127.0.0.1:1/models/m?{key}=SECRETVALUE", Bus())
    with pytest.raises(ProbeError, match="unknown endpoint kind 'ftp'"):
        open_probe("ftp:host", Bus())
    with pytest.raises(ProbeError, match="not an endpoint URI"):
        open_probe("just words", Bus())


@pytest.mark.parametrize(("query", "words"), [
    ("rate=-5", "'rate=-5' .* must be 0 or more"),
    ("rate=nan", "'rate=nan' .* must be a finite number"),
    ("capture=1.5", "'capture=1.5' .* must be at most 1"),
    ("capture=-0.1", "must be 0 or more"),
    ("slo_ms=-3", "'slo_ms=-3' .* must be positive"),
    ("slo_ms=inf", "must be a finite number"),
    ("min_confidence=2", "must be at most 1"),
    ("threads=abc", "'threads=abc' .* is not a whole number"),
    ("threads=0", "'threads=0' .* must be at least 1"),
    # Each one an OS thread started with the session: 100000 took the machine down.
    ("threads=100000", r"'threads=100000' .* must be at most \d+ \(this machine's \d+ cores\)"),
])
def test_nonsense_numbers_in_a_uri_are_one_line_errors_naming_the_parameter(demo_model, query,
                                                                            words):
    with pytest.raises(ProbeError, match=words) as caught:
        open_probe(f"onnx:{demo_model}?{query}", Bus())
    assert "\n" not in str(caught.value)


def test_sensible_numbers_in_a_uri_are_taken(demo_model):
    probe = open_probe(f"onnx:{demo_model}?rate=0&capture=0.25&slo_ms=40&threads=1", Bus())
    assert (probe.rate_hz, probe.capture_rate, probe.slo_ms) == (0.0, 0.25, 40.0)
    assert probe.session.get_session_options().intra_op_num_threads == 1


def test_each_remote_kind_reads_as_its_own_scheme(monkeypatch):
    monkeypatch.setenv("PROBESCOPE_AGENT_TOKEN", "t" * 32)
    for scheme in ("agent+http", "agent+https"):
        probe = open_probe(f"{scheme}://127.0.0.1:1", Bus())
        assert probe.scheme == scheme and probe.info()["kind"] == scheme


@pytest.mark.parametrize(("uri", "words"), [
    ("onnx:{model}?slo=5", "'slo' is not a parameter of onnx: URIs; did you mean slo_ms?"),
    ("onnx:{model}?provder=cpu", "did you mean provider?"),
    ("system:?rat=5", "'rat' is not a parameter of system: URIs; did you mean rate?"),
    ("system:?colour=red", "it takes pid, rate"),
    ("v2+http://127.0.0.1:1/models/m?timeout=3", "did you mean timeout_s?"),
    ("agent+http://127.0.0.1:1?intervall=1", "did you mean interval?"),
    # httpx would send it as Basic auth, in clear, in place of the agent's token.
    ("agent+http://admin:hunter2@127.0.0.1:1", "credentials do not belong in a URI"),
    ("agent+http://127.0.0.1:1/v1", "should look like agent+http://HOST:PORT"),
    ("system:?rate=0", "'rate=0' in system:?rate=0 must be positive"),
    ("system:?pid=abc", "'pid=abc' in system:?pid=abc is not a whole number"),
])
def test_a_misspelt_or_unknown_uri_parameter_is_refused_not_ignored(demo_model, uri, words):
    with pytest.raises(ProbeError, match=re.escape(words)):
        open_probe(uri.format(model=demo_model), Bus())


def test_a_model_answering_its_label_first_is_judged_like_the_same_model(demo_dir, tmp_path):
    # scikit-learn's exports answer the label, then the probabilities: the label is the
    # prediction and the probabilities still give the confidence (so low confidence is seen).
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(demo_dir / "wine-v1.onnx")
    probs = model.graph.output[0].name
    model.graph.node.append(helper.make_node("ArgMax", [probs], ["label"], axis=1, keepdims=0))
    model.graph.output.insert(0, helper.make_tensor_value_info("label", TensorProto.INT64,
                                                               ["n"]))
    onnx.save(model, tmp_path / "sk.onnx")
    rows = pd.read_csv(demo_dir / "production.csv").iloc[:300]
    payload = tmp_path / "rows.csv"
    rows.to_csv(payload, index=False)
    judged = {}
    for name in ("wine-v1", "sk"):
        path = demo_dir / "wine-v1.onnx" if name == "wine-v1" else tmp_path / "sk.onnx"
        bus = Bus()
        probe = open_probe(f"onnx:{path}?payload={payload}&min_confidence=0.6", bus)
        for _ in range(len(rows)):
            probe.step()
        probe.settle()
        _, captures = _drain(bus)
        judged[name] = [(str(c.status), c.prediction, c.confidence) for c in captures]
    assert judged["sk"] == judged["wine-v1"]
    statuses = {s for s, _, _ in judged["sk"]}
    assert {"mismatch", "low_confidence", "ok"} <= statuses
