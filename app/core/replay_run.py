"""The batched part of a replay: cases prepared once as columns (stacked inputs, labels, kinds),
then each version run over them in batches, its outputs kept as stacked columns.
Thread: the replay's. No Python work per case inside the version loop: per batch one
slice, one inference call and one copy per output; judging is whole-array numpy
(``replay_columns``). Timing cases one request at a time, after the batches, is
``replay_timing``'s; both are re-exported here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from app.core.replay_cases import Case, CaseSet, prepare, prepare_columns
from app.core.replay_columns import NO_CLASS, judge_columns
from app.core.replay_targets import ReplayError, Target, TargetDown, error_text
from app.core.replay_timing import (
    TIMED_CALLS,
    request_sample,
    time_alone_together,
    time_requests,
)

log = logging.getLogger(__name__)

__all__ = ["NO_CLASS", "TIMED_CALLS", "Case", "CaseSet", "Columns", "SharedBlock", "VersionRun",
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
    # The median of its rows' shares of their batches' times, taken before any row's
    # latency is replaced by one call's (``time_requests``, ``time_alone_together``): every
    # case ran in a batch, so the pace through a backlog is known even when every case was
    # also timed alone. None: no batch answered (or a replay saved before it was kept).
    batched_ms_per_row: float | None = None

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
    shares: list[tuple[float, int]] = []  # per answered batch: ms per row, rows
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
                shares.append((dt * 1e3 / (e - s), e - s))
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
                     list(getattr(target, "class_names", [])), down,
                     _median_share(shares))
    if judge:
        judge_runs([run], n)
    return run


def _median_share(shares: list[tuple[float, int]]) -> float | None:
    """The median row's share (``np.median`` of each batch's share repeated once per row,
    without making that column: one entry per batch, not one per case)."""
    if not shares:
        return None
    shares.sort()
    total = sum(k for _, k in shares)
    ends = np.cumsum([k for _, k in shares])
    lo, hi = (int(np.searchsorted(ends, p, side="right")) for p in ((total - 1) // 2,
                                                                     total // 2))
    return (shares[lo][0] + shares[hi][0]) / 2


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


def _judge_one(outs: list[tuple[str, np.ndarray]]) -> tuple[int, float, bool]:
    if not outs:
        return NO_CLASS, float("nan"), True
    p, c, f = judge_columns({n: o.reshape(1, -1) for n, o in outs}, 1)
    return int(p[0]), float(c[0]), bool(f[0])
