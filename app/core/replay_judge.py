"""Judging a replay's cases: the ``Criteria`` each case is held to (minimum confidences, SLOs:
the person's, else those its endpoint was probed with), the limits worked out from them per
case, and ``judge``, whether each case fails on a version. The rules are set out in the module
docstring of ``app.core.replay``. Apart from the run and the result so that a replay run now
and one reopened from the workspace are judged by this one code. Thread: the caller's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from app.core.replay_cases import CaseSet
from app.core.replay_run import VersionRun
from app.core.store import Store

DEFAULT_MIN_CONFIDENCE = 0.6  # the demo probes' threshold
SLOW_MARGIN = 0.1  # how far under its scaled SLO a SLOW case must come to be fixed


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


def judge(prepared: CaseSet, run: VersionRun, criteria: Criteria,
          limits: np.ndarray | None = None,
          held_to: np.ndarray | None = None) -> np.ndarray:
    """Whether each case fails on this version (see the module docstring of
    ``app.core.replay``), as one bool array. ``limits``: ``slow_limits`` (scaled); ``held_to``:
    per case, the minimum confidence it is held to whatever its kind (``confidence_limits``,
    worked out here when not given)."""
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
