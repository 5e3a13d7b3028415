"""A replay's result: the versions' runs and which cases fail on each (``ReplayResult``), the
verdict per case and version, bisect, why a case fails, a summary per version
(``VersionSummary``) and the JSON a reader gets. Apart from ``replay``, which runs versions to
make one, because a saved replay is reopened as one (``replay_store``) without running anything.
Thread: the caller's.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from app.core.classes import NEVER_PREDICTED, label_index
from app.core.domain import CaptureStatus
from app.core.replay_cases import Case, CaseSet, prepare
from app.core.replay_judge import (
    SLOW_MARGIN,
    Criteria,
    confidence_limits,
    confidence_text,
    judge,
    recorded_scale,
    slow_limits,
)
from app.core.replay_run import NO_CLASS, VersionRun, request_sample
from app.core.replay_select import Selection, selection_json


@dataclass(frozen=True, slots=True)
class VersionSummary:
    version: str
    cases: int
    failures: int
    fixed: int
    still_failing: int
    controls: int
    newly_broken: int
    errors: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    newly_broken_by_label: dict[str, int] = field(default_factory=dict)  # where it regressed
    unanswered: int = 0  # cases the version could not be asked about: no verdict
    unanswered_reason: str | None = None
    error_reason: str | None = None  # the most common error among the answered cases
    # Labelled cases whose label names no class of this version (a name its model does not
    # carry in its ``classes`` metadata): they can never match its predictions.
    unmatched_labels: int = 0
    # Failures an earlier version (in run order) fixed that fail again on this one: a
    # regression after a fix, which neither bisect (it names the first failing version) nor
    # newly broken (controls only) shows.
    broken_again: int = 0
    # The same, by the latest earlier version that had fixed them.
    broken_again_after: dict[str, int] = field(default_factory=dict)
    first_failing: int = 0  # failures that fail first on this version (bisect)
    # The percentiles above are of this many requests, each case sent alone; 0: there were
    # none (an older replay, or a cancel before them), and they are of batches' shares.
    requests_timed: int = 0
    # A case's share of its batch's time (the median): how fast the version gets through a
    # backlog, which one request's time does not say.
    batched_ms_per_row: float | None = None

    def to_json(self) -> dict:
        return {"version": self.version, "cases": self.cases, "fixed": self.fixed,
                "still_failing": self.still_failing, "newly_broken": self.newly_broken,
                "broken_again": self.broken_again,
                "broken_again_after": self.broken_again_after,
                "failures": self.failures, "controls": self.controls, "errors": self.errors,
                "unanswered": self.unanswered, "unanswered_reason": self.unanswered_reason,
                "error_reason": self.error_reason, "unmatched_labels": self.unmatched_labels,
                "latency_ms": {"p50": self.latency_p50_ms, "p95": self.latency_p95_ms,
                               "per": "request" if self.requests_timed else "row of a batch",
                               "requests_timed": self.requests_timed,
                               "batched_ms_per_row": self.batched_ms_per_row},
                "newly_broken_by_label": self.newly_broken_by_label}


FIXED, STILL_FAILING, NEWLY_BROKEN, CONTROL_OK = "fixed", "still_failing", "newly_broken", "ok"
NO_ANSWER = "no_answer"  # the version could not be asked (its server down): no verdict


@dataclass
class ReplayResult:
    cases: list[Case]
    runs: list[VersionRun]
    criteria: Criteria
    selection: Selection | None = None
    cancelled: bool = False
    replay_id: int | None = None
    failing: list[np.ndarray] = field(default_factory=list)  # per run: bool per case
    prepared: CaseSet | None = field(default=None, repr=False)
    # The SLO each of ``prepared.slow_rows`` is held to (``slow_limits``), worked out once: for
    # lazily read cases it is a query.
    slo_limits: np.ndarray | None = field(default=None, repr=False)
    # Per SLOW row: this machine's time for one call / the recorded latency, both on the
    # version that recorded it (``recorded_scale``); NaN where that version was not replayed.
    slow_scale: np.ndarray | None = field(default=None, repr=False)
    # How many failures the selection matched before its limit kept the newest ones (None:
    # not counted, as in a replay saved before this was kept).
    failures_matched: int | None = None
    title: str | None = None  # a person's name for it (``replay --title``)
    versions_asked: int | None = None  # how many versions the run was to replay (a cancel)
    # How many cases the run was asked to time one request each (``replay --requests``); it
    # times at most ``requests_possible``. None: not known (a saved replay read back).
    requests_asked: int | None = None

    def __post_init__(self) -> None:
        if not self.failing and self.runs:
            prepared = self.prepared or prepare(self.cases)
            if self.slo_limits is None:
                self.slo_limits = slow_limits(prepared, self.criteria)
            if self.slow_scale is None:
                self.slow_scale = recorded_scale(prepared, self.runs)
            held = self.confidence_limits
            self.failing = [judge(prepared, r, self.criteria, self.slow_held_to, held)
                            for r in self.runs]

    @property
    def slow_held_to(self) -> np.ndarray | None:
        """Per SLOW case, the time alone a version must stay under to fix it: its SLO scaled
        to this machine, less SLOW_MARGIN (two medians of single ~10 us calls still differ
        by a few percent from run to run, and a copy of the recording version "fixed" 6-9%
        of cases recorded 2% over their SLO on that noise alone). None when not worked out
        (a replay saved before they were kept)."""
        if self.slo_limits is None or self.slow_scale is None:
            return None
        return self.slo_limits * self.slow_scale * (1.0 - SLOW_MARGIN)

    @functools.cached_property
    def confidence_limits(self) -> np.ndarray | None:
        """Per case, the minimum confidence its endpoint's probe held answers to (NaN where
        none); None when no case's endpoint held one."""
        return confidence_limits(self._case_set, self.criteria)

    @functools.cached_property
    def _case_set(self) -> CaseSet:
        return self.prepared or prepare(self.cases)  # a reopened replay has only its cases

    def confidence_check(self, case: int, confidence: np.floating
                         ) -> tuple[float, bool] | None:
        """The minimum this case's confidence is held to, and whether ``confidence`` (a
        run's, for this case) is below it, compared as ``judge`` compares; None when its
        confidence does not judge it."""
        if self._held(case):  # as the probe compared
            limit = float(self.confidence_limits[case])
            return limit, bool(np.float64(confidence) < limit)
        if self._case_set.judged_on_confidence[case]:
            limit = self.criteria.min_confidence  # compared in the output's own type
            return limit, bool(confidence < limit)
        return None

    def unjudged_slow(self) -> tuple[int, list[str]]:
        """SLOW failures judged on their outputs only: no SLO, or the version that recorded
        them was not replayed (its time here is what makes a recorded latency comparable);
        and the model versions that recorded the latter, to name them."""
        if self.slo_limits is None or self.slow_scale is None:
            return 0, []
        prepared = self.prepared or prepare(self.cases)
        rows = prepared.slow_rows
        unjudged = np.isnan(self.slo_limits * self.slow_scale) & ~prepared.control[rows]
        missing = np.isfinite(self.slo_limits) & unjudged
        made_by = sorted({f[2] or "unknown" for f, m in zip(prepared.slow_facts, missing,
                                                              strict=True) if m}) \
            if missing.any() else []
        return int(np.count_nonzero(unjudged)), made_by

    @property
    def control_mask(self) -> np.ndarray:
        if self.prepared is not None:
            return self.prepared.control
        return np.fromiter((c.control for c in self.cases), dtype=bool, count=len(self.cases))

    @property
    def capture_ids(self) -> list[int | None]:
        if self.prepared is not None:
            return self.prepared.capture_ids
        return [c.capture_id for c in self.cases]

    def kind(self, case: int) -> str:
        """How the case was captured: ok (a control), mismatch, slow, ..."""
        if self.prepared is not None and self.prepared.kinds:
            return self.prepared.kinds[case]
        return str(self.cases[case].capture.status)

    def label(self, case: int) -> str | None:
        """The case's captured label (read from the columns: no Capture needed)."""
        if self.prepared is not None:
            return self.prepared.label_texts[case]
        return self.cases[case].capture.label

    def reasons(self, case: int, run: int) -> list[str]:
        """Why the case fails on this version, rule by rule as ``judge`` applied them, for a
        person asking "why still failing?"; empty when it does not fail there."""
        r = self.runs[run]
        if case in r.unanswered or not self.failing[run][case]:
            return []
        if case in r.errors:
            return [f"error: {r.errors[case]}"]
        out = []
        if not r.finite[case]:
            out.append("an output is not finite")
        prepared = self._case_set
        label = self.label(case)
        predicted = int(r.prediction[case])
        if label is not None and predicted != prepared.labels_for(r.class_names)[case]:
            name = (r.class_names[predicted] if 0 <= predicted < len(r.class_names)
                    else "none" if predicted == NO_CLASS else str(predicted))
            out.append(f"class {name}, labelled {label}")
        confidence = r.confidence[case]
        check = self.confidence_check(case, confidence)
        if check is not None and check[1]:
            limit = check[0]
            whose = ("" if not self._held(case) else " (the replay's minimum)"
                     if self.criteria.min_confidence_for_all else " (its endpoint's minimum)")
            out.append(f"confidence {confidence_text(float(confidence), limit, True)} under "
                       f"{limit:g}{whose}")
        elif check is not None and np.isnan(confidence) and prepared.low_confidence[case]:
            out.append("no confidence to show (its outputs are not probabilities)")
        if prepared.slow[case]:
            slow = self._slow_reason(case, run, explained=bool(out))
            if slow:
                out.append(slow)
        return out

    def _held(self, case: int) -> bool:
        """Whether the case is held to its endpoint's minimum confidence."""
        held = self.confidence_limits
        return held is not None and not np.isnan(held[case])

    def _slow_reason(self, case: int, run: int, explained: bool) -> str | None:
        latency = float(self.runs[run].latency_ms[case])
        held_to = self.slow_held_to
        if held_to is None:
            # A replay saved before its limits were kept: slowness is what is left.
            return None if explained else (f"slow: {latency:.3g} ms alone, over its SLO as "
                                           "scaled to this machine")
        k = int(np.searchsorted(self._case_set.slow_rows, case))
        limit = float(held_to[k])
        if not latency > limit:
            return None
        return (f"slow: {latency:.3g} ms alone, over {limit:.3g} ms (its "
                f"{self.slo_limits[k]:g} ms SLO scaled to this machine, less "
                f"{SLOW_MARGIN:.0%})")

    def verdict(self, case: int, run: int) -> str:
        if case in self.runs[run].unanswered:
            return NO_ANSWER
        failing = bool(self.failing[run][case])
        control = (self.prepared.control[case] if self.prepared is not None
                   else self.cases[case].control)  # O(1): the grid asks once per cell
        if control:
            return NEWLY_BROKEN if failing else CONTROL_OK
        return STILL_FAILING if failing else FIXED

    def first_failing(self) -> list[str | None]:
        """Bisect: per case, the first version (in run order) where it fails; None if none
        (``unanswered_everywhere`` tells a case no version answered from one none fails)."""
        if not self.runs:
            return [None] * len(self.cases)
        grid = np.vstack(self.failing)  # runs x cases
        any_fail = grid.any(axis=0)
        first = grid.argmax(axis=0)
        names = [r.version for r in self.runs]
        return [names[int(f)] if a else None for f, a in zip(first, any_fail, strict=True)]

    def unanswered_everywhere(self) -> np.ndarray:
        """Per case, whether no version answered it: it fails nowhere for want of a verdict,
        which must not read as fixed everywhere."""
        n = len(self.control_mask)
        if not self.runs:
            return np.zeros(n, dtype=bool)
        everywhere = np.ones(n, dtype=bool)
        for r in self.runs:
            answered = np.ones(n, dtype=bool)
            if r.unanswered:
                answered[np.fromiter(r.unanswered, dtype=np.int64,
                                     count=len(r.unanswered))] = False
            everywhere &= ~answered
        return everywhere

    @functools.cached_property
    def timed_alone(self) -> np.ndarray:
        """Cases whose latency is one call's (SLOW captures held to an SLO), not a share of a
        batch's; read again from the cases for a reopened replay."""
        if self.prepared is not None:
            if self.slo_limits is None:
                self.slo_limits = slow_limits(self.prepared, self.criteria)
            return self.prepared.slow_rows[np.isfinite(self.slo_limits)]
        given, by_endpoint = self.criteria.slo_ms, self.criteria.endpoint_slo_ms
        return np.asarray([i for i, c in enumerate(self.cases)
                           if c.capture.status == CaptureStatus.SLOW
                           and (given is not None or c.capture.endpoint in by_endpoint)],
                          dtype=np.int64)

    def summaries(self) -> list[VersionSummary]:
        control = self.control_mask
        controls = int(np.count_nonzero(control))
        # The percentiles are of the cases timed one request each (``requests_timed``); the
        # batched figure is of the rest, whose latency is still their batch's share (a case
        # timed alone has its batch share replaced by that time). SLOW cases timed alone
        # against their SLO (the median of several calls) are in neither. Where every case
        # was timed alone (--requests at or above the cases), the batch shares kept before
        # that (``VersionRun.batched_ms_per_row``) give the batched figure.
        requests = self.request_rows
        batched = np.ones(len(control), dtype=bool)
        batched[self.timed_alone] = False
        batched[requests] = False
        some_batched = bool(batched.any())
        if not requests.size and not some_batched:
            batched[:] = True  # only SLOW cases: their times are all there is
        out = []
        failure = ~control
        # Per failure, the latest version so far (in run order) that fixed it; -1: none yet.
        fixed_by = np.full(len(control), -1, dtype=np.int64)
        first_counts = self.first_failing_counts()[0] if self.runs else {}
        for j, (run, failing) in enumerate(zip(self.runs, self.failing, strict=True)):
            again = failing & failure & (fixed_by >= 0)
            again_after = Counter(fixed_by[again].tolist())
            fixed_here = failure & ~failing
            if run.unanswered:  # no verdict is no fix
                fixed_here[np.fromiter(run.unanswered, dtype=np.int64,
                                       count=len(run.unanswered))] = False
            fixed_by[fixed_here] = j
            shared = run.latency_ms[batched]
            shared = shared[np.isfinite(shared)]
            lat = run.latency_ms[requests] if requests.size else shared
            lat = lat[np.isfinite(lat)]
            # One partition for both percentiles: same figures as two calls, half the cost.
            p50, p95 = (map(float, np.percentile(lat, [50, 95])) if lat.size
                        else (None, None))
            broken = control & failing
            newly_broken = int(np.count_nonzero(broken))
            still_failing = int(np.count_nonzero(failing)) - newly_broken
            unanswered_failures = sum(1 for i in run.unanswered if not control[i])
            by_label: dict[str, int] = {}
            for i in np.flatnonzero(broken).tolist():
                label = self.label(i) or "(none)"
                by_label[label] = by_label.get(label, 0) + 1
            out.append(VersionSummary(
                version=run.version, cases=len(self.cases), failures=len(control) - controls,
                fixed=len(control) - controls - still_failing - unanswered_failures,
                still_failing=still_failing, controls=controls, newly_broken=newly_broken,
                errors=len(run.errors) - len(run.unanswered),
                latency_p50_ms=p50, latency_p95_ms=p95,
                newly_broken_by_label=dict(sorted(by_label.items())),
                unanswered=len(run.unanswered),
                unanswered_reason=(run.errors.get(min(run.unanswered)) if run.unanswered
                                   else None),
                error_reason=_most_common(
                    e for i, e in run.errors.items() if i not in run.unanswered),
                unmatched_labels=self.unmatched_labels(run.class_names),
                broken_again=int(np.count_nonzero(again)),
                broken_again_after={self.runs[k].version: again_after[k]
                                    for k in sorted(again_after)},
                first_failing=first_counts.get(run.version, 0),
                requests_timed=int(np.count_nonzero(np.isfinite(run.latency_ms[requests]))),
                batched_ms_per_row=_batched_figure(run, shared, some_batched)))
        return out

    @property
    def requests_possible(self) -> int:
        """How many cases can be timed one request each: every case but the SLOW ones timed
        alone against their SLO (``timed_alone``), which get several calls of their own."""
        return len(self.control_mask) - len(self.timed_alone)

    @functools.cached_property
    def request_rows(self) -> np.ndarray:
        """The cases each version answered as one request of its own after the batches (the
        same ones for a reopened replay: ``request_sample`` is seeded by the case count)."""
        return request_sample(len(self.cases), self.criteria.requests_timed, self.timed_alone)

    def first_failing_counts(self) -> tuple[dict[str, int], int]:
        """Bisect in numbers, over the failures: how many first fail on each version (in run
        order, versions with none left out), and how many were judged and fail on no version
        (those no version answered are left out: ``unanswered_everywhere``)."""
        control = self.control_mask.tolist()
        silent = self.unanswered_everywhere().tolist()
        counts = Counter(v for v, c, s in zip(self.first_failing(), control, silent,
                                              strict=True) if not c and not s)
        return ({r.version: counts[r.version] for r in self.runs if counts[r.version]},
                counts[None])

    def unmatched_labels(self, names: Sequence[str]) -> int:
        """Labelled cases whose label names no class of a model called ``names``."""
        if self.prepared is not None:
            return self.prepared.unmatched_labels(names)
        return sum(1 for i in range(len(self.cases)) if (label := self.label(i)) is not None
                   and label_index(label, names) == NEVER_PREDICTED)

    def to_json(self) -> dict:
        first, on_none = self.first_failing_counts()
        unjudged, made_by = self.unjudged_slow()
        control = self.control_mask
        failures = int(np.count_nonzero(~control))
        return {"replay_id": self.replay_id, "cancelled": self.cancelled, "title": self.title,
                "selection": selection_json(self.selection),
                # How many failures were replayed, of how many matched: above --limit only
                # the newest were kept.
                "failures": failures, "controls": len(control) - failures,
                "failures_matched": self.failures_matched,
                "limit": self.selection.limit if self.selection is not None else None,
                "versions": [s.to_json() for s in self.summaries()],
                # --requests as given, and the most it could time (every case but the SLOW
                # ones timed alone against their SLO); each version's latency_ms says how
                # many it timed.
                "requests_asked": self.requests_asked,
                "requests_possible": self.requests_possible,
                "first_failing": first, "failing_on_no_version": on_none,
                "unanswered_everywhere": int(np.count_nonzero(
                    self.unanswered_everywhere() & ~control)),
                # SLOW failures with no SLO, or whose recording version was not replayed:
                # their verdicts come from the outputs alone (see ``unjudged_slow``).
                "slow_judged_on_outputs_only": unjudged,
                "slow_recorded_by_versions_not_replayed": made_by,
                "criteria": asdict(self.criteria)}  # the thresholds it was judged with


def limit_text(result: ReplayResult, more: str = "raise --limit") -> str | None:
    """When the selection matched more failures than its limit kept (the newest), how many of
    how many were replayed; ``more`` says how to get the rest. None when none was left out."""
    failures = int(np.count_nonzero(~result.control_mask))
    matched = result.failures_matched
    if matched is None or matched <= failures:
        return None
    return f"replayed {failures} of {matched} matching failures (newest first; {more})"


def bisect_text(result: ReplayResult) -> str:
    """How many failures and controls were replayed, and bisect: per version, the failures
    that first fail there; none: judged and failing nowhere; and, apart, failures no version
    answered, which are no fix anywhere."""
    control = result.control_mask
    failures = int(np.count_nonzero(~control))
    first, on_none = result.first_failing_counts()
    silent = int(np.count_nonzero(result.unanswered_everywhere() & ~control))
    firsts = [f"{k} {v}" for k, v in first.items()] + ([f"none {on_none}"] if on_none else [])
    bisect = "; ".join(part for part in (", ".join(firsts), silent and
                                         f"no version answered {silent}") if part)
    return (f"{failures} failures, {len(control) - failures} controls; first failing version: "
            f"{bisect or 'none 0'}")


def _most_common(texts: Iterable[str]) -> str | None:
    counts = Counter(texts)
    return counts.most_common(1)[0][0] if counts else None


def _batched_figure(run: VersionRun, shared: np.ndarray, some_batched: bool) -> float | None:
    """A version's batched ms/row: the median of the shares still in its latency column
    (what a saved replay holds), else the one kept from its batches before every case's
    share was replaced by one call's time; only SLOW cases in an older replay: their times."""
    if some_batched and shared.size:
        return float(np.median(shared))
    if run.batched_ms_per_row is not None:
        return run.batched_ms_per_row
    return float(np.median(shared)) if shared.size else None
