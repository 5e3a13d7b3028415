"""The batched part of a replay: cases prepared once as columns (stacked inputs, labels, kinds),
then each version run over them in batches, its outputs kept as stacked columns.
Thread: the replay's. No Python work per case inside the version loop: per batch one
slice, one inference call and one copy per output; judging is whole-array numpy.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from app.core.replay_cases import Case, CaseSet, Group, prepare, prepare_columns
from app.core.replay_targets import Cancelled, ReplayError, Target, TargetDown, error_text

log = logging.getLogger(__name__)

NO_CLASS = -1

__all__ = ["NO_CLASS", "Case", "CaseSet", "Columns", "SharedBlock", "VersionRun",
           "judge_columns", "judge_runs", "prepare", "prepare_columns", "request_sample",
           "run_version", "time_alone_together", "time_requests"]


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
    # Cases the version could not be asked about (the server was down or silent): errors that
    # say nothing about the model, so no verdict is drawn from them.
    unanswered: set[int] = field(default_factory=set)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # stacked, one row per case
    irregular: dict[int, list[tuple[str, np.ndarray]]] = field(default_factory=dict)
    model_version: str | None = None  # as the model says it (ONNX metadata, a server's path)
    class_names: list[str] = field(default_factory=list)  # its ``classes`` metadata, if any
    # Why its server stopped answering, when it did: it is not asked again, not even to time
    # a case alone (a case it could not take is in ``unanswered`` too, and it may be asked).
    down: str | None = None

    def output(self, i: int) -> list[tuple[str, np.ndarray]]:
        """Case ``i``'s outputs (name, array with a batch dim of 1); empty after an error."""
        if i in self.errors:
            return []
        if i in self.irregular:
            return self.irregular[i]
        return [(n, a[i:i + 1]) for n, a in self.outputs.items()]


class Columns:
    """Stacked output columns for n cases, allocated from the first answer that fits."""

    def __init__(self, n: int, *, fill: bool = True,
                 slot: tuple[SharedBlock, int] | None = None) -> None:
        self.n = n
        self.fill = fill  # False: the caller fills the rows it never placed (``blank``)
        self.slot = slot  # where the first output's column may live, beside other versions'
        self.outputs: dict[str, np.ndarray] = {}
        self.irregular: dict[int, list[tuple[str, np.ndarray]]] = {}

    def _allocate(self, outs: list[tuple[str, np.ndarray]]) -> None:
        for k, (name, o) in enumerate(outs):
            col = None
            if k == 0 and self.slot is not None:
                block, index = self.slot
                col = block.column(index, self.n, o.shape[1:], o.dtype)
            if col is None:
                col = np.empty((self.n, *o.shape[1:]), dtype=o.dtype)
            if self.fill:
                col.fill(np.nan if o.dtype.kind in "fc" else 0)
            self.outputs[name] = col

    def blank(self, rows: list[int]) -> None:
        """NaN (or 0) in rows that got no regular answer, as ``fill`` would have left them.
        A replay places nearly every row, so filling only these skips a pass per column."""
        if rows:
            for col in self.outputs.values():
                col[rows] = np.nan if col.dtype.kind in "fc" else 0

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
        if k == 1 and not any(o.ndim >= 1 and o.shape[0] == 0 for _, o in outs):
            i = rows.start if isinstance(rows, slice) else int(rows[0])
            self.irregular[i] = list(outs)
        else:  # (an empty answer to one row is no answer to it either)
            raise ReplayError("outputs do not have one row per input row")


class SharedBlock:
    """The first output of each version of a replay, side by side in one (versions, n, ...)
    array, so that judging them is one set of whole-array passes instead of one per version.
    On a small classifier numpy's cost per call, not per row, is most of judging 10,000 rows,
    and it was most of what a replay added to raw inference. A version whose first output
    has another shape or type gets a column of its own and is judged alone."""

    def __init__(self, versions: int) -> None:
        self.versions = versions
        self.array: np.ndarray | None = None
        self.given: set[int] = set()

    def column(self, index: int, n: int, shape: tuple[int, ...], dtype: np.dtype
               ) -> np.ndarray | None:
        if self.array is None:
            self.array = np.empty((self.versions, n, *shape), dtype=dtype)
        elif self.array.shape[1:] != (n, *shape) or self.array.dtype != dtype:
            return None
        self.given.add(index)
        return self.array[index]


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


def _judge_one(outs: list[tuple[str, np.ndarray]]) -> tuple[int, float, bool]:
    if not outs:
        return NO_CLASS, float("nan"), True
    p, c, f = judge_columns({n: o.reshape(1, -1) for n, o in outs}, 1)
    return int(p[0]), float(c[0]), bool(f[0])


TIMED_CALLS = 8  # per version and case, even (``_time_rows_alone``); their median is the
# case's one-call latency
SMALL_GROUP_BATCHES = 2  # a group of at most this many batches is timed ...
SMALL_GROUP_REPEATS = 5  # ... as the median of this many calls of each batch


def _median_call_s(run: Callable[[dict[str, np.ndarray]], object],
                   feed: dict[str, np.ndarray], first_s: float, calls: int) -> float:
    """The median wall time of ``calls`` calls of ``feed``, the first already timed."""
    perf = time.perf_counter
    times = [first_s]
    for _ in range(calls - 1):
        t0 = perf()
        run(feed)
        times.append(perf() - t0)
    return float(np.median(times))


def _row_places(prepared: CaseSet, cases: np.ndarray) -> list[tuple[int, Group, int]]:
    """Each of ``cases`` (not run alone) as (case, its group, its row in the group), in the
    order given."""
    singles = set(prepared.singles)  # already run alone, and timed so
    found: dict[int, tuple[Group, int]] = {}
    for group in prepared.groups:
        if group.rows is None:
            inside = cases[(cases >= 0) & (cases < len(group))]
            found.update((i, (group, i)) for i in inside.tolist())
            continue
        at = np.searchsorted(group.rows, cases)
        inside = (at < len(group.rows)) & (group.rows[np.minimum(at, len(group) - 1)] == cases)
        found.update((i, (group, p)) for i, p in zip(cases[inside].tolist(),
                                                    at[inside].tolist(), strict=True))
    return [(i, *found[i]) for i in cases.tolist() if i in found and i not in singles]


def _time_rows_alone(pairs: list[tuple[Target, VersionRun]], prepared: CaseSet,
                     cases: np.ndarray, go_on: Callable[[], bool], calls: int,
                     untimed_nan: bool = False) -> tuple[list[int], bool]:
    """Time each of ``cases`` alone on every version that answered, the versions taking turns
    call by call; a case's time on a version is the median of ``calls`` calls, written into its
    ``latency_ms``. ``untimed_nan``: a case reached but not timed on a version (an error, a
    server down) gets NaN there, not the batch's share it had. Returns the cases reached, in
    order, and whether it ran to the end (False: ``go_on`` said stop between cases, or a
    cancel came during a server's call)."""
    perf = time.perf_counter
    asked = [(t, r) for t, r in pairs if r.down is None]
    silent = [r for _, r in pairs if r.down is not None] if untimed_nan else []
    done: list[int] = []
    for turn, (i, group, p) in enumerate(_row_places(prepared, cases)):
        if not go_on():
            return done, False
        rows = {k: v[p:p + 1] for k, v in group.feeds.items()}
        feeds: list[dict[str, np.ndarray] | None] = []
        for target, run in asked:
            try:
                feeds.append(None if i in run.errors or run.down is not None
                             else target.adapt(rows))
            except Exception:  # it answered in its batch: keep that answer and time
                feeds.append(None)
        times: list[list[float]] = [[] for _ in asked]
        # One request each (``calls`` 1): each case starts with the next version, so none is
        # always first after the previous case. Several calls of a SLOW case go forward in
        # one round and backward in the next (ABBA): where a version stands in a round
        # shifts its time by up to ~10% on some hosts, and the SLOW verdict compares two
        # versions' times case by case. Fixed run order had given the first version an edge;
        # rotating by case gave it to whichever went first (a fresh-clone CI run: a
        # bit-identical copy "fixed" 17% of SLOW cases). Over an even number of rounds each
        # version holds each place equally often.
        forward = list(range(len(asked)))
        rounds = ([[(turn + k) % len(asked) for k in forward]] if calls == 1
                  else [forward if r % 2 == 0 else forward[::-1] for r in range(calls)])
        try:
            for order in rounds:
                for k in order:
                    if feeds[k] is None:
                        continue
                    target = asked[k][0]
                    try:
                        t0 = perf()
                        target.run_adapted(feeds[k])
                        times[k].append((perf() - t0) * 1e3)
                    except TargetDown as exc:  # gone since its batches: not asked again
                        asked[k][1].down = error_text(exc)
                        feeds[k] = None
                    except Exception as exc:
                        log.debug("timing case %d alone on %s failed: %s", i, target.name,
                                  exc)
                        feeds[k] = None
        except Cancelled:  # during a server's call: this case is not timed either
            return done, False
        for k, value in _one_call_times(times, calls).items():
            asked[k][1].latency_ms[i] = value
        if untimed_nan:
            for k, (_, run) in enumerate(asked):
                if len(times[k]) != calls:
                    run.latency_ms[i] = np.nan
        for run in silent:
            run.latency_ms[i] = np.nan
        done.append(i)
    return done, True


def _one_call_times(times: list[list[float]], calls: int) -> dict[int, float]:
    """Per version that answered every call of a case (its index in ``times``), its one-call
    time. Several versions timed over the same rounds are compared round by round: each
    call's time over its round's mean, the median of those ratios, times the median round
    mean. A slow patch of the machine (a neighbour's burst, a thread of this process taking
    the GIL back after each call releases it) then slows every version of the round alike
    and cancels; two medians taken apart let it fall on one version's calls more than the
    other's: a bit-identical copy "fixed" 2.6x as many SLOW cases with a busy thread beside
    it (bench/slow_verdicts.py, docs/PERFORMANCE.md)."""
    full = [k for k, t in enumerate(times) if len(t) == calls]
    if len(full) < 2 or calls < 2:
        return {k: float(np.median(times[k])) for k in full}
    grid = np.array([times[k] for k in full])
    rounds = grid.mean(axis=0)
    paired = np.median(grid / rounds, axis=1) * float(np.median(rounds))
    return dict(zip(full, paired.tolist(), strict=True))


def time_alone_together(pairs: list[tuple[Target, VersionRun]], prepared: CaseSet,
                        cases: np.ndarray, go_on: Callable[[], bool]) -> bool:
    """Give each of ``cases`` a latency of its own on every version: the median of
    TIMED_CALLS single-row calls, the versions taking turns call by call. A SLOW verdict
    compares one version's time with the recording version's, so both are taken at the same
    moment: timed one version after the other, a change in the machine's state between them
    (a cache, the clock, a neighbour's load) decided verdicts on cases recorded just over
    their SLO. A version whose server stopped answering is not asked again. False when
    ``go_on`` says stop (cancelled) between cases; the cases not reached then have no time on
    any version, so they are judged on their outputs alone, as the result's notes count."""
    done, finished = _time_rows_alone(pairs, prepared, cases, go_on, TIMED_CALLS)
    if not finished:
        timed, singles = set(done), set(prepared.singles)
        untimed = [i for i in cases.tolist() if i not in timed and i not in singles]
        for _, run in pairs:
            run.latency_ms[untimed] = np.nan
    return finished


def request_sample(n: int, size: int, exclude: np.ndarray) -> np.ndarray:
    """The cases a replay times one request at a time, in the order it times them: a random
    spread of up to ``size`` of the ``n`` cases, none of ``exclude``. Seeded by ``n``, so a
    reopened replay finds the same cases; any prefix is a spread too, so a sample cut short
    by a cancel is still one."""
    order = np.random.default_rng(n).permutation(n)
    if exclude.size:
        order = order[~np.isin(order, exclude)]
    return order[:size]


def time_requests(pairs: list[tuple[Target, VersionRun]], prepared: CaseSet,
                  cases: np.ndarray, go_on: Callable[[], bool]) -> int:
    """Time each of ``cases`` as one request of its own on every version (one call each, the
    versions taking turns), written into its ``latency_ms``: a batch's time shared among its
    rows is every row's alike and says how fast a version gets through a backlog, not how
    long one request takes; these calls give the per-request percentiles. Returns how many
    of ``cases`` (a prefix) were timed: fewer when ``go_on`` says stop."""
    done, _ = _time_rows_alone(pairs, prepared, cases, go_on, 1, untimed_nan=True)
    singles = set(prepared.singles)  # run alone already: their latency is one request's
    timed = set(done)
    count = 0
    for i in cases.tolist():
        if i not in timed and i not in singles:
            break
        count += 1
    return count


def run_version(target: Target, prepared: CaseSet, batch_size: int,
                tick: Callable[[int], bool], *,
                slot: tuple[SharedBlock, int] | None = None, judge: bool = True
                ) -> VersionRun | None:
    """Every case on one target; None when ``tick`` says stop (cancelled). A case's latency
    is its batch's time shared among its rows (``time_alone_together`` then gives the cases
    judged against an SLO one call's time). ``slot``: where in a shared block its first
    output goes; ``judge=False`` leaves the judging to one ``judge_runs`` over several
    versions."""
    n = len(prepared)
    # Latencies are kept as they come and laid out once at the end: the usual replay (one
    # group, every batch answered) makes the whole column in one repeat.
    batch_ms: list[tuple[slice | np.ndarray, float]] = []
    single_ms: dict[int, float] = {}
    whole: np.ndarray | None = None
    errors: dict[int, str] = {}
    unanswered: set[int] = set()
    columns = Columns(n, fill=False, slot=slot)
    perf = time.perf_counter
    down: str | None = None  # why the target stopped answering: the rest is not asked

    def not_asked(rows: list[int], why: str) -> None:
        for i in rows:
            errors[i] = why
            unanswered.add(i)

    def one(i: int, feeds: dict[str, np.ndarray]) -> None:
        nonlocal down
        if down is not None:
            not_asked([i], down)
            return
        t0 = perf()
        try:
            columns.place(slice(i, i + 1), 1, target.run(feeds))
            single_ms[i] = (perf() - t0) * 1e3
        except TargetDown as exc:
            down = error_text(exc)
            not_asked([i], down)
        except Exception as exc:
            errors[i] = error_text(exc)

    for group in prepared.groups:
        m = len(group)

        def cases(s: int, e: int, rows: np.ndarray | None = group.rows) -> list[int]:
            return list(range(s, e)) if rows is None else rows[s:e].tolist()

        if down is not None:
            not_asked(cases(0, m), down)
            if not tick(m):
                return None
            continue
        try:
            feeds = target.adapt(group.feeds)  # rename/cast once for the whole group
        except Exception as exc:
            # The version cannot take these captures at all (their shape, names or types):
            # that says nothing of how it would answer them, so no verdict either way.
            not_asked(cases(0, m), error_text(exc))
            if not tick(m):
                return None
            continue
        run, names = target.run_adapted, list(feeds)
        if not getattr(target, "warmed", False):
            # One untimed call per target: a session's first run allocates, and would be
            # charged to the first batch's rows. A server that does not answer it is not
            # waited on again for every batch.
            try:
                run({k: v[:1] for k, v in feeds.items()})
            except TargetDown as exc:
                down = error_text(exc)
                not_asked(cases(0, m), down)
                if not tick(m):
                    return None
                continue
            except Exception:
                pass  # the batches below meet it, and say it per row
            target.warmed = True
        only = names[0] if len(names) == 1 else None
        place = columns.place
        # A replay of a few hundred cases times each version on one or two calls, and one
        # hiccup (another thread, a page fault, a first call at a new batch size) would be its
        # whole latency: 10-20x apart for two identical models. Such small groups, on a target
        # where a call costs only time, take the median of a few calls of the same batch.
        repeats = (SMALL_GROUP_REPEATS if target.cheap_to_repeat
                   and m <= SMALL_GROUP_BATCHES * batch_size else 1)
        timed: list[tuple[slice | np.ndarray, float]] = []  # answered batches: ms per row
        for s in range(0, m, batch_size):
            e = min(s + batch_size, m)
            rows = slice(s, e) if group.rows is None else group.rows[s:e]
            if down is not None:
                not_asked(cases(s, e), down)
                if not tick(e - s):
                    return None
                continue
            feed = {only: feeds[only][s:e]} if only else {k: v[s:e] for k, v in feeds.items()}
            t0 = perf()
            try:
                outs = run(feed)
                dt = perf() - t0
                if repeats > 1:
                    dt = _median_call_s(run, feed, dt, repeats)
                place(rows, e - s, outs)
                timed.append((rows, dt * 1e3 / (e - s)))
            except TargetDown as exc:
                down = error_text(exc)  # a server that is down is not asked again
                not_asked(cases(s, e), down)
            except Exception as exc:
                # One bad row must not sink its batch: find it by running the rows alone.
                log.debug("batch failed on %s (%s); row by row", target.name, exc)
                for j, i in zip(range(s, e), cases(s, e), strict=True):
                    one(i, {k: v[j:j + 1] for k, v in group.feeds.items()})
            if not tick(e - s):
                return None
        if group.rows is None and m == n and len(timed) == -(-m // batch_size):
            # Every batch answered, in order: the column is one repeat.
            per_row = np.fromiter((ms for _, ms in timed), dtype=np.float64, count=len(timed))
            whole = np.repeat(per_row, batch_size)[:m]
        else:
            batch_ms += timed
    for i in prepared.singles:
        one(i, {b.name: b.to_array() for b in prepared.inputs(i)})
        if not tick(1):
            return None
    if whole is not None:
        latency = whole
    else:
        latency = np.full(n, np.nan)
        for rows, ms in batch_ms:
            latency[rows] = ms
    for i, ms in single_ms.items():
        latency[i] = ms
    # Every row was placed, or erred, or answered irregularly (every case runs, or the
    # version is cancelled and dropped): those last two are the rows left to blank.
    columns.blank(sorted({*errors, *columns.irregular}))
    unjudged = np.empty(0)
    run = VersionRun(target.name, target.location, unjudged.astype(np.int64), unjudged,
                     latency, unjudged.astype(bool), errors, unanswered, columns.outputs,
                     columns.irregular, getattr(target, "model_version", None),
                     list(getattr(target, "class_names", [])), down)
    if judge:
        judge_runs([run], n)
    return run


def judge_runs(runs: list[VersionRun], n: int, block: SharedBlock | None = None,
               slots: list[int] | None = None) -> None:
    """Fill each run's prediction, confidence and finiteness. Runs whose only output lies
    in ``block`` (at ``slots``, one per run) next to each other are judged in one go."""
    together: list[tuple[int, VersionRun]] = []
    if block is not None and block.array is not None and slots is not None:
        together = [(k, r) for k, r in zip(slots, runs, strict=True)
                    if k in block.given and len(r.outputs) == 1]
        first = together[0][0] if together else 0
        if len(together) < 2 or [k for k, _ in together] != list(
                range(first, first + len(together))):
            together = []  # not a run of neighbours: each judged alone
    if together:
        lo, hi = together[0][0], together[-1][0] + 1
        joint = block.array[lo:hi].reshape((hi - lo) * n, -1)
        p, c, f = judge_columns({"out": joint}, (hi - lo) * n)
        for j, (_, r) in enumerate(together):
            _settle(r, p[j * n:(j + 1) * n], c[j * n:(j + 1) * n], f[j * n:(j + 1) * n])
    done = {id(r) for _, r in together}
    for r in runs:
        if id(r) not in done:
            _settle(r, *judge_columns(r.outputs, n))


def _settle(run: VersionRun, prediction: np.ndarray, confidence: np.ndarray,
            finite: np.ndarray) -> None:
    """The column judgement, then the rows it did not cover: irregular answers, errors."""
    for i, outs in run.irregular.items():
        prediction[i], confidence[i], finite[i] = _judge_one(outs)
    if run.errors:
        bad = np.fromiter(run.errors, dtype=np.int64, count=len(run.errors))
        prediction[bad], confidence[bad], finite[bad] = NO_CLASS, np.nan, True
    run.prediction, run.confidence, run.finite = prediction, confidence, finite
