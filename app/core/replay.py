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
- a LOW_CONFIDENCE capture: also its confidence is below ``Criteria.min_confidence``;
- a SLOW capture: also its latency is above ``Criteria.slo_ms`` (when one is given);
- a passing (control) capture without a label: also confidence below ``min_confidence``.

A failure that does not fail on a version is *fixed* there; a control case that fails is
*newly broken*. Bisect: for each failure, the first version (in the order given, normally
registry order) on which it fails.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from app.core.domain import Capture, CaptureStatus
from app.core.replay_targets import ReplayError, Target, TargetDown, error_text
from app.core.store import Store

log = logging.getLogger(__name__)

DEFAULT_BATCH = 256
DEFAULT_MIN_CONFIDENCE = 0.6  # the demo probes' threshold
NO_CLASS = -1
_NO_LABEL_MATCH = -2  # a label that is not a class index never equals a predicted index


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


@dataclass(frozen=True, slots=True)
class Criteria:
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    slo_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Case:
    capture_id: int | None
    capture: Capture
    control: bool = False


def select_cases(store: Store, selection: Selection) -> list[Case]:
    """The selected failures (newest first), then a control set of passing captures."""
    common = {"endpoint": selection.endpoint, "start_ns": selection.start_ns,
              "end_ns": selection.end_ns, "label": selection.label,
              "model_version": selection.model_version}
    failed = store.select_captures(**common, statuses=selection.kinds or None, failed=True,
                                   limit=selection.limit)
    controls = (store.select_captures(**common, failed=False, limit=selection.controls)
                if selection.controls > 0 else [])
    return ([Case(s.id, s.capture, False) for s in failed]
            + [Case(s.id, s.capture, True) for s in controls])


@dataclass
class _Group:
    rows: np.ndarray  # case indices
    feeds: dict[str, np.ndarray]  # stacked inputs, one row per case


def _stack(cases: Sequence[Case]) -> tuple[list[_Group], list[int]]:
    """Group cases whose inputs share names, dtypes and row shapes; stack each group's bytes
    with one join. Cases that are not one row each are run alone."""
    keyed: dict[tuple, list[int]] = {}
    singles: list[int] = []
    for i, case in enumerate(cases):
        blobs = case.capture.inputs
        if not blobs or any(not b.shape or b.shape[0] != 1 for b in blobs):
            singles.append(i)
            continue
        keyed.setdefault(tuple((b.name, b.dtype, b.shape) for b in blobs), []).append(i)
    groups = []
    for key, rows in keyed.items():
        feeds = {}
        for k, (name, dtype, shape) in enumerate(key):
            data = b"".join([cases[i].capture.inputs[k].data for i in rows])
            feeds[name] = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(
                (len(rows), *shape[1:]))
        groups.append(_Group(np.asarray(rows, dtype=np.int64), feeds))
    return groups, singles


@dataclass
class VersionRun:
    """One version's answers to every case, as columns."""

    version: str
    location: str
    prediction: np.ndarray  # int64 class index, NO_CLASS when none
    confidence: np.ndarray  # float64, NaN when the output is not a probability
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


class _Collector:
    """Places each batch's outputs into the version's columns."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.outputs: dict[str, np.ndarray] = {}
        self.filled = np.zeros(n, dtype=bool)
        self.irregular: dict[int, list[tuple[str, np.ndarray]]] = {}

    def place(self, rows: np.ndarray, outs: list[tuple[str, np.ndarray]]) -> None:
        k = len(rows)
        if not self.outputs and all(o.ndim >= 1 and o.shape[0] == k for _, o in outs):
            for name, o in outs:
                col = np.empty((self.n, *o.shape[1:]), dtype=o.dtype)
                if o.dtype.kind in "fc":
                    col.fill(np.nan)
                else:
                    col.fill(0)
                self.outputs[name] = col
        fits = (len(outs) == len(self.outputs)
                and all(n in self.outputs and o.ndim >= 1 and o.shape[0] == k
                        and o.shape[1:] == self.outputs[n].shape[1:] for n, o in outs))
        if fits:
            for name, o in outs:
                self.outputs[name][rows] = o
            self.filled[rows] = True
        elif k == 1:
            self.irregular[int(rows[0])] = list(outs)
        else:
            raise ReplayError("outputs do not have one row per input row")


def _judge_columns(run_outputs: dict[str, np.ndarray], n: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top class, confidence and finiteness per row, from the first output."""
    prediction = np.full(n, NO_CLASS, dtype=np.int64)
    confidence = np.full(n, np.nan)
    finite = np.ones(n, dtype=bool)
    for o in run_outputs.values():
        if o.dtype.kind == "f" and n:
            finite &= np.isfinite(o.reshape(n, -1)).all(axis=1)
    if not run_outputs or n == 0:
        return prediction, confidence, finite
    first = next(iter(run_outputs.values())).reshape(n, -1)
    if first.dtype.kind == "f" and first.shape[1] >= 2:
        safe = np.where(np.isfinite(first), first, -np.inf)
        prediction = safe.argmax(axis=1).astype(np.int64)
        top = first[np.arange(n), prediction]
        is_prob = (first.min(axis=1) >= 0.0) & (np.abs(first.sum(axis=1) - 1.0) < 1e-3)
        confidence = np.where(is_prob, top, np.nan).astype(np.float64)
    elif first.dtype.kind in "iu" and first.shape[1] == 1:
        prediction = first[:, 0].astype(np.int64)  # a model that outputs the class itself
    return prediction, confidence, finite


def _judge_one(outs: list[tuple[str, np.ndarray]]) -> tuple[int, float, bool]:
    if not outs:
        return NO_CLASS, float("nan"), True
    cols = {n: o.reshape(1, -1) for n, o in outs}
    p, c, f = _judge_columns(cols, 1)
    return int(p[0]), float(c[0]), bool(f[0])


def _run_version(target: Target, cases: Sequence[Case], groups: list[_Group],
                 singles: list[int], batch_size: int, tick: Callable[[int], bool]
                 ) -> VersionRun | None:
    n = len(cases)
    latency = np.full(n, np.nan)
    errors: dict[int, str] = {}
    col = _Collector(n)
    run = target.run
    perf = time.perf_counter

    def one(i: int, feeds: dict[str, np.ndarray]) -> None:
        t0 = perf()
        try:
            col.place(np.array([i]), run(feeds))
            latency[i] = (perf() - t0) * 1e3
        except Exception as exc:
            errors[i] = error_text(exc)

    if groups:
        # One untimed call first: a session's first run allocates and would be charged to the
        # first batch's rows.
        with contextlib.suppress(Exception):
            run({k: v[:1] for k, v in groups[0].feeds.items()})
    for group in groups:
        for start in range(0, len(group.rows), batch_size):
            rows = group.rows[start:start + batch_size]
            feeds = {k: v[start:start + batch_size] for k, v in group.feeds.items()}
            t0 = perf()
            try:
                outs = run(feeds)
                latency[rows] = (perf() - t0) * 1e3 / len(rows)
                col.place(rows, outs)
            except TargetDown as exc:
                for i in rows.tolist():
                    errors[i] = str(exc)
            except Exception as exc:
                # One bad row must not sink its batch: find it by running the rows alone.
                log.debug("batch failed on %s (%s); retrying row by row", target.name, exc)
                for j, i in enumerate(rows.tolist()):
                    one(i, {k: v[j:j + 1] for k, v in feeds.items()})
            if not tick(len(rows)):
                return None
    for i in singles:
        one(i, {b.name: b.to_array() for b in cases[i].capture.inputs})
        if not tick(1):
            return None
    prediction, confidence, finite = _judge_columns(col.outputs, n)
    for i, outs in col.irregular.items():
        prediction[i], confidence[i], finite[i] = _judge_one(outs)
    if errors:
        bad = np.fromiter(errors, dtype=np.int64, count=len(errors))
        prediction[bad], confidence[bad], finite[bad] = NO_CLASS, np.nan, True
    return VersionRun(target.name, target.location, prediction, confidence, latency, finite,
                      errors, col.outputs, col.irregular)


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

    def to_json(self) -> dict:
        return {"version": self.version, "cases": self.cases, "fixed": self.fixed,
                "still_failing": self.still_failing, "newly_broken": self.newly_broken,
                "failures": self.failures, "controls": self.controls, "errors": self.errors,
                "latency_ms": {"p50": self.latency_p50_ms, "p95": self.latency_p95_ms}}


FIXED, STILL_FAILING, NEWLY_BROKEN, CONTROL_OK = "fixed", "still_failing", "newly_broken", "ok"


@dataclass
class ReplayResult:
    cases: list[Case]
    runs: list[VersionRun]
    criteria: Criteria
    selection: Selection | None = None
    cancelled: bool = False
    replay_id: int | None = None
    failing: list[np.ndarray] = field(default_factory=list)  # per run: bool per case

    def __post_init__(self) -> None:
        if not self.failing:
            self.failing = [judge(self.cases, r, self.criteria) for r in self.runs]

    @property
    def control_mask(self) -> np.ndarray:
        return np.fromiter((c.control for c in self.cases), dtype=bool, count=len(self.cases))

    def verdict(self, case: int, run: int) -> str:
        failing = bool(self.failing[run][case])
        if self.cases[case].control:
            return NEWLY_BROKEN if failing else CONTROL_OK
        return STILL_FAILING if failing else FIXED

    def first_failing(self) -> list[str | None]:
        """Bisect: per case, the first version (in run order) where it fails; None if none."""
        if not self.runs:
            return [None] * len(self.cases)
        grid = np.vstack(self.failing)  # runs x cases
        any_fail = grid.any(axis=0)
        first = grid.argmax(axis=0)
        names = [r.version for r in self.runs]
        return [names[int(f)] if a else None for f, a in zip(first, any_fail, strict=True)]

    def summaries(self) -> list[VersionSummary]:
        control = self.control_mask
        out = []
        for run, failing in zip(self.runs, self.failing, strict=True):
            ok = np.isfinite(run.latency_ms)
            lat = run.latency_ms[ok]
            p50, p95 = ((float(np.percentile(lat, 50)), float(np.percentile(lat, 95)))
                        if lat.size else (None, None))
            out.append(VersionSummary(
                version=run.version, cases=len(self.cases), failures=int((~control).sum()),
                fixed=int((~control & ~failing).sum()),
                still_failing=int((~control & failing).sum()), controls=int(control.sum()),
                newly_broken=int((control & failing).sum()), errors=len(run.errors),
                latency_p50_ms=p50, latency_p95_ms=p95))
        return out

    def to_json(self) -> dict:
        return {"replay_id": self.replay_id, "cancelled": self.cancelled,
                "versions": [s.to_json() for s in self.summaries()]}


def judge(cases: Sequence[Case], run: VersionRun, criteria: Criteria) -> np.ndarray:
    """Whether each case fails on this version (see the module docstring), as one bool array."""
    n = len(cases)
    labels = np.full(n, _NO_LABEL_MATCH, dtype=np.int64)
    has_label = np.zeros(n, dtype=bool)
    low_conf = np.zeros(n, dtype=bool)
    slow = np.zeros(n, dtype=bool)
    control = np.zeros(n, dtype=bool)
    for i, case in enumerate(cases):
        c = case.capture
        if c.label is not None:
            has_label[i] = True
            if c.label.lstrip("-").isdigit():
                labels[i] = int(c.label)
        low_conf[i] = c.status is CaptureStatus.LOW_CONFIDENCE
        slow[i] = c.status is CaptureStatus.SLOW
        control[i] = case.control
    failing = ~run.finite.copy()
    if run.errors:
        failing[np.fromiter(run.errors, dtype=np.int64, count=len(run.errors))] = True
    failing |= has_label & (run.prediction != labels)
    with np.errstate(invalid="ignore"):
        below = run.confidence < criteria.min_confidence  # NaN (no confidence) is not below
    failing |= low_conf & below
    failing |= control & ~has_label & below
    if criteria.slo_ms is not None:
        failing |= slow & (run.latency_ms > criteria.slo_ms)
    return failing


def replay(cases: Sequence[Case], targets: Sequence[Target], *,
           criteria: Criteria = Criteria(), batch_size: int = DEFAULT_BATCH,
           selection: Selection | None = None,
           progress: Callable[[float], None] = lambda _: None,
           cancelled: Callable[[], bool] = lambda: False) -> ReplayResult:
    """Run every case on every target, in batches. On cancel, the versions finished so far
    are returned with ``cancelled=True``."""
    if batch_size < 1:
        raise ReplayError("batch size must be at least 1")
    cases = list(cases)
    groups, singles = _stack(cases)
    total = max(1, len(cases) * len(targets))
    done = 0

    def tick(k: int) -> bool:
        nonlocal done
        done += k
        progress(done / total)
        return not cancelled()

    runs: list[VersionRun] = []
    stopped = cancelled()
    for target in targets:
        if stopped:
            break
        run = _run_version(target, cases, groups, singles, batch_size, tick)
        if run is None:
            stopped = True
            break
        runs.append(run)
    return ReplayResult(cases, runs, criteria, selection, cancelled=stopped)
