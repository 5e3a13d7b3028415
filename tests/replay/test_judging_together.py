"""Versions judged together (their first outputs side by side in one block, one set of
whole-array passes) get exactly the verdict columns each gets judged alone, including when
one version answers in another shape, errs on some rows, or the replay is cancelled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.core.replay import Selection, replay, select_case_set
from app.core.replay_run import run_version
from app.core.replay_targets import LocalOnnxTarget
from app.core.store import Store
from bench._common import write_mlp


@pytest.fixture
def prepared(demo_db: Path):
    store = Store(demo_db)
    try:
        return select_case_set(store, Selection(limit=10_000, controls=10_000))
    finally:
        store.close()


def alone(target, prepared, batch_size: int):
    return run_version(target, prepared, batch_size, lambda _: True)


def label_first(model_path: Path, out: Path) -> Path:
    """The model as scikit-learn exports a classifier: an int64 label output, then its
    probabilities."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(model_path)
    probs = model.graph.output[0].name
    model.graph.node.append(helper.make_node("ArgMax", [probs], ["label"], axis=1, keepdims=0))
    model.graph.output.insert(0, helper.make_tensor_value_info("label", TensorProto.INT64,
                                                               ["n"]))
    onnx.save(model, out)
    return out


def assert_same_judgement(together, by_itself) -> None:
    assert together.version == by_itself.version
    assert np.array_equal(together.prediction, by_itself.prediction)
    assert np.array_equal(together.confidence, by_itself.confidence, equal_nan=True)
    assert np.array_equal(together.finite, by_itself.finite)


def test_three_versions_judged_together_match_each_judged_alone(prepared, versions):
    targets = [LocalOnnxTarget(v) for v in versions]
    result = replay(prepared, targets, batch_size=64)
    firsts = [next(iter(r.outputs.values())) for r in result.runs]
    # They did share one block (else this test checks nothing new).
    assert all(np.shares_memory(firsts[0].base, f) for f in firsts[1:])
    nan_rows = ~result.runs[0].finite
    assert nan_rows.any() and (result.runs[0].prediction[nan_rows] == -1).all()
    for together, t in zip(result.runs, targets, strict=True):
        assert_same_judgement(together, alone(t, prepared, 64))


def test_a_version_answering_in_another_shape_is_judged_alone(prepared, versions, tmp_path):
    wide = LocalOnnxTarget(write_mlp(tmp_path / "wide.onnx", 13, 32))  # 16 classes, not 3
    targets = [LocalOnnxTarget(versions[0]), wide, LocalOnnxTarget(versions[2])]
    result = replay(prepared, targets, batch_size=128)
    assert next(iter(result.runs[1].outputs.values())).shape[1] == 16
    for together, t in zip(result.runs, targets, strict=True):
        assert_same_judgement(together, alone(t, prepared, 128))


def test_a_version_that_could_not_be_asked_leaves_the_others_judged_right(
        prepared, versions, tmp_path):
    # A model taking integers: the captures hold NaN and fractions, so it is never asked,
    # and the versions either side of it are no longer neighbours in the block.
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
         helper.make_node("Softmax", ["xf"], ["p"], axis=1)], "ints",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["n", 13])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["n", 13])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "ints.onnx")
    targets = [LocalOnnxTarget(versions[0]), LocalOnnxTarget(tmp_path / "ints.onnx"),
               LocalOnnxTarget(versions[2])]
    result = replay(prepared, targets, batch_size=100)
    assert len(result.runs[1].errors) == len(prepared) and not result.runs[1].outputs
    assert (result.runs[1].prediction == -1).all()
    for together, t in zip(result.runs, targets, strict=True):
        assert_same_judgement(together, alone(t, prepared, 100))


def test_a_cancelled_replay_judges_the_versions_it_finished(prepared, versions):
    targets = [LocalOnnxTarget(v) for v in versions]
    seen: list[float] = []
    result = replay(prepared, targets, batch_size=50, progress=seen.append,
                    cancelled=lambda: bool(seen) and seen[-1] > 0.5)
    assert result.cancelled and len(result.runs) == 1
    assert_same_judgement(result.runs[0], alone(targets[0], prepared, 50))


def test_a_model_answering_its_label_first_gets_the_same_verdicts(demo_db, versions, tmp_path):
    # wine-v2 as scikit-learn exports a classifier: an int64 label output, then the
    # probabilities. Its low-confidence captures must be judged on those probabilities.
    from app.core.replay import Criteria, select_cases

    label_first(versions[1], tmp_path / "wine-v2-sk.onnx")
    store = Store(demo_db)
    try:
        cases = select_cases(store, Selection(limit=10_000, controls=10_000))
    finally:
        store.close()
    result = replay(cases, [LocalOnnxTarget(versions[1]),
                            LocalOnnxTarget(tmp_path / "wine-v2-sk.onnx")],
                    criteria=Criteria(min_confidence=0.6))
    plain, labelled = result.runs
    assert np.array_equal(plain.prediction, labelled.prediction)
    assert np.array_equal(plain.confidence, labelled.confidence, equal_nan=True)
    assert np.array_equal(result.failing[0], result.failing[1])
    low = np.array([c.capture.status == "low_confidence" for c in cases])
    assert result.failing[1][low].any()  # some low-confidence cases still fail on v2


def test_the_case_view_draws_the_scores_of_a_model_answering_its_label_first(
        prepared, versions, tmp_path):
    from app.gui.replay_models import ResultTableModel

    label_first(versions[1], tmp_path / "wine-v2-sk.onnx")
    result = replay(prepared, [LocalOnnxTarget(versions[1]),
                               LocalOnnxTarget(tmp_path / "wine-v2-sk.onnx")])
    table = ResultTableModel()
    table.set_result(result)
    plain, labelled = table.answers(0)
    assert labelled.scores is not None and len(labelled.scores) == 3  # bars, not the label
    assert np.array_equal(plain.scores, labelled.scores, equal_nan=True)
    assert plain.confidence == labelled.confidence


def test_a_version_giving_no_confidence_does_not_fix_low_confidence_failures(
        prepared, versions, tmp_path):
    # wine-v1 answering log-probabilities: the same classes, but no confidence to read.
    # Nothing shows its low-confidence failures fixed; its unlabelled controls are not
    # broken by the lack of one either.
    import onnx
    from onnx import helper

    from app.core.replay import NEWLY_BROKEN, STILL_FAILING

    model = onnx.load(versions[0])
    probs = model.graph.output[0].name
    model.graph.node.append(helper.make_node("Log", [probs], ["log_probabilities"]))
    model.graph.output[0].name = "log_probabilities"
    onnx.save(model, tmp_path / "wine-v1-log.onnx")
    result = replay(prepared, [LocalOnnxTarget(tmp_path / "wine-v1-log.onnx")])
    low = [i for i, k in enumerate(prepared.kinds) if k == "low_confidence"]
    assert low and np.isnan(result.runs[0].confidence[low]).all()
    assert all(result.verdict(i, 0) == STILL_FAILING for i in low)
    controls = np.flatnonzero(prepared.control)
    assert not any(result.verdict(int(i), 0) == NEWLY_BROKEN and prepared.label_texts[i] is None
                   for i in controls)
