"""Timing cases one request at a time, after a replay's batches: the SLOW cases judged against
an SLO (``time_alone_together``, the versions taking turns call by call) and the sample the
per-request percentiles are of (``request_sample``, ``time_requests``). Thread: the replay's.
Apart from ``replay_run`` because a batch's time shared among its rows says how fast a version
gets through a backlog, and these say how long one request takes; ``replay_run`` re-exports
the public names.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from app.core.replay_cases import CaseSet, Group
from app.core.replay_targets import Cancelled, Target, TargetDown, error_text

if TYPE_CHECKING:
    from app.core.replay_run import VersionRun  # which imports this module

log = logging.getLogger(__name__)

__all__ = ["MAX_TIMED_CALLS", "TIMED_CALLS", "request_sample", "time_alone_together",
           "time_requests"]

TIMED_CALLS = 8  # rounds per SLOW case at the least: even, so each version holds each place
MAX_TIMED_CALLS = 32  # ... and at the most, while the times are still too noisy to judge
# How precise a version's time must be (the standard error of its paired estimate, as a share)
# for a case's timing to stop; 8 rounds reach it on a quiet machine.
TIMED_PRECISION = 0.025


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
    call by call; a case's time on a version is the median of ``calls`` calls (compared round
    by round, ``_one_call_times``), written into its ``latency_ms``. Where ``calls`` is more
    than one and the times come out too noisy to judge (``_precise_enough``), ``calls`` more
    rounds are taken, up to MAX_TIMED_CALLS. ``untimed_nan``: a case reached but not timed on
    a version (an error, a server down) gets NaN there, not the batch's share it had. Returns
    the cases reached, in order, and whether it ran to the end (False: ``go_on`` said stop
    between cases, or a cancel came during a server's call)."""
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
        rounds, taken = calls, 0
        try:
            while taken < rounds:
                order = ([(turn + k) % len(asked) for k in forward] if calls == 1
                         else forward if taken % 2 == 0 else forward[::-1])
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
                taken += 1
                # On a loaded machine one call's time varies by 20% and more, and 8 rounds
                # left a bit-identical copy "fixing" a fifth of the SLOW cases recorded a
                # hair over their SLO: where the estimate is not yet precise, take more.
                if (taken == rounds and calls > 1 and rounds < MAX_TIMED_CALLS
                        and not _precise_enough(times, taken)):
                    rounds = min(MAX_TIMED_CALLS, rounds + calls)
        except Cancelled:  # during a server's call: this case is not timed either
            return done, False
        for k, value in _one_call_times(times, taken).items():
            asked[k][1].latency_ms[i] = value
        if untimed_nan:
            for k, (_, run) in enumerate(asked):
                if len(times[k]) != taken:
                    run.latency_ms[i] = np.nan
        for run in silent:
            run.latency_ms[i] = np.nan
        done.append(i)
    return done, True


def _precise_enough(times: list[list[float]], rounds: int) -> bool:
    """Whether every version's paired time (``_one_call_times``) over these ``rounds`` is
    known to TIMED_PRECISION: the standard error of a median, 1.25 sigma / sqrt(n), with sigma
    read robustly from the spread of its calls' ratios to their rounds' means (1.48 MAD)."""
    full = [t for t in times if len(t) == rounds]
    if len(full) < 2:
        return True  # nothing to compare a version with
    grid = np.array(full)
    ratios = grid / grid.mean(axis=0)
    spread = np.median(np.abs(ratios - np.median(ratios, axis=1, keepdims=True)), axis=1)
    return bool((1.2533 * 1.4826 * spread / np.sqrt(rounds)).max() <= TIMED_PRECISION)


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
    """Give each of ``cases`` a latency of its own on every version: from TIMED_CALLS
    single-row calls (up to MAX_TIMED_CALLS where the machine is noisy), the versions taking
    turns call by call. A SLOW verdict
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
