"""Drift read back from the store for plots: features x time scores, the share of drifted
features over time, and the latest per-feature table sorted by drift. Thread: the caller's Store.

Scores of different methods are not comparable (p-values fall, distances rise), so each cell
also carries a *severity*: 1.0 exactly at the method's threshold, above 1 when drifted.
Distances: score / threshold. P-values: log(p) / log(threshold), so p = threshold gives 1 and
p = 1 gives 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from app.core.drift import (
    PREDICTION_COLUMN,
    Distribution,
    capture_frame,
    distribution,
    prepare_reference,
    tensor_rows,
)
from app.core.drift_stats import METHODS, Kind
from app.core.references import Reference, get_reference, input_columns, load_reference
from app.core.store import Store

MAX_SEVERITY = 10.0  # p = 0 or huge distances: clipped so a heat map keeps its scale


def severity(method: str | None, score: float | None, threshold: float | None) -> float:
    """How far past its threshold a score is: 1.0 at the threshold, NaN when untested."""
    if method is None or score is None or threshold is None or not math.isfinite(score):
        return math.nan
    known = METHODS.get(method)
    if known is not None and known.is_p_value:
        if score <= 0.0:
            return MAX_SEVERITY
        return min(MAX_SEVERITY, math.log(min(score, 1.0)) / math.log(threshold))
    return min(MAX_SEVERITY, score / threshold) if threshold > 0 else math.nan


@dataclass(frozen=True, slots=True)
class DriftMatrix:
    """One row per evaluation, one column per feature (in order of first appearance)."""

    ts_ns: np.ndarray  # (T,) int64
    features: tuple[str, ...]
    score: np.ndarray  # (T, F) float, NaN where a feature was not tested
    severity: np.ndarray  # (T, F) float, see module docstring
    drifted: np.ndarray  # (T, F) bool
    methods: tuple[str | None, ...]  # latest method per feature

    def __len__(self) -> int:
        return len(self.ts_ns)


def drift_matrix(store: Store, endpoint: str, start_ns: int | None = None,
                 end_ns: int | None = None, *, source: str = "fast") -> DriftMatrix:
    points = store.drift_points(endpoint, start_ns, end_ns, source=source)
    features: dict[str, int] = {}
    times: dict[int, int] = {}  # evaluation id -> row
    stamps: list[int] = []
    for p in points:
        features.setdefault(p["feature"], len(features))
        if p["evaluation_id"] not in times:
            times[p["evaluation_id"]] = len(times)
            stamps.append(p["ts_ns"])
    shape = (len(times), len(features))
    score = np.full(shape, np.nan)
    sev = np.full(shape, np.nan)
    drifted = np.zeros(shape, dtype=bool)
    methods: list[str | None] = [None] * len(features)
    for p in points:
        i, j = times[p["evaluation_id"]], features[p["feature"]]
        if p["score"] is not None:
            score[i, j] = p["score"]
        sev[i, j] = severity(p["method"], p["score"], p["threshold"])
        drifted[i, j] = bool(p["drifted"])
        if p["method"] is not None:
            methods[j] = p["method"]
    return DriftMatrix(np.array(stamps, dtype=np.int64), tuple(features),
                       score, sev, drifted, tuple(methods))


def share_series(store: Store, endpoint: str, start_ns: int | None = None,
                 end_ns: int | None = None, *, source: str = "fast"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(ts_ns, share of drifted columns) per evaluation, oldest first."""
    rows = store.drift_evaluations(endpoint, start_ns, end_ns, source=source)
    return (np.array([r["ts_ns"] for r in rows], dtype=np.int64),
            np.array([r["share_drifted"] for r in rows], dtype=np.float64))


@dataclass(frozen=True, slots=True)
class FeatureRow:
    feature: str
    method: str | None
    score: float | None
    threshold: float | None
    drifted: bool
    severity: float


def latest_table(store: Store, endpoint: str, *, source: str = "fast") -> list[FeatureRow]:
    """The latest evaluation's features, most drifted first (untested ones last)."""
    return latest_evaluation(store, endpoint, source=source)[1]


def latest_evaluation(store: Store, endpoint: str, *, source: str = "fast"
                      ) -> tuple[dict | None, list[FeatureRow]]:
    """The latest evaluation (its time, rows and share drifted) and its ``latest_table``."""
    evaluations = store.drift_evaluations(endpoint, source=source)
    if not evaluations:
        return None, []
    last = evaluations[-1]
    rows = [p for p in store.drift_points(endpoint, last["ts_ns"], last["ts_ns"], source=source)
            if p["evaluation_id"] == last["id"]]
    table = [FeatureRow(p["feature"], p["method"], p["score"], p["threshold"],
                        bool(p["drifted"]), severity(p["method"], p["score"], p["threshold"]))
             for p in rows]
    return last, sorted(table, key=lambda r: (math.isnan(r.severity),
                                              -np.nan_to_num(r.severity)))


def evaluation_text(evaluation: dict | None, table: list[FeatureRow]) -> str:
    """What the live table shows, in words: which rows it judged, and that a reference without
    predictions had them compared with the endpoint's first ones (the CLI cannot, so their
    shares differ by that column)."""
    if evaluation is None:
        return ""
    # Local time, named, as the window's plots and incident list show it (the PDF report
    # and the CLI say UTC).
    at = datetime.fromtimestamp(evaluation["ts_ns"] / 1e9).astimezone().strftime("%H:%M:%S %Z")
    tested = [r for r in table if r.method is not None]
    drifted = sum(r.drifted for r in tested)
    text = (f"{drifted} of {len(tested)} drifted in the last {evaluation['rows_current']} "
            f"captured rows up to {at}")
    if any(r.feature == PREDICTION_COLUMN for r in tested):
        text += "; prediction against the reference's, or the endpoint's first ones"
    return text


@dataclass(frozen=True, slots=True)
class FeatureComparison:
    """What a distribution plot of one feature shows: the shares (None when there are none to
    show) and a line saying what they compare, or why there is nothing to show."""

    distribution: Distribution | None
    title: str


def feature_comparison(store: Store, endpoint: str, feature: str, *, rows: int = 500,
                       bins: int = 30,
                       load: Callable[[Store, Reference], pd.DataFrame] = load_reference
                       ) -> FeatureComparison:
    """Latest-window shares of one feature (or ``prediction``) against its reference on
    shared bins. Predictions that the reference lacks are compared, as the live monitor does
    (its ``window_rows`` is ``rows`` here), with the endpoint's first ``rows`` predictions.
    ``load`` reads the reference's rows: a caller asking every few seconds may keep them."""
    reference = get_reference(store, endpoint)
    if reference is None:
        return FeatureComparison(None, f"{feature}: no reference to compare with; choose one")
    frame = load(store, reference)
    names = reference.columns or input_columns(frame)
    baseline = None
    if feature == PREDICTION_COLUMN and feature not in frame.columns:
        baseline = first_predictions(store, endpoint, rows)
        if not baseline:
            return FeatureComparison(None, f"{feature}: no captured predictions yet")
    elif feature not in frame.columns:
        return FeatureComparison(None, f"{feature}: not in the reference ({reference.describe()})")
    current = capture_frame(store.capture_inputs(endpoint, limit=rows, sampled_only=True), names)
    if baseline is not None:
        shares = distribution(
            prepare_reference(pd.DataFrame({feature: pd.Series(baseline, dtype=object)})),
            feature, current[feature], bins=bins, kind=Kind.CATEGORICAL)
        return FeatureComparison(shares, (
            f"{feature}: latest {len(current)} vs first {len(baseline)} captures "
            f"(the baseline: the reference has no {feature}s)"))
    kind = Kind.CATEGORICAL if feature == PREDICTION_COLUMN else Kind.NUMERICAL
    shares = distribution(prepare_reference(frame, [feature]), feature, current[feature],
                          bins=bins, kind=kind)
    unit = "bin" if shares.kind is Kind.NUMERICAL else "category"
    return FeatureComparison(shares, f"{feature}: share of rows per {unit}")


def feature_distribution(store: Store, endpoint: str, feature: str, *, rows: int = 500,
                         bins: int = 30) -> Distribution | None:
    """``feature_comparison``'s shares alone; None when the endpoint has no reference or the
    feature is in neither the reference nor (for ``prediction``) the captures."""
    return feature_comparison(store, endpoint, feature, rows=rows, bins=bins).distribution


def first_predictions(store: Store, endpoint: str, count: int) -> list[str | None]:
    """The predictions of an endpoint's first ``count`` sampled single-row captures: what the
    live monitor takes as its prediction baseline when the reference has none."""
    limit, predictions = count, []
    while count > 0:
        rows = store.capture_inputs(endpoint, limit=limit, sampled_only=True, earliest=True)
        predictions = [prediction for _, inputs, prediction in rows if _one_row(inputs)]
        if len(predictions) >= count or len(rows) < limit:
            break
        limit *= 4  # batches among them name no row's prediction: read further
    return predictions[:count]


def _one_row(inputs: tuple) -> bool:
    """Whether a capture is one request row: the monitor's baseline skips batches (their one
    prediction names no row) and tensors it cannot read."""
    try:
        return bool(inputs) and len(tensor_rows(inputs[0])) == 1
    except (ValueError, TypeError):
        return False
