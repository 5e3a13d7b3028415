"""The batched part of a replay: cases prepared once as columns (stacked inputs, labels, kinds),
then each version run over them in batches, its outputs kept as stacked columns.
Thread: the replay's. No Python work per case inside the version loop: per batch one
slice, one inference call and one copy per output; judging is whole-array numpy.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from app.core.domain import Capture, CaptureStatus
from app.core.replay_targets import ReplayError, Target, TargetDown, error_text

log = logging.getLogger(__name__)

NO_CLASS = -1
_NO_LABEL_MATCH = -2  # a label that is not a class index never equals a predicted index
_NO_LABEL = -3  # no label at all (never equals a prediction either)
_LOW, _SLOW = CaptureStatus.LOW_CONFIDENCE, CaptureStatus.SLOW
_KIND_CODES = {s: k for k, s in enumerate(CaptureStatus)}


@dataclass(frozen=True, slots=True)
class Case:
    capture_id: int | None
    capture: Capture
    control: bool = False


@dataclass
class Group:
    """Cases whose inputs share names, dtypes and row shapes, stacked into one array each."""

    rows: np.ndarray | None  # case indices; None when the group is every case, in order
    feeds: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.feeds.values())))


@dataclass
class CaseSet:
    """Cases as columns, prepared once and shared by every version of a replay."""

    cases: list[Case]
    groups: list[Group]
    singles: list[int]  # cases that are not one row each: run alone
    labels: np.ndarray  # int64 class index, _NO_LABEL_MATCH when not an index
    has_label: np.ndarray
    low_confidence: np.ndarray  # captured as LOW_CONFIDENCE
    slow: np.ndarray  # captured as SLOW
    control: np.ndarray

    def __len__(self) -> int:
        return len(self.cases)


def _label_code(label: str | None) -> int:
    if label is None:
        return _NO_LABEL
    return int(label) if label.lstrip("-").isdigit() else _NO_LABEL_MATCH


def prepare(cases: Sequence[Case]) -> CaseSet:
    """Group and stack the cases' input bytes; label and kind columns. Column-wise with
    C-level iteration (map, attrgetter): this runs over every case of a replay."""
    cases = list(cases)
    n = len(cases)
    caps = list(map(attrgetter("capture"), cases))
    raw_labels = list(map(attrgetter("label"), caps))
    codes = {lab: _label_code(lab) for lab in set(raw_labels)}
    labels = np.fromiter(map(codes.__getitem__, raw_labels), dtype=np.int64, count=n)
    has_label = labels != _NO_LABEL
    kinds = np.fromiter(map(_KIND_CODES.__getitem__, map(attrgetter("status"), caps)),
                        dtype=np.int8, count=n)
    control = np.fromiter(map(attrgetter("control"), cases), dtype=bool, count=n)
    inputs = list(map(attrgetter("inputs"), caps))
    groups: list[Group] = []
    singles: list[int] = []
    if n and set(map(len, inputs)) == {1}:
        firsts = list(map(itemgetter(0), inputs))
        keys = set(map(attrgetter("name", "dtype", "shape"), firsts))
        if len(keys) == 1:
            name, dtype, shape = next(iter(keys))
            if shape and shape[0] == 1:
                data = b"".join(map(attrgetter("data"), firsts))
                groups = [Group(None, {name: np.frombuffer(data, dtype=np.dtype(dtype))
                                       .reshape((n, *shape[1:]))})]
    if n and not groups:
        groups, singles = _grouped(inputs)
    return CaseSet(cases, groups, singles, labels, has_label, kinds == _KIND_CODES[_LOW],
                   kinds == _KIND_CODES[_SLOW], control)


def _grouped(inputs: list[tuple]) -> tuple[list[Group], list[int]]:
    """The general case: several input signatures, several inputs, or odd shapes."""
    keyed: dict[tuple, tuple[list[int], list[list[bytes]]]] = {}
    singles: list[int] = []
    for i, blobs in enumerate(inputs):
        if not blobs or any(not b.shape or b.shape[0] != 1 for b in blobs):
            singles.append(i)
            continue
        key = tuple((b.name, b.dtype, b.shape) for b in blobs)
        entry = keyed.get(key)
        if entry is None:
            entry = keyed[key] = ([], [[] for _ in blobs])
        entry[0].append(i)
        for k, b in enumerate(blobs):
            entry[1][k].append(b.data)
    groups = []
    every = len(keyed) == 1 and not singles
    for key, (rows, datas) in keyed.items():
        feeds = {name: np.frombuffer(b"".join(datas[k]), dtype=np.dtype(dtype)).reshape(
            (len(rows), *shape[1:])) for k, (name, dtype, shape) in enumerate(key)}
        groups.append(Group(None if every else np.asarray(rows, dtype=np.int64), feeds))
    return groups, singles


@dataclass
class VersionRun:
    """One version's answers to every case, as columns."""

    version: str
    location: str
    prediction: np.ndarray  # int64 class index, NO_CLASS when none
    confidence: np.ndarray  # float, NaN when the output is not a probability
    latency_ms: np.ndarray  # the batch's wall time shared among its rows
    finite: np.ndarray  # bool: every float output of the row is finite
    errors: dict[int, str] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # stacked, one row per case
    irregular: dict[int, list[tuple[str, np.ndarray]]] = field(default_factory=dict)

    def output(self, i: int) -> list[tuple[str, np.ndarray]]:
        """Case ``i``'s outputs (name, array with a batch dim of 1); empty after an error."""
        if i in self.errors:
            return []
        if i in self.irregular:
            return self.irregular[i]
        return [(n, a[i:i + 1]) for n, a in self.outputs.items()]


class Columns:
    """Stacked output columns for n cases, allocated from the first answer that fits."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.outputs: dict[str, np.ndarray] = {}
        self.irregular: dict[int, list[tuple[str, np.ndarray]]] = {}

    def _allocate(self, outs: list[tuple[str, np.ndarray]]) -> None:
        for name, o in outs:
            col = np.empty((self.n, *o.shape[1:]), dtype=o.dtype)
            col.fill(np.nan if o.dtype.kind in "fc" else 0)
            self.outputs[name] = col

    def place(self, rows: slice | np.ndarray, k: int, outs: list[tuple[str, np.ndarray]]
              ) -> None:
        """Put ``k`` rows of answers at ``rows`` (a slice, or case indices)."""
        if not self.outputs and all(o.ndim >= 1 and o.shape[0] == k for _, o in outs):
            self._allocate(outs)
        cols = self.outputs
        if len(outs) == len(cols):
            try:
                for name, o in outs:
                    col = cols[name]
                    if o.shape[0] != k or o.shape[1:] != col.shape[1:]:
                        raise ValueError
                    col[rows] = o
                return
            except (KeyError, ValueError, IndexError):
                pass
        if k == 1:
            i = rows.start if isinstance(rows, slice) else int(rows[0])
            self.irregular[i] = list(outs)
        else:
            raise ReplayError("outputs do not have one row per input row")


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


def _row_reductions(first: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                  np.ndarray]:
    """argmax, max, min and sum of each row (a NaN anywhere in a row makes its sum NaN).
    For a few classes, column by column: numpy's axis=1 reductions over 3 values per row
    cost ~20x more than these contiguous passes; wider rows go to onnxruntime."""
    n, k = first.shape
    if k > 4:
        if first.dtype == np.float32:
            arg, top, low, total = _reducer(k).run(None, {"x": np.ascontiguousarray(first)})
            return arg, top, low, total
        return first.argmax(axis=1), first.max(axis=1), first.min(axis=1), first.sum(axis=1)
    cols = np.ascontiguousarray(first.T)
    top, low, total = cols[0].copy(), cols[0].copy(), cols[0].astype(np.float64)
    arg = np.zeros(n, dtype=np.int64)
    for j in range(1, k):
        c = cols[j]
        np.copyto(arg, j, where=c > top)
        np.maximum(top, c, out=top)
        np.minimum(low, c, out=low)
        total += c
    return arg, top, low, total


def _row_sums(flat: np.ndarray) -> np.ndarray:
    """Row sums in float64 (no overflow from float32 rows), column by column when narrow."""
    if flat.shape[1] > 16:
        return flat.sum(axis=1, dtype=np.float64)
    cols = np.ascontiguousarray(flat.T)
    total = cols[0].astype(np.float64)
    for j in range(1, cols.shape[0]):
        total += cols[j]
    return total


def judge_columns(outputs: dict[str, np.ndarray], n: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top class, confidence and finiteness per row, from the first output."""
    prediction = np.full(n, NO_CLASS, dtype=np.int64)
    confidence = np.full(n, np.nan)
    finite = np.ones(n, dtype=bool)
    if not outputs or n == 0:
        return prediction, confidence, finite
    first = next(iter(outputs.values())).reshape(n, -1)
    total = None
    if first.dtype.kind == "f" and first.shape[1] >= 2:
        prediction, top, low, total = _row_reductions(first)
    for k, o in enumerate(outputs.values()):
        if o.dtype.kind == "f" and not np.isfinite(o).all():  # one flat pass when all finite
            sums = total if k == 0 and total is not None else _row_sums(o.reshape(n, -1))
            finite &= np.isfinite(sums)  # NaN and inf survive a float64 sum
    if total is not None:
        is_prob = (low >= 0.0) & (np.abs(total - 1.0) < 1e-3)
        confidence = np.where(is_prob, top, np.nan)  # the output's own float type
        if not finite.all():
            prediction[~finite] = NO_CLASS
    elif first.dtype.kind in "iu" and first.shape[1] == 1:
        prediction = first[:, 0].astype(np.int64)  # a model that outputs the class itself
    return prediction, confidence, finite


def _judge_one(outs: list[tuple[str, np.ndarray]]) -> tuple[int, float, bool]:
    if not outs:
        return NO_CLASS, float("nan"), True
    p, c, f = judge_columns({n: o.reshape(1, -1) for n, o in outs}, 1)
    return int(p[0]), float(c[0]), bool(f[0])


def run_version(target: Target, prepared: CaseSet, batch_size: int,
                tick: Callable[[int], bool]) -> VersionRun | None:
    """Every case on one target; None when ``tick`` says stop (cancelled)."""
    n = len(prepared)
    latency = np.full(n, np.nan)
    errors: dict[int, str] = {}
    columns = Columns(n)
    perf = time.perf_counter

    def one(i: int, feeds: dict[str, np.ndarray]) -> None:
        t0 = perf()
        try:
            columns.place(slice(i, i + 1), 1, target.run(feeds))
            latency[i] = (perf() - t0) * 1e3
        except Exception as exc:
            errors[i] = error_text(exc)

    for group in prepared.groups:
        m = len(group)
        index = np.arange(m) if group.rows is None else group.rows
        try:
            feeds = target.adapt(group.feeds)  # rename/cast once for the whole group
        except Exception as exc:
            for i in index.tolist():
                errors[i] = error_text(exc)
            if not tick(m):
                return None
            continue
        run, names = target.run_adapted, list(feeds)
        if not getattr(target, "warmed", False):
            # One untimed call per target: a session's first run allocates, and would be
            # charged to the first batch's rows.
            with contextlib.suppress(Exception):
                run({k: v[:1] for k, v in feeds.items()})
            target.warmed = True
        only = names[0] if len(names) == 1 else None
        for s in range(0, m, batch_size):
            e = min(s + batch_size, m)
            rows = slice(s, e) if group.rows is None else group.rows[s:e]
            t0 = perf()
            try:
                outs = run({only: feeds[only][s:e]} if only else
                           {k: v[s:e] for k, v in feeds.items()})
                dt = perf() - t0
                columns.place(rows, e - s, outs)
                latency[rows] = dt * 1e3 / (e - s)
            except TargetDown as exc:
                for i in index[s:e].tolist():
                    errors[i] = str(exc)
            except Exception as exc:
                # One bad row must not sink its batch: find it by running the rows alone.
                log.debug("batch failed on %s (%s); row by row", target.name, exc)
                for j, i in zip(range(s, e), index[s:e].tolist(), strict=True):
                    one(i, {k: v[j:j + 1] for k, v in group.feeds.items()})
            if not tick(e - s):
                return None
    for i in prepared.singles:
        one(i, {b.name: b.to_array() for b in prepared.cases[i].capture.inputs})
        if not tick(1):
            return None
    prediction, confidence, finite = judge_columns(columns.outputs, n)
    for i, outs in columns.irregular.items():
        prediction[i], confidence[i], finite[i] = _judge_one(outs)
    if errors:
        bad = np.fromiter(errors, dtype=np.int64, count=len(errors))
        prediction[bad], confidence[bad], finite[bad] = NO_CLASS, np.nan, True
    return VersionRun(target.name, target.location, prediction, confidence, latency, finite,
                      errors, columns.outputs, columns.irregular)
