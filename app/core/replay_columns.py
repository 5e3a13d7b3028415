"""Judging a version's output columns: per row its top class, its confidence and whether
every float output is finite, read from stacked outputs in whole-array passes.
Thread: the replay's. Apart from ``replay_run`` because it is plain numpy (and one tiny
onnxruntime graph) over arrays, knowing nothing of versions, batches or targets: the
throughput bench's floor calls it alone (``bench/replay.py``). ``replay_run`` re-exports it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

NO_CLASS = -1

__all__ = ["NO_CLASS", "judge_columns"]


@functools.lru_cache(maxsize=8)
def _reducer(k: int) -> ort.InferenceSession:
    """A tiny onnxruntime graph: per row ArgMax, ReduceMax, ReduceMin, ReduceSum of (n, k)
    float32. onnxruntime's reductions over the last axis are several times faster than
    numpy's axis=1 ones on rows of a few dozen values."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", k])
    outs = [helper.make_tensor_value_info(name, kind, ["n"]) for name, kind in (
        ("arg", TensorProto.INT64), ("top", TensorProto.FLOAT), ("low", TensorProto.FLOAT),
        ("total", TensorProto.FLOAT))]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [helper.make_node("ArgMax", ["x"], ["arg"], axis=1, keepdims=0),
             helper.make_node("ReduceMax", ["x", "axes"], ["top"], keepdims=0),
             helper.make_node("ReduceMin", ["x", "axes"], ["low"], keepdims=0),
             helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0)]
    model = helper.make_model(helper.make_graph(nodes, "judge", [x], outs, [axes]),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


_NARROW = 4  # rows up to this wide are judged by numpy over a transposed copy


@dataclass(slots=True)
class _RowStats:
    """Per row of a float output: first index of the maximum, max, sum (in the output's
    float type, so a NaN or inf in a row, or a float32 overflow, makes it non-finite) and,
    computed on first need, min."""

    arg: np.ndarray
    top: np.ndarray
    total: np.ndarray
    low: np.ndarray | None = None
    cols: np.ndarray | None = None  # the transposed copy the narrow path reduced over

    def row_min(self) -> np.ndarray:
        if self.low is None:
            self.low = np.minimum.reduce(self.cols, axis=0)
        return self.low


def _row_reductions(first: np.ndarray) -> _RowStats:
    """Up to ``_NARROW`` classes, reductions over axis 0 of the transposed copy: numpy's
    axis=1 reductions over a few values per row cost 10-20x more than these contiguous
    passes. Wider rows go to onnxruntime: measured in a replay, a transposed copy of a
    16-wide output (its inference just evicted it from cache) cost more than it saved.
    The narrow path leaves out the row minimum: it is needed only when some row is not a
    probability, which ``judge_columns`` checks on the whole array first."""
    k = first.shape[1]
    if k > _NARROW:
        if first.dtype == np.float32:
            arg, top, low, total = _reducer(k).run(None, {"x": np.ascontiguousarray(first)})
            return _RowStats(arg, top, total, low)
        return _RowStats(first.argmax(axis=1), first.max(axis=1), first.sum(axis=1),
                         first.min(axis=1))
    cols = np.ascontiguousarray(first.T)  # (k, n): reductions over axis 0 run contiguous
    top = np.maximum.reduce(cols, axis=0)  # NaN propagates
    with np.errstate(over="ignore", invalid="ignore"):  # inf sums are judged after
        total = np.add.reduce(cols, axis=0)
    return _RowStats(_first_index_of(cols, top), top, total, cols=cols)


def _first_index_of(cols: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Per column of ``cols`` (k, n), the first row holding ``top``: how many leading values
    fall short of it, two cheap passes per class. A NaN column gets a meaningless index (its
    row is judged not finite and loses its class)."""
    behind = np.not_equal(cols[0], top)
    arg = behind.view(np.int8).copy()
    for j in range(1, cols.shape[0] - 1):
        np.logical_and(behind, np.not_equal(cols[j], top), out=behind)
        np.add(arg, behind.view(np.int8), out=arg)
    return arg.astype(np.int64)


def _row_sums(flat: np.ndarray) -> np.ndarray:
    """Row sums in float64 (no overflow from float32 rows), column by column when narrow."""
    if flat.shape[1] > 16:
        return flat.sum(axis=1, dtype=np.float64)
    cols = np.ascontiguousarray(flat.T)
    total = cols[0].astype(np.float64)
    for j in range(1, cols.shape[0]):
        total += cols[j]
    return total


_PROB_TOLERANCE = 1e-3  # a row is a probability when it is >= 0 and sums to 1 within this


def judge_columns(outputs: dict[str, np.ndarray], n: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top class, confidence and finiteness per row, from the first output. Whole-column
    passes only; the first output's row sums double as its finiteness check, and whether
    every row is a probability is answered by three whole-array reductions before any
    per-row test (a classifier's rows are nearly always all probabilities or none)."""
    if not outputs or n == 0:
        return (np.full(n, NO_CLASS, dtype=np.int64), np.full(n, np.nan),
                np.ones(n, dtype=bool))
    first = next(iter(outputs.values())).reshape(n, -1)
    scores = _scores_beside_label(outputs, first, n)
    if scores is not None:
        # A label first and the class scores after it (scikit-learn's exports): the label
        # is the class, the scores give its confidence and, with it, low-confidence verdicts.
        others = list(outputs)[1:]
        others.remove(scores)
        _, confidence, finite = judge_columns(
            {scores: outputs[scores], **{k: outputs[k] for k in others}}, n)
        prediction = first[:, 0].astype(np.int64)
        np.putmask(prediction, ~finite, NO_CLASS)
        return prediction, confidence, finite
    total = None
    if first.dtype.kind == "f" and first.shape[1] >= 2:
        stats = _row_reductions(first)
        prediction, total = stats.arg, stats.total
        if len(outputs) == 1 and _probabilities_but_nan(first, stats):
            # A classifier's usual answer, where the only rows that are not finite
            # probabilities are those holding a NaN (a NaN input): a NaN sum marks them.
            nan_rows = np.isnan(total)
            if not nan_rows.any():
                return prediction, stats.top, np.ones(n, dtype=bool)
            np.putmask(prediction, nan_rows, NO_CLASS)
            top = stats.top
            if stats.low is not None:  # onnxruntime's ReduceMax may skip a NaN
                np.putmask(top, nan_rows, np.nan)
            return prediction, top, ~nan_rows
        confidence = _confidence(first, stats)
    elif first.dtype.kind in "iu" and first.shape[1] == 1:
        prediction = first[:, 0].astype(np.int64)  # a model that outputs the class itself
    else:
        prediction = np.full(n, NO_CLASS, dtype=np.int64)
    finite = None
    for k, o in enumerate(outputs.values()):
        if o.dtype.kind != "f":
            continue
        if k == 0 and total is not None:
            row_ok = np.isfinite(total)  # NaN and inf survive a sum
            if row_ok.all():
                continue
            # An infinite sum of finite values is an overflow: look at those rows alone (a
            # NaN sum always comes from a non-finite value).
            suspect = np.flatnonzero(np.isinf(total))
            if suspect.size:
                row_ok[suspect] = np.isfinite(first[suspect]).all(axis=1)
                if row_ok.all():
                    continue
        elif np.isfinite(o).all():  # one flat pass when all finite
            continue
        else:
            row_ok = np.isfinite(_row_sums(o.reshape(n, -1)))
        finite = row_ok if finite is None else finite & row_ok
    if finite is None:
        finite = np.ones(n, dtype=bool)
    else:
        np.putmask(prediction, ~finite, NO_CLASS)
    if total is None:
        return prediction, np.full(n, np.nan), finite
    return prediction, confidence, finite


def _scores_beside_label(outputs: dict[str, np.ndarray], first: np.ndarray, n: int
                         ) -> str | None:
    """The name of the first float output of two or more values per row, when the first
    output is an integer class per row; else None."""
    if first.dtype.kind not in "iu" or first.shape[1] != 1 or len(outputs) < 2:
        return None
    return next((k for k, o in list(outputs.items())[1:]
                 if o.dtype.kind == "f" and o.size and o.size % n == 0 and o.size // n >= 2),
                None)


def _probabilities_but_nan(first: np.ndarray, stats: _RowStats) -> bool:
    """Whether every row without a NaN is >= 0 and sums to 1 (so is finite): three
    whole-array reductions that skip NaN. An inf anywhere, or a float32 sum that overflowed,
    answers no, and the per-row rules take over."""
    low, total = stats.low, stats.total
    return bool(np.fmin.reduce(first if low is None else low, axis=None) >= 0.0
                and np.fmax.reduce(total) < 1.0 + _PROB_TOLERANCE
                and np.fmin.reduce(total) > 1.0 - _PROB_TOLERANCE)


def _confidence(first: np.ndarray, stats: _RowStats) -> np.ndarray:
    """Each row's top value where the row is a probability (>= 0, sums to 1), else NaN; in
    the output's own float type. The narrow path has no row minimum yet, and its ``top``
    already carries a row's NaN."""
    top, total, low = stats.top, stats.total, stats.low
    hi, lo = 1.0 + _PROB_TOLERANCE, 1.0 - _PROB_TOLERANCE
    # fmin/fmax skip NaN, so rows holding NaN do not spoil the whole-array answer; an inf
    # anywhere fails it and sends the array to the per-row test.
    if (np.fmin.reduce(first if low is None else low, axis=None) >= 0.0
            and np.fmax.reduce(total) < hi and np.fmin.reduce(total) > lo):
        if low is not None:
            nan_rows = np.isnan(total)
            if nan_rows.any():
                top[nan_rows] = np.nan
        return top
    not_prob = stats.row_min() < 0.0
    not_prob |= ~((total < hi) & (total > lo))  # NaN sums are not probabilities either
    top[not_prob] = np.nan
    return top
