"""The batched part of a replay: cases prepared once as columns (stacked inputs, labels, kinds),
then each version run over them in batches, its outputs kept as stacked columns.
Thread: the replay's. No Python work per case inside the version loop: per batch one
slice, one inference call and one copy per output; judging is one compiled pass
over the stacked rows (``row_judge``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from app.core.replay_cases import Case, CaseSet, prepare, prepare_columns
from app.core.replay_targets import ReplayError, Target, TargetDown, error_text
from app.core.row_judge import NO_CLASS, judge_columns

log = logging.getLogger(__name__)

__all__ = ["NO_CLASS", "Case", "CaseSet", "Columns", "VersionRun", "judge_columns",
           "prepare", "prepare_columns", "run_version"]


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

    def __init__(self, n: int, *, fill: bool = True) -> None:
        self.n = n
        self.fill = fill  # False: the caller fills the rows it never placed (``blank``)
        self.outputs: dict[str, np.ndarray] = {}
        self.irregular: dict[int, list[tuple[str, np.ndarray]]] = {}

    def _allocate(self, outs: list[tuple[str, np.ndarray]]) -> None:
        for name, o in outs:
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
        if k == 1:
            i = rows.start if isinstance(rows, slice) else int(rows[0])
            self.irregular[i] = list(outs)
        else:
            raise ReplayError("outputs do not have one row per input row")


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
    columns = Columns(n, fill=False)
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

        def cases(s: int, e: int, rows: np.ndarray | None = group.rows) -> list[int]:
            return list(range(s, e)) if rows is None else rows[s:e].tolist()

        try:
            feeds = target.adapt(group.feeds)  # rename/cast once for the whole group
        except Exception as exc:
            for i in cases(0, m):
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
        place = columns.place
        timed: list[tuple[slice | np.ndarray, float]] = []  # answered batches: ms per row
        for s in range(0, m, batch_size):
            e = min(s + batch_size, m)
            rows = slice(s, e) if group.rows is None else group.rows[s:e]
            t0 = perf()
            try:
                outs = run({only: feeds[only][s:e]} if only else
                           {k: v[s:e] for k, v in feeds.items()})
                dt = perf() - t0
                place(rows, e - s, outs)
                timed.append((rows, dt * 1e3 / (e - s)))
            except TargetDown as exc:
                for i in cases(s, e):
                    errors[i] = str(exc)
            except Exception as exc:
                # One bad row must not sink its batch: find it by running the rows alone.
                log.debug("batch failed on %s (%s); row by row", target.name, exc)
                for j, i in zip(range(s, e), cases(s, e), strict=True):
                    one(i, {k: v[j:j + 1] for k, v in group.feeds.items()})
            if not tick(e - s):
                return None
        if group.rows is None and len(timed) == -(-m // batch_size):
            # Every batch answered, in order: one repeat instead of an assignment per batch.
            per_row = np.fromiter((ms for _, ms in timed), dtype=np.float64, count=len(timed))
            latency[:m] = np.repeat(per_row, batch_size)[:m]
        else:
            for rows, ms in timed:
                latency[rows] = ms
    for i in prepared.singles:
        one(i, {b.name: b.to_array() for b in prepared.inputs(i)})
        if not tick(1):
            return None
    # Every row was placed, or erred, or answered irregularly (every case runs, or the
    # version is cancelled and dropped): those last two are the rows left to blank.
    columns.blank(sorted({*errors, *columns.irregular}))
    prediction, confidence, finite = judge_columns(columns.outputs, n)
    for i, outs in columns.irregular.items():
        prediction[i], confidence[i], finite[i] = _judge_one(outs)
    if errors:
        bad = np.fromiter(errors, dtype=np.int64, count=len(errors))
        prediction[bad], confidence[bad], finite[bad] = NO_CLASS, np.nan, True
    return VersionRun(target.name, target.location, prediction, confidence, latency, finite,
                      errors, columns.outputs, columns.irregular)
