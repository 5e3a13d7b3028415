"""Replays captured inputs against model versions: per case and version the output, top class,
confidence, latency and error; verdicts (fixed, still failing, newly broken); bisect.
Thread: whichever calls ``replay`` (a GUI worker, the CLI); Qt-free, with ``progress`` and
``cancelled`` callbacks.

Inputs are stacked from the captures' exact bytes into batches (one onnxruntime call per batch),
and results are kept as columns (numpy arrays per version), so the bookkeeping costs a few
array operations per batch, not Python work per case.

What "failing" means for a case on a version:

- any case: the version raised, or gave a non-finite output;
- a case with a label: the top class differs from the label;
- a case whose endpoint's probe had a minimum confidence (``min_confidence`` in its URI, or
  a probe option; ``Criteria.endpoint_min_confidence``): also its confidence is below
  that minimum, as the probe would have flagged the answer LOW_CONFIDENCE in production, so
  a right class at too low a confidence is no fix (and breaks a control);
- a LOW_CONFIDENCE capture: also its confidence is below its endpoint's minimum, else
  ``Criteria.min_confidence``, or the version gives none (its outputs are not
  probabilities): nothing shows it fixed;
- a SLOW capture: also its latency is above its SLO (``Criteria.slo_ms``, else its
  endpoint's): the case run alone, not its share of a batch, and read against the version
  that recorded it (``recorded_scale``: a warm call here is far faster than production's),
  so that version stays slow and another is fixed only if it is fast enough in proportion,
  with ``SLOW_MARGIN`` (10%) to spare, so that timing noise fixes nothing;
- a passing (control) capture without a label: also confidence below its endpoint's
  minimum, else ``min_confidence``.

A failure that does not fail on a version is *fixed* there; a control case that fails is
*newly broken*. Bisect: for each failure, the first version (in the order given, normally
registry order) on which it fails.

A case a version could not be asked about (a remote server down or silent, or inputs of a
shape or type it does not take) has no verdict there: it is counted as *unanswered*, neither
fixed nor failing, and bisect passes over it.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from app.core.classes import NEVER_PREDICTED, label_index
from app.core.domain import CaptureStatus, EndpointUri, UriError
from app.core.replay_run import (
    NO_CLASS,
    Case,
    CaseSet,
    SharedBlock,
    VersionRun,
    judge_runs,
    prepare,
    prepare_columns,
    request_sample,
    run_version,
    time_alone_together,
    time_requests,
)
from app.core.replay_targets import Cancelled, ReplayError, Target
from app.core.store import Store
from app.core.versions import KIND_ONNX, registered

__all__ = ["NO_CLASS", "Case", "CaseSet", "Criteria", "ReplayResult", "Selection", "VersionRun",
           "VersionSummary", "auto_batch", "bisect_text", "confidence_limits",
           "confidence_text", "count_failures", "endpoint_name", "judge", "judged_with",
           "limit_text", "nothing_selected", "prepare", "replay", "resolve_model_version",
           "select_case_set", "select_cases", "selection_json", "selection_text",
           "with_endpoint_thresholds"]

log = logging.getLogger(__name__)

MAX_BATCH_ROWS = 1024
BATCH_BYTES = 8 << 20  # input bytes per call when the batch size is automatic
DEFAULT_MIN_CONFIDENCE = 0.6  # the demo probes' threshold
SLOW_MARGIN = 0.1  # how far under its scaled SLO a SLOW case must come to be fixed
# Cases each version answers one request at a time after its batches: enough for a p95 that
# two runs agree on, few enough to cost little beside the batches (200 x 3 versions of the
# demo's models: about 15 ms).
REQUEST_SAMPLE = 200


@dataclass(frozen=True, slots=True)
class Selection:
    """Which failures to replay (empty kinds: every kind of failure) and how many controls."""

    endpoint: str | None = None
    kinds: tuple[str, ...] = ()
    start_ns: int | None = None
    end_ns: int | None = None
    label: str | None = None
    model_version: str | None = None
    limit: int = 1000
    controls: int = 200


@dataclass(frozen=True)
class Criteria:
    # For low-confidence captures and unlabelled controls of endpoints that held none below.
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    slo_ms: float | None = None  # for every SLOW capture; else each endpoint's, below
    endpoint_slo_ms: dict[str, float] = field(default_factory=dict)  # Store.slo_by_endpoint
    # Store.min_confidence_by_endpoint: every case of such an endpoint is held to its own.
    endpoint_min_confidence: dict[str, float] = field(default_factory=dict)
    # The person's min_confidence holds every case instead (``--min-confidence``).
    min_confidence_for_all: bool = False
    # How many cases (``request_sample``'s first ones) each version answered as one request
    # of its own, after the batches: the per-request latency percentiles come from them.
    # Kept with the criteria so a reopened replay reads its latencies as they were taken.
    requests_timed: int = 0


def with_endpoint_thresholds(criteria: Criteria, store: Store) -> Criteria:
    """``criteria`` with each endpoint's SLO and minimum confidence as its probe had them:
    what a replay from the CLI or the window holds each case to, unless a person gave one."""
    return replace(criteria, endpoint_slo_ms=store.slo_by_endpoint(),
                   endpoint_min_confidence=store.min_confidence_by_endpoint())


def judged_with(criteria: Criteria) -> str:
    """The thresholds a replay was judged with, in one line: two replays of the same cases
    held to 0.6 and to 0.9 otherwise look alike."""
    if criteria.min_confidence_for_all:
        confidence = f"every case held to confidence {criteria.min_confidence:g}"
    elif criteria.endpoint_min_confidence:
        minimums = ", ".join(f"{v:g}" for v in sorted(set(
            criteria.endpoint_min_confidence.values())))
        confidence = (f"each case held to its endpoint's minimum confidence ({minimums}) "
                      f"where it had one, else low-confidence captures to "
                      f"{criteria.min_confidence:g}")
    else:
        confidence = (f"low-confidence captures and unlabelled controls held to confidence "
                      f"{criteria.min_confidence:g}")
    slo = (f"; SLOW captures held to {criteria.slo_ms:g} ms" if criteria.slo_ms is not None
           else "; SLOW captures held to their endpoint's SLO" if criteria.endpoint_slo_ms
           else "")
    return f"judged with: {confidence}{slo}"


def confidence_limits(prepared: CaseSet, criteria: Criteria) -> np.ndarray | None:
    """Per case, the minimum confidence it is held to whatever its kind (its endpoint's, or
    the person's for all); NaN where none; None when no case is."""
    if criteria.min_confidence_for_all:
        return np.full(len(prepared), float(criteria.min_confidence))
    return prepared.confidence_limits(criteria.endpoint_min_confidence)


def confidence_text(confidence: float, threshold: float, below: bool | None = None) -> str:
    """``confidence`` to 3 decimals, on the side of ``threshold`` it was judged on: a case
    judged under 0.6 must not read "0.600" (0.5996 rounds up; it is cut to 0.599).
    ``below``: the judging's answer, which compares in the output's own float type (float32
    0.7 is under 0.7); by default compared here."""
    text = f"{confidence:.3f}"
    if below is None:
        below = confidence < threshold
    if below and float(text) >= threshold:
        text = f"{math.floor(confidence * 1000) / 1000:.3f}"
        if float(text) >= threshold:  # at the threshold itself, as float32 holds it
            text = f"{float(text) - 0.001:.3f}"
    elif not below and float(text) < threshold:
        text = f"{math.ceil(confidence * 1000) / 1000:.3f}"
    return text


def slow_limits(prepared: CaseSet, criteria: Criteria) -> np.ndarray:
    """The SLO each SLOW case is held to (aligned with ``prepared.slow_rows``); NaN where it
    has none, and then only its outputs judge it."""
    rows = prepared.slow_rows
    if criteria.slo_ms is not None:
        return np.full(rows.size, criteria.slo_ms)
    if not rows.size or not criteria.endpoint_slo_ms:
        return np.full(rows.size, np.nan)
    return np.array([criteria.endpoint_slo_ms.get(e, np.nan) if e else np.nan
                     for e, _, _ in prepared.slow_facts], dtype=np.float64)


def recorded_scale(prepared: CaseSet, runs: Sequence[VersionRun]) -> np.ndarray:
    """Per SLOW case, how this machine's one-call time compares with the latency recorded in
    production, read on the version that recorded it (the first replayed version whose model
    version is the capture's). A replay times warm, back-to-back calls; production latency
    comes paced, cold and beside other work, often many times slower. Holding another
    version's time here to ``SLO x scale`` asks whether it would have met the SLO there;
    the recording version itself stays slow, as it was. NaN when that version is not among
    ``runs`` or its call here has no time."""
    rows = prepared.slow_rows
    scale = np.full(rows.size, np.nan)
    if not rows.size or not runs:
        return scale
    for k, (i, (_, recorded_ms, made_by)) in enumerate(
            zip(rows.tolist(), prepared.slow_facts, strict=True)):
        producer = next((r for r in runs if made_by and r.model_version == made_by), None)
        if producer is not None and recorded_ms and recorded_ms > 0:
            scale[k] = producer.latency_ms[i] / recorded_ms
    return scale


def _filters(selection: Selection) -> dict:
    return {"endpoint": selection.endpoint, "start_ns": selection.start_ns,
            "end_ns": selection.end_ns, "label": selection.label,
            "model_version": selection.model_version}


def select_cases(store: Store, selection: Selection) -> list[Case]:
    """The selected failures (newest first), then a control set of passing captures."""
    common = _filters(selection)
    failed = store.select_captures(**common, statuses=selection.kinds or None, failed=True,
                                   limit=selection.limit)
    controls = (store.select_captures(**common, failed=False, limit=selection.controls)
                if selection.controls > 0 else [])
    return ([Case(s.id, s.capture, False) for s in failed]
            + [Case(s.id, s.capture, True) for s in controls])


def select_case_set(store: Store, selection: Selection) -> CaseSet:
    """The same cases as ``select_cases``, in the same order, read as columns (ids, kinds,
    labels, stacked inputs) straight from the workspace: what ``replay`` needs, without a
    Capture per case. Its ``cases`` are read from the workspace only when asked for."""
    common = _filters(selection)
    # Each case's endpoint is read only where cases can come from several.
    sources = [selection.endpoint] if selection.endpoint else store.endpoints_with_captures()
    several = len(sources) > 1
    failed = store.select_capture_columns(**common, statuses=selection.kinds or None,
                                          failed=True, limit=selection.limit,
                                          with_endpoint=several)
    controls = (store.select_capture_columns(**common, failed=False, limit=selection.controls,
                                             with_endpoint=several)
                if selection.controls > 0 else ((),) * len(failed))
    return prepare_columns(store.path, failed, controls,
                           store.endpoint_uris() if several else
                           {None: sources[0]} if sources else {})


def count_failures(store: Store, selection: Selection) -> int:
    """How many failures ``selection`` matches with no limit: one COUNT over the same filters
    (``select_case_set`` keeps the newest ``selection.limit`` of them)."""
    return store.count_selected_captures(**_filters(selection),
                                         statuses=selection.kinds or None, failed=True)


def resolve_model_version(store: Store, given: str,
                          endpoint: str | None = None) -> tuple[str, str | None]:
    """The model version string to select captures by, and a note when ``given`` was not one
    but a registered version's name (or its sha256's first hex digits, as ``versions list``
    shows it). Captures record the version their model reports (its metadata ``version``,
    else its file's stem), while people know versions by their registered names."""
    if store.count_selected_captures(endpoint=endpoint, model_version=given):
        return given, None  # a version string the captures carry wins over any name
    text = given.strip().lower()
    by_sha = len(text) >= 8 and all(ch in "0123456789abcdef" for ch in text)
    known = registered(store)
    matches = [v for v in known if v.name == given] or [
        v for v in known if by_sha and v.sha256 and v.sha256.startswith(text)]
    # One file registered under two names is one model: its first name stands for it.
    if len({v.sha256 or v.name for v in matches}) != 1:
        return given, None
    v = matches[0]
    candidates = [c for c in (v.version, Path(v.location).stem if v.kind == KIND_ONNX
                              else None) if c and c != given]
    for c in candidates:
        if store.count_selected_captures(endpoint=endpoint, model_version=c):
            return c, (f"--model-version {given} is registered version {v.name}: replaying "
                       f"captures made by model version {c}")
    return given, None


def _ts_text(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def _counted(values: dict[str | None, int], most: int = 12) -> str:
    shown = [f"{'(none)' if v is None else v} ({n})" for v, n in list(values.items())[:most]]
    return ", ".join(shown) + (f", … {len(values) - most} more" if len(values) > most else "")


def nothing_selected(store: Store, selection: Selection) -> str | None:
    """Why ``selection`` matches no failure, naming the filter that matches none and the
    values the workspace holds for it (kinds, labels, model versions; the time span), or
    saying that the filters match only together; None when there is no failure at all (of
    its endpoint). Called once nothing matched."""
    scope: dict = {"endpoint": selection.endpoint, "failed": True}
    where = f" of {endpoint_name(selection.endpoint)}" if selection.endpoint else ""
    if not store.count_selected_captures(**scope):
        return None
    why = []
    checks = (("--kind", ", ".join(selection.kinds), "status", "kinds",
               {"statuses": selection.kinds}),
              ("--label", selection.label, "label", "labels", {"label": selection.label}),
              ("--model-version", selection.model_version, "model_version", "model versions",
               {"model_version": selection.model_version}))
    for flag, value, column, plural, term in checks:
        if value and not store.count_selected_captures(**scope, **term):
            why.append(f"{flag} {value} matches no failure{where}; {plural} there: "
                       + _counted(store.capture_value_counts(column, **scope)))
    timed = selection.start_ns is not None or selection.end_ns is not None
    if timed and not store.count_selected_captures(**scope, start_ns=selection.start_ns,
                                                   end_ns=selection.end_ns):
        first = store.select_captures(**scope, limit=1, newest_first=False)
        last = store.select_captures(**scope, limit=1)
        span = " to ".join(_ts_text(c.capture.ts_ns) for c in (first[0], last[0]))
        why.append(f"no failure{where} lies in the time asked for; they span {span}")
    if why:
        return "; ".join(why)
    given = [flag for flag, value in (("--kind", selection.kinds), ("--label", selection.label),
                                      ("--model-version", selection.model_version),
                                      ("--since/--until", selection.start_ns is not None
                                       or selection.end_ns is not None)) if value]
    return (f"no failure{where} matches {', '.join(given)} together, though each alone "
            "matches some")


def endpoint_name(uri: str) -> str:
    """A short name for an endpoint in a list: a local model's file name, a server's URI
    without its parameters (a probe's URI carries its payload path, rate, thresholds...)."""
    try:
        parsed = EndpointUri.parse(uri)
    except UriError:
        return uri
    target = parsed.target.partition("?")[0]
    if parsed.scheme == "onnx":
        return Path(target).stem
    return f"{parsed.scheme}:{target}"


def selection_text(selection: Selection | None) -> str:
    """The filters a replay chose its failures by, in a few words for a list of replays:
    "wine-v1, mismatch, label 2, since 2026-11-23 11:40:00"."""
    if selection is None:
        return "hand-picked cases"
    parts = [endpoint_name(selection.endpoint) if selection.endpoint else "every endpoint",
             "+".join(selection.kinds) if selection.kinds else "every kind"]
    if selection.label is not None:
        parts.append(f"label {selection.label}")
    if selection.model_version is not None:
        parts.append(f"model version {selection.model_version}")
    if selection.start_ns is not None:
        parts.append(f"since {_ts_text(selection.start_ns)}")
    if selection.end_ns is not None:
        parts.append(f"until {_ts_text(selection.end_ns)}")
    return ", ".join(parts)


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


def selection_json(selection: Selection | None) -> dict | None:
    """``selection`` for a JSON reader: its fields, with its time range also in UTC ISO 8601."""
    if selection is None:
        return None
    doc = asdict(selection)
    doc["kinds"] = list(selection.kinds)
    for key, ns in (("since", selection.start_ns), ("until", selection.end_ns)):
        doc[key] = (None if ns is None else
                    datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z"))
    return doc


def selection_from_json(doc: object) -> Selection | None:
    """A Selection from its saved JSON; keys it does not know (counts saved beside it) are
    left out."""
    if not isinstance(doc, dict):
        return None
    known = {f.name for f in fields(Selection)}
    kept = {k: v for k, v in doc.items() if k in known}
    if not kept:
        return None
    return Selection(**{**kept, "kinds": tuple(kept.get("kinds") or ())})


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
        # batched figure is of the rest, whose time is their batch's share. SLOW cases timed
        # alone against their SLO (the median of several calls) are in neither.
        requests = self.request_rows
        batched = np.ones(len(control), dtype=bool)
        batched[self.timed_alone] = False
        batched[requests] = False
        if not requests.size and not batched.any():
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
                batched_ms_per_row=float(np.median(shared)) if shared.size else None))
        return out

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
                "first_failing": first, "failing_on_no_version": on_none,
                "unanswered_everywhere": int(np.count_nonzero(
                    self.unanswered_everywhere() & ~control)),
                # SLOW failures with no SLO, or whose recording version was not replayed:
                # their verdicts come from the outputs alone (see ``unjudged_slow``).
                "slow_judged_on_outputs_only": unjudged,
                "slow_recorded_by_versions_not_replayed": made_by,
                "criteria": asdict(self.criteria)}  # the thresholds it was judged with


def judge(prepared: CaseSet, run: VersionRun, criteria: Criteria,
          limits: np.ndarray | None = None,
          held_to: np.ndarray | None = None) -> np.ndarray:
    """Whether each case fails on this version (see the module docstring), as one bool array.
    ``limits``: ``slow_limits`` (scaled); ``held_to``: per case, the minimum confidence it is
    held to whatever its kind (``confidence_limits``, worked out here when not given)."""
    failing = run.prediction != prepared.labels_for(run.class_names)
    if not prepared.every_labelled:
        failing &= prepared.has_label
    if not run.finite.all():  # one pass; nearly every run is finite throughout
        failing |= ~run.finite
    if run.errors:
        failing[np.fromiter(run.errors, dtype=np.int64, count=len(run.errors))] = True
    # The confidence and latency terms apply to a few kinds of case: only those rows are read.
    rows = prepared.confidence_rows
    if held_to is None:
        held_to = confidence_limits(prepared, criteria)
    if held_to is not None:
        # An endpoint whose probe flagged answers below its minimum confidence: every case
        # of it is held there, as production would hold the version's answer. A version
        # that gives no confidence fixes no low-confidence capture (as below), and breaks
        # nothing else for lack of one (the probe leaves such answers unflagged too).
        held = np.isfinite(held_to)
        judged = np.flatnonzero(held)
        confidence = run.confidence[judged]
        with np.errstate(invalid="ignore"):
            low = confidence < held_to[judged]
        low |= np.isnan(confidence) & prepared.low_confidence[judged]
        failing[judged] |= low
        rows = rows[~held[rows]]  # the rest: the rule below
    if rows.size:
        confidence = run.confidence[rows]
        with np.errstate(invalid="ignore"):
            low = confidence < criteria.min_confidence
        # A failure caught for its low confidence is fixed only by a confidence shown to be
        # high enough: a version that gives none (logits, a label alone) has not shown it.
        # A control without a label is not broken by the lack of one.
        low |= np.isnan(confidence) & ~prepared.control[rows]
        failing[rows] |= low
    rows = prepared.slow_rows
    if rows.size:
        if limits is None:
            limits = slow_limits(prepared, criteria)
        with np.errstate(invalid="ignore"):  # NaN (no SLO, or no latency) is not above
            failing[rows] |= run.latency_ms[rows] > limits
    if run.unanswered:  # unknown, not failing: bisect must not blame a server outage
        failing[np.fromiter(run.unanswered, dtype=np.int64, count=len(run.unanswered))] = False
    return failing


def auto_batch(prepared: CaseSet) -> int:
    """Rows per inference call: up to MAX_BATCH_ROWS, fewer when rows are large (images)."""
    row_bytes = max((sum(a[:1].nbytes for a in g.feeds.values()) for g in prepared.groups),
                    default=1)
    return max(1, min(MAX_BATCH_ROWS, BATCH_BYTES // max(1, row_bytes)))


def replay(cases: Sequence[Case] | CaseSet, targets: Sequence[Target], *,
           criteria: Criteria = Criteria(), batch_size: int | None = None,
           selection: Selection | None = None,
           progress: Callable[[float], None] = lambda _: None,
           cancelled: Callable[[], bool] = lambda: False,
           requests: int = REQUEST_SAMPLE) -> ReplayResult:
    """Run every case on every target, in batches, then time ``requests`` of them as one
    request each on every target (the per-request latency percentiles; 0: none, the
    latencies are the batches' shares). ``cases`` may come prepared (``prepare``) when the
    same set is replayed more than once. On cancel, the versions finished so far are
    returned with ``cancelled=True``."""
    if batch_size is not None and batch_size < 1:
        raise ReplayError("batch size must be at least 1")
    prepared = cases if isinstance(cases, CaseSet) else prepare(cases)
    batch_size = batch_size or auto_batch(prepared)
    requests = min(max(0, requests), len(prepared))
    total = max(1, (len(prepared) + requests) * len(targets))
    done = 0

    def tick(k: int) -> bool:
        nonlocal done
        done += k
        progress(done / total)
        return not cancelled()

    # SLOW captures are judged on latency only against an SLO, and then on one request's
    # latency, not on their share of a batch's.
    limits = slow_limits(prepared, criteria)
    timed_alone = prepared.slow_rows[np.isfinite(limits)]
    runs: list[VersionRun] = []
    block = SharedBlock(len(targets))
    stopped = cancelled()
    for target in targets:
        target.cancelled = cancelled  # a remote call under way ends at a cancel
    try:
        for k, target in enumerate(targets):
            if stopped:
                break
            try:
                run = run_version(target, prepared, batch_size, tick, slot=(block, k),
                                  judge=False)
            except Cancelled:
                run = None
            if run is None:
                stopped = True
                break
            runs.append(run)
        pairs = list(zip(targets, runs, strict=False))
        if runs and timed_alone.size and not time_alone_together(
                pairs, prepared, timed_alone, lambda: tick(0)):
            stopped = True  # every version kept; the SLOW cases not timed have no verdict
        if runs and requests and not stopped:
            sample = request_sample(len(prepared), requests, timed_alone)
            timed = time_requests(pairs, prepared, sample, lambda: tick(len(pairs)))
            stopped = timed < len(sample)  # the rest keep their batches' shares
            criteria = replace(criteria, requests_timed=timed)
    finally:
        for target in targets:
            target.cancelled = None
    judge_runs(runs, len(prepared), block, list(range(len(runs))))
    return ReplayResult(prepared.cases, runs, criteria, selection, cancelled=stopped,
                        prepared=prepared, slo_limits=limits)


def _most_common(texts: Iterable[str]) -> str | None:
    counts = Counter(texts)
    return counts.most_common(1)[0][0] if counts else None
