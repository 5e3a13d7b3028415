"""``judge_columns`` (top class, confidence, finiteness per row, whole-array passes with a
whole-array shortcut for "every row is a probability") gives what a plain per-row reading of
the rules gives, on the awkward rows: NaN, +-inf, logits, float32 sums that overflow, ties,
and arrays that mix probabilities with other rows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.core.replay_run import NO_CLASS, judge_columns

TOLERANCE = 1e-3


def reference(rows: np.ndarray) -> tuple[list[int], list[float], list[bool]]:
    """The rules, one row at a time in plain Python."""
    preds, confs, finite = [], [], []
    for row in rows.tolist():
        ok = all(math.isfinite(v) for v in row)
        finite.append(ok)
        if not ok:
            preds.append(NO_CLASS)
            confs.append(math.nan)
            continue
        top = max(row)
        preds.append(row.index(top))  # the first index of the maximum
        with np.errstate(over="ignore"):
            total = float(sum(np.float32(v) for v in row) if rows.dtype == np.float32
                          else sum(row))
        is_prob = min(row) >= 0 and abs(total - 1.0) < TOLERANCE
        confs.append(top if is_prob else math.nan)
    return preds, confs, finite


def probabilities(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    x = rng.random((n, k)).astype(np.float32)
    return x / x.sum(axis=1, keepdims=True)


def check(rows: np.ndarray) -> None:
    pred, conf, finite = judge_columns({"out": rows}, len(rows))
    want_pred, want_conf, want_finite = reference(rows)
    assert finite.tolist() == want_finite
    assert pred.tolist() == want_pred
    assert np.allclose(conf, np.asarray(want_conf, dtype=np.float64), equal_nan=True,
                       rtol=0, atol=1e-7)
    assert pred.dtype == np.int64


@pytest.mark.parametrize("k", [2, 3, 4, 7, 16, 20])
def test_rows_that_are_all_probabilities(k):
    rng = np.random.default_rng(30 + k)
    rows = probabilities(rng, 300, k)
    rows[7] = 0.0
    rows[7, k - 1] = 1.0  # the last class, one-hot
    check(rows)
    _, conf, finite = judge_columns({"out": rows}, len(rows))
    assert finite.all() and not np.isnan(conf).any()


@pytest.mark.parametrize("k", [2, 3, 4, 7, 16, 20])
def test_probability_rows_with_nan_rows_among_them(k):
    rng = np.random.default_rng(k)
    rows = probabilities(rng, 500, k)
    rows[[3, 90, 499], 1] = np.nan
    check(rows)


@pytest.mark.parametrize("k", [2, 3, 4, 7, 16, 20])
def test_logits_and_mixed_rows_lose_their_confidence_row_by_row(k):
    rng = np.random.default_rng(10 + k)
    rows = probabilities(rng, 400, k)
    rows[:100] = rng.standard_normal((100, k)).astype(np.float32) * 4  # logits
    rows[200] *= 1.5  # sums to 1.5
    rows[201, 0] = -rows[201, 0]  # a negative entry
    check(rows)
    _, conf, _ = judge_columns({"out": rows}, len(rows))
    assert np.isnan(conf[:100]).all() and np.isnan(conf[[200, 201]]).all()
    assert not np.isnan(conf[300:]).any()


@pytest.mark.parametrize("k", [3, 6, 16, 20])
def test_infinities_are_not_finite_and_float32_overflow_is(k):
    rng = np.random.default_rng(20 + k)
    rows = probabilities(rng, 50, k)
    rows[4, 0] = np.inf
    rows[5, 1] = -np.inf
    rows[6, :2] = (np.inf, -np.inf)
    rows[7, :2] = (3e38, 3e38)  # finite values whose float32 sum overflows
    check(rows)
    _, _, finite = judge_columns({"out": rows}, len(rows))
    assert finite[7] and not finite[[4, 5, 6]].any()


@pytest.mark.parametrize("k", [5, 16, 20])
def test_ties_in_wide_rows_go_to_the_first_class(k):
    rows = np.zeros((k, k), dtype=np.float32)
    for i in range(k):
        rows[i, i:] = 1.0 / (k - i)  # row i: a tie from class i to the last
    check(rows)
    pred, _, _ = judge_columns({"out": rows}, len(rows))
    assert pred.tolist() == list(range(k))


def test_ties_go_to_the_first_class_and_float64_rows_work_too():
    rows = np.array([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4], [0.5, 0.5, 0.0],
                     [1 / 3, 1 / 3, 1 / 3]], dtype=np.float64)
    check(rows)
    pred, _, _ = judge_columns({"out": rows}, len(rows))
    assert pred.tolist() == [0, 1, 0, 0]


def test_a_second_output_with_nan_makes_the_row_not_finite():
    rng = np.random.default_rng(3)
    probs = probabilities(rng, 20, 3)
    extra = rng.random((20, 5)).astype(np.float32)
    extra[9, 2] = np.nan
    pred, conf, finite = judge_columns({"p": probs, "emb": extra}, 20)
    assert finite.tolist() == [i != 9 for i in range(20)]
    assert pred[9] == NO_CLASS and not np.isnan(conf[8])


@pytest.mark.parametrize("label_shape", [(300,), (300, 1)])
def test_a_label_output_before_the_scores_keeps_their_confidence(label_shape):
    # scikit-learn's ONNX exports answer the label first, then the class probabilities.
    rng = np.random.default_rng(4)
    probs = probabilities(rng, 300, 3)
    probs[[5, 77]] = np.nan
    label = probs.argmax(axis=1).astype(np.int64).reshape(label_shape)
    label[:3] = 2  # the label output has the last word on the class
    pred, conf, finite = judge_columns({"label": label, "probabilities": probs}, 300)
    _, alone_conf, alone_finite = judge_columns({"probabilities": probs}, 300)
    assert np.array_equal(conf, alone_conf, equal_nan=True) and not np.isnan(conf[10])
    assert np.array_equal(finite, alone_finite) and not finite[5] and not finite[77]
    want = label.reshape(-1).copy()
    want[[5, 77]] = NO_CLASS
    assert pred.tolist() == want.tolist()
