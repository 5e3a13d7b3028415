"""Replays captured inputs against model versions: per case and version the output, top class,
confidence, latency and error; verdicts (fixed, still failing, newly broken); bisect.
Thread: whichever calls ``replay`` (a GUI worker, the CLI); Qt-free, with ``progress`` and
``cancelled`` callbacks.

Inputs are stacked from the captures' exact bytes into batches (one onnxruntime call per batch),
and results are kept as columns (numpy arrays per version), so the bookkeeping costs a few
array operations per batch, not Python work per case.

This module is the engine's front: ``replay`` and the names the rest of the app imports.
Behind it, ``replay_select`` chooses the cases, ``replay_run`` runs the versions in batches,
``replay_timing`` times cases one call at a time, ``replay_judge`` holds each case to its
criteria, and ``replay_result`` is what comes back.

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

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from app.core.replay_cases import Case, CaseSet, prepare
from app.core.replay_judge import (
    DEFAULT_MIN_CONFIDENCE,
    Criteria,
    confidence_limits,
    confidence_text,
    judge,
    judged_with,
    slow_limits,
    with_endpoint_thresholds,
)
from app.core.replay_result import (
    CONTROL_OK,
    FIXED,
    NEWLY_BROKEN,
    NO_ANSWER,
    STILL_FAILING,
    ReplayResult,
    VersionSummary,
    bisect_text,
    limit_text,
)
from app.core.replay_run import (
    NO_CLASS,
    SharedBlock,
    VersionRun,
    judge_runs,
    request_sample,
    run_version,
    time_alone_together,
    time_requests,
)
from app.core.replay_select import (
    Selection,
    count_failures,
    endpoint_name,
    nothing_selected,
    resolve_model_version,
    select_case_set,
    select_cases,
    selection_from_json,
    selection_json,
    selection_text,
)
from app.core.replay_targets import Cancelled, ReplayError, Target

# The engine's public face: what the CLI, the window, the saved replays and the tests import
# from here, wherever in the replay_* modules it is defined.
__all__ = ["CONTROL_OK", "DEFAULT_MIN_CONFIDENCE", "FIXED", "MAX_BATCH_ROWS", "NEWLY_BROKEN",
           "NO_ANSWER", "NO_CLASS", "REQUEST_SAMPLE", "STILL_FAILING", "Case", "CaseSet",
           "Criteria", "ReplayResult", "Selection", "VersionRun", "VersionSummary",
           "auto_batch", "bisect_text", "confidence_limits", "confidence_text",
           "count_failures", "endpoint_name", "judge", "judged_with", "limit_text",
           "nothing_selected", "prepare", "replay", "resolve_model_version", "select_case_set",
           "select_cases", "selection_from_json", "selection_json", "selection_text",
           "with_endpoint_thresholds"]


MAX_BATCH_ROWS = 1024
BATCH_BYTES = 8 << 20  # input bytes per call when the batch size is automatic
# Cases each version answers one request at a time after its batches: enough for a p95 that
# two runs agree on, few enough to cost little beside the batches (200 x 3 versions of the
# demo's models: about 15 ms).
REQUEST_SAMPLE = 200


def auto_batch(prepared: CaseSet) -> int:
    """Rows per inference call: up to MAX_BATCH_ROWS, fewer when rows are large (images)."""
    row_bytes = max((sum(a[:1].nbytes for a in g.feeds.values()) for g in prepared.groups),
                    default=1)
    return max(1, min(MAX_BATCH_ROWS, BATCH_BYTES // max(1, row_bytes)))


def replay(cases: Sequence[Case] | CaseSet, targets: Sequence[Target], *,
           # Criteria is frozen: one default instance shared by every call is safe.
           criteria: Criteria = Criteria(),  # noqa: B008
           batch_size: int | None = None,
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
