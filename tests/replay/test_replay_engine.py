"""The replay engine on real captures: exact reproduction, verdicts, bisect, batching, cancel,
saving and reopening."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.core.domain import Capture, CaptureStatus, TensorBlob
from app.core.replay import (
    FIXED,
    NEWLY_BROKEN,
    NO_ANSWER,
    STILL_FAILING,
    Case,
    Criteria,
    Selection,
    replay,
    select_cases,
)
from app.core.replay_store import load_replay, save_replay
from app.core.replay_targets import LocalOnnxTarget, ReplayError, open_target
from app.core.store import Store


@pytest.fixture
def cases(demo_db: Path) -> list[Case]:
    store = Store(demo_db)
    try:
        return select_cases(store, Selection(limit=10_000, controls=10_000))
    finally:
        store.close()


def targets(paths: list[Path]) -> list[LocalOnnxTarget]:
    return [LocalOnnxTarget(p) for p in paths]


def test_the_recorded_workspace_holds_every_kind_of_demo_failure(cases):
    kinds = {c.capture.status for c in cases}
    assert {CaptureStatus.MISMATCH, CaptureStatus.NON_FINITE, CaptureStatus.LOW_CONFIDENCE,
            CaptureStatus.OK} <= kinds
    assert sum(c.control for c in cases) > 100 and sum(not c.control for c in cases) > 100


@pytest.mark.parametrize("batch_size", [1, 7, 256])
def test_replaying_on_the_producing_version_reproduces_the_recorded_outputs(
        cases, versions, batch_size):
    result = replay(cases, targets(versions[:1]), batch_size=batch_size)
    run = result.runs[0]
    compared = 0
    for i, case in enumerate(cases):
        recorded = case.capture.outputs[0].to_array()
        (name, replayed), = run.output(i)
        assert name == case.capture.outputs[0].name
        assert replayed.shape == recorded.shape
        # NaN rows (the stream's NaN inputs) must come back NaN in the same places.
        assert np.array_equal(np.isnan(replayed), np.isnan(recorded))
        ok = ~np.isnan(recorded)
        assert np.abs(replayed[ok].astype(np.float64) - recorded[ok]).max(initial=0) <= 1e-6
        compared += 1
    assert compared == len(cases)
    summary = result.summaries()[0]
    # Same version, same inputs: every failure still fails and no control breaks.
    assert summary.fixed == 0 and summary.newly_broken == 0
    assert summary.still_failing == summary.failures


def test_v2_fixes_many_failures_and_v3_breaks_class_2(cases, versions):
    result = replay(cases, targets(versions))
    v1, v2, v3 = result.summaries()
    assert v2.fixed > v1.failures // 2
    # The recording draws its captures at random: 1-3 of ~500 controls break on v2.
    assert v2.newly_broken <= max(2, v2.controls // 100)
    assert v3.newly_broken > 5
    broken = [c for i, c in enumerate(cases) if result.verdict(i, 2) == NEWLY_BROKEN]
    labels = [c.capture.label for c in broken]
    # The regression is on cultivar 2; the controls are a random sample, so the few breaks
    # of other classes vary (16 of 20 failed "more than 80%" in the CLI's twin of this test).
    others = max((labels.count(k) for k in set(labels) - {"2"}), default=0)
    assert labels.count("2") > 0 and labels.count("2") >= 2 * others
    for i, c in enumerate(cases):  # verdict names follow the case's role
        assert result.verdict(i, 1) in ((NEWLY_BROKEN, "ok") if c.control
                                        else (FIXED, STILL_FAILING))


def test_bisect_names_the_first_version_where_each_case_fails(cases, versions):
    result = replay(cases, targets(versions))
    first = result.first_failing()
    for i, case in enumerate(cases):
        failing = [bool(f[i]) for f in result.failing]
        expected = ["wine-v1", "wine-v2", "wine-v3"][failing.index(True)] if any(failing) \
            else None
        assert first[i] == expected
        if not case.control:
            assert first[i] == "wine-v1"  # each failure was recorded failing on v1
    # Order matters: bisect walks the versions as given.
    reversed_result = replay(cases, targets(versions[::-1]))
    newly = [i for i, c in enumerate(cases) if c.control and result.verdict(i, 2) == NEWLY_BROKEN]
    assert newly and all(reversed_result.first_failing()[i] == "wine-v3" for i in newly)


def test_failing_follows_the_capture_kind(cases, versions):
    low = [c for c in cases if c.capture.status is CaptureStatus.LOW_CONFIDENCE]
    nan = [c for c in cases if c.capture.status is CaptureStatus.NON_FINITE]
    strict = replay(low + nan, targets(versions[:1]), criteria=Criteria(min_confidence=0.6))
    lenient = replay(low + nan, targets(versions[:1]), criteria=Criteria(min_confidence=0.0))
    assert strict.summaries()[0].still_failing == len(low) + len(nan)
    # With no confidence threshold the correctly labelled low-confidence cases pass; NaN
    # outputs never do.
    assert lenient.summaries()[0].fixed == len(low)
    assert lenient.summaries()[0].still_failing == len(nan)


def test_a_capture_a_version_cannot_take_gets_no_verdict_and_sinks_no_batch(cases, versions):
    good = [c for c in cases if c.capture.status is CaptureStatus.MISMATCH][:20]
    wrong = Capture(endpoint="x", ts_ns=1, latency_ms=1.0, status=CaptureStatus.ERROR,
                    inputs=(TensorBlob.from_array("features",
                                                  np.zeros((1, 5), np.float32)),))
    mixed = [*good[:10], Case(None, wrong), *good[10:]]
    result = replay(mixed, targets(versions[1:2]))
    run = result.runs[0]
    assert set(run.errors) == {10} and run.unanswered == {10}
    # Said plainly, before any batch is tried: what the model takes, what the capture holds.
    assert run.errors[10] == "wine-v2 takes features as [batch, 13]; the captures hold [5] per row"
    # It could not be asked: neither failing there nor fixed, and bisect passes over it.
    assert not result.failing[0][10] and result.verdict(10, 0) == NO_ANSWER
    (summary,) = result.summaries()
    # Not asked is no answer, not a model error: the two counts do not overlap.
    assert summary.errors == 0 and summary.unanswered == 1
    assert summary.fixed + summary.still_failing == summary.failures - 1
    assert all(run.output(i) for i in range(len(mixed)) if i != 10)
    others = np.delete(run.latency_ms, 10)
    assert np.isnan(run.latency_ms[10]) and np.isfinite(others).all() and (others > 0).all()


def test_a_row_that_fails_inside_the_model_does_not_sink_its_batch(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    # Gather with indices taken from the input: a row naming a missing index fails its whole
    # batch in onnxruntime; the replay runs that batch's rows alone to find it.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])
    table = helper.make_tensor("table", TensorProto.FLOAT, [4, 3],
                               np.eye(4, 3, dtype=np.float32).ravel().tolist())
    nodes = [helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64),
             helper.make_node("Gather", ["table", "i"], ["g"], axis=0),
             helper.make_node("Flatten", ["g"], ["probabilities"], axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "lookup", [x], [y], [table]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "lookup.onnx")
    values = [0, 1, 2, 9, 1, 0]  # 9: no such row in the table
    cases = [Case(None, Capture(endpoint="x", ts_ns=k + 1, latency_ms=1.0,
                                status=CaptureStatus.MISMATCH, label="0",
                                inputs=(TensorBlob.from_array("x", np.array([[v]], np.float32)),)))
             for k, v in enumerate(values)]
    result = replay(cases, [LocalOnnxTarget(tmp_path / "lookup.onnx", name="lookup")],
                    batch_size=64)
    run = result.runs[0]
    assert set(run.errors) == {3} and "out of" in run.errors[3].lower()
    assert run.prediction.tolist() == [0, 1, 2, -1, 1, 0]
    assert result.summaries()[0].error_reason == run.errors[3]


def test_fractional_captures_are_not_cut_to_fit_an_integer_input(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from app.core.replay_run import Columns

    x = helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", 1])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])
    table = helper.make_tensor("table", TensorProto.FLOAT, [4, 3],
                               np.eye(4, 3, dtype=np.float32).ravel().tolist())
    nodes = [helper.make_node("Gather", ["table", "x"], ["g"], axis=0),
             helper.make_node("Flatten", ["g"], ["probabilities"], axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "lookup", [x], [y], [table]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "ids.onnx")

    def replayed(values: list[float]):
        cases = [Case(None, Capture(
            endpoint="x", ts_ns=k + 1, latency_ms=1.0, status=CaptureStatus.MISMATCH,
            label="0", inputs=(TensorBlob.from_array("x", np.array([[v]], np.float32)),)))
            for k, v in enumerate(values)]
        return replay(cases, [LocalOnnxTarget(tmp_path / "ids.onnx", name="ids")])

    whole = replayed([0.0, 1.0, 2.0])  # ids captured as floats: taken as they are
    assert whole.runs[0].prediction.tolist() == [0, 1, 2] and not whole.runs[0].errors
    cut = replayed([0.0, 2.7, 1.0])  # astype would have made 2.7 the id 2
    (s,) = cut.summaries()
    assert s.unanswered == 3 and "not whole numbers" in s.unanswered_reason
    assert "2.7" in s.unanswered_reason
    # And an empty answer to one row is refused, not kept as an answer without a class.
    with pytest.raises(ReplayError, match="one row per input row"):
        Columns(1).place(slice(0, 1), 1, [("probabilities", np.zeros((0, 3), np.float32))])


def test_a_version_that_takes_other_inputs_is_refused_once_with_the_reason(cases, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 10])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Softmax", ["features"], ["probabilities"], axis=1)], "wide", [x],
        [y]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "wide10.onnx")
    result = replay(cases[:50], [LocalOnnxTarget(tmp_path / "wide10.onnx")])
    (summary,) = result.summaries()
    assert summary.unanswered == 50 and summary.errors == 0  # no verdict drawn from it
    assert summary.fixed == summary.still_failing == summary.newly_broken == 0
    assert summary.unanswered_reason == ("wide10 takes features as [batch, 10]; the captures "
                                         "hold [13] per row")


@pytest.mark.parametrize("batch_size", [7, 64])
def test_each_row_carries_its_batch_time_shared_among_its_rows(cases, versions, batch_size):
    # A short last batch too. The recording draws its captures at random, so their number
    # varies from run to run: drop one when it happens to fill the last batch.
    if len(cases) % batch_size == 0:
        cases = cases[:-1]
    assert len(cases) % batch_size
    result = replay(cases, targets(versions[:1]), batch_size=batch_size, requests=0)
    latency = result.runs[0].latency_ms
    assert np.isfinite(latency).all() and (latency > 0).all()
    batches = [latency[s:s + batch_size] for s in range(0, len(cases), batch_size)]
    assert all(len(set(b.tolist())) == 1 for b in batches)
    # Each batch its own time: far more distinct figures than one per version.
    assert len(set(latency.tolist())) > len(batches) // 2


def test_a_small_replay_is_not_timed_on_one_hiccup(cases, versions):
    """A few hundred cases are one batch per version: one slow call (another thread, a page
    fault) would have been the version's whole latency. Its time is the median of a few."""
    import time

    class Hiccup(LocalOnnxTarget):
        calls = 0

        def run_adapted(self, feeds):
            self.calls += 1
            if self.calls == 2:  # the first timed call (the first is the untimed warm-up)
                time.sleep(0.05)
            return super().run_adapted(feeds)

    small = cases[:300]
    target = Hiccup(versions[0])
    result = replay(small, [target], batch_size=1024, requests=0)
    per_batch_ms = result.runs[0].latency_ms[0] * len(small)
    assert target.calls == 1 + 5  # the warm-up, then the one batch five times
    assert per_batch_ms < 50  # the 50 ms stall was one call of five, not the figure
    plain = replay(small, [LocalOnnxTarget(versions[0])], batch_size=1024)
    assert np.array_equal(plain.runs[0].outputs["probabilities"],
                          result.runs[0].outputs["probabilities"], equal_nan=True)


def test_progress_reaches_one_and_cancel_stops_between_batches(cases, versions):
    seen: list[float] = []
    replay(cases, targets(versions), batch_size=64, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    calls = {"n": 0}

    def cancelled() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    result = replay(cases, targets(versions), batch_size=64, cancelled=cancelled)
    assert result.cancelled and len(result.runs) < 3


def test_a_saved_replay_reopens_as_it_was(demo_db, versions):
    store = Store(demo_db)
    try:
        selection = Selection(kinds=("mismatch",), limit=50, controls=30)
        cases = select_cases(store, selection)
        result = replay(cases, targets(versions), selection=selection)
        rid = save_replay(store, result, title="demo")
        reopened = load_replay(store, rid)
        assert [s.to_json() for s in reopened.summaries()] == \
            [s.to_json() for s in result.summaries()]
        assert reopened.first_failing() == result.first_failing()
        assert reopened.selection == selection
        assert [c.capture_id for c in reopened.cases] == [c.capture_id for c in cases]
        for j in range(3):
            for i in range(len(cases)):
                a, b = reopened.runs[j].output(i), result.runs[j].output(i)
                assert [n for n, _ in a] == [n for n, _ in b]
                assert all(np.array_equal(x, y, equal_nan=True)
                           for (_, x), (_, y) in zip(a, b, strict=True))
        assert store.replays()[0]["id"] == rid
        with pytest.raises(ReplayError, match="no replay"):
            load_replay(store, rid + 100)
    finally:
        store.close()


def test_selection_filters_by_kind_label_time_and_version(demo_db):
    store = Store(demo_db)
    try:
        everything = select_cases(store, Selection(limit=10_000, controls=0))
        two = select_cases(store, Selection(kinds=("mismatch",), label="2", controls=0))
        assert two and all(c.capture.status is CaptureStatus.MISMATCH
                           and c.capture.label == "2" for c in two)
        mid = sorted(c.capture.ts_ns for c in everything)[len(everything) // 2]
        late = select_cases(store, Selection(start_ns=mid, limit=10_000, controls=0))
        assert 0 < len(late) < len(everything) and all(c.capture.ts_ns >= mid for c in late)
        assert select_cases(store, Selection(model_version="nope", controls=5)) == []
        controls = select_cases(store, Selection(limit=0, controls=7))
        assert len(controls) == 7 and all(c.control and not c.capture.failed for c in controls)
    finally:
        store.close()


def test_targets_refuse_what_they_cannot_run(tmp_path):
    with pytest.raises(ReplayError, match="does not exist"):
        open_target(str(tmp_path / "missing.onnx"))
    with pytest.raises(ReplayError, match=r"not available|not installed"):
        open_target(str(tmp_path / "m.onnx"), provider="tensorrt")
    with pytest.raises(ReplayError, match="ONNX files, v2"):
        open_target("torchserve+http://127.0.0.1:1/m")
    with pytest.raises(ReplayError, match="batch size"):
        replay([], [], batch_size=0)


def test_wide_outputs_are_judged_like_numpy_would(tmp_path):
    """More than a few classes go through the onnxruntime reducer; same answers as numpy."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((13, 10)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["m"]),
         helper.make_node("Softmax", ["m"], ["probabilities"], axis=-1)], "wide",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 13])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, tmp_path / "wide.onnx")
    rows = rng.random((50, 13)).astype(np.float32)
    rows[7, 3] = np.nan
    cases = [Case(i, Capture("x", i, 1.0, CaptureStatus.MISMATCH,
                             inputs=(TensorBlob.from_array("features", rows[i:i + 1]),),
                             label="4")) for i in range(50)]
    result = replay(cases, [LocalOnnxTarget(tmp_path / "wide.onnx")])
    run = result.runs[0]
    probs = run.outputs["probabilities"]
    ok = np.arange(50) != 7
    assert np.array_equal(run.prediction[ok], probs[ok].argmax(axis=1))
    assert np.allclose(run.confidence[ok], probs[ok].max(axis=1))
    assert not run.finite[7] and run.prediction[7] == -1 and result.failing[0][7]
    assert np.array_equal(result.failing[0][ok], run.prediction[ok] != 4)


def test_captures_from_other_servers_are_fed_by_position_dtype_and_rank(cases, versions):
    """A tap or v2 capture names its tensor differently, may hold float64 and may lack the
    batch dimension; the local version still gets its own input, as float32 with a batch."""
    source = [c for c in cases if c.capture.status is CaptureStatus.MISMATCH][:5]
    renamed = [Case(c.capture_id, Capture(
        "v2+http://x/models/m", c.capture.ts_ns, 1.0, c.capture.status,
        inputs=(TensorBlob.from_array("input-0", c.capture.inputs[0].to_array()
                                      .astype(np.float64).reshape(-1)),),
        label=c.capture.label)) for c in source]
    a = replay(source, targets(versions[:1]))
    b = replay(renamed, targets(versions[:1]))
    assert not b.runs[0].errors
    assert np.array_equal(a.runs[0].prediction, b.runs[0].prediction)
    assert np.allclose(a.runs[0].outputs["probabilities"], b.runs[0].outputs["probabilities"],
                       atol=1e-6)
