"""Drift of an endpoint's recent captures against its stored reference, fast or as Evidently's
full report (HTML beside the workspace, results stored). Thread: any; each call opens its own
Store, so the GUI can run it on a worker and the CLI on its main thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from app.core.drift import (
    PREDICTION_COLUMN,
    DriftError,
    DriftResult,
    capture_frame,
    evaluate,
    prepare_reference,
)
from app.core.drift_monitor import save_result
from app.core.drift_report import evidently_report, report_path_for
from app.core.drift_stats import ColumnDrift, Kind
from app.core.references import (
    get_reference,
    in_capture_order,
    input_columns,
    load_reference,
    read_table,
    refuse_width,
    resolve_endpoint,
    row_width,
)
from app.core.store import Store

NO_PREDICTIONS = ("not tested: the reference has no prediction column (the live monitor uses "
                  "the endpoint's first captured predictions instead)")


class NoReferenceError(DriftError):
    """The endpoint has no drift reference yet."""


@dataclass(frozen=True, slots=True)
class EndpointWindow:
    """The frames one endpoint's drift compares, and the window they cover."""

    endpoint: str
    reference: pd.DataFrame
    current: pd.DataFrame
    columns: tuple[str, ...]
    kinds: dict[str, Kind]
    start_ns: int
    end_ns: int


@dataclass(frozen=True, slots=True)
class EndpointDrift:
    window: EndpointWindow
    result: DriftResult
    html_path: Path | None = None
    evaluation_id: int | None = None


def endpoint_window(store: Store, name: str, window_s: float, *,
                    reference_file: str | Path | None = None) -> EndpointWindow:
    """The endpoint's captures from ``window_s`` before its last capture up to it, and its
    reference (the stored one, or ``reference_file``)."""
    endpoint = resolve_endpoint(store, name)
    if reference_file is not None:
        ref_frame = read_table(reference_file)
        features = in_capture_order(store, endpoint, input_columns(ref_frame))
    else:
        reference = get_reference(store, endpoint)
        if reference is None:
            raise NoReferenceError(f"{endpoint} has no drift reference; set one (a data file, "
                                   "the demo's, or a time range of its captures)")
        ref_frame = load_reference(store, reference)
        features = reference.columns or input_columns(ref_frame)
    span = store.capture_span(endpoint)
    if span is None:
        raise DriftError(f"{endpoint} has no captures to compare yet")
    end_ns = span[1]
    start_ns = end_ns - int(window_s * 1e9)
    rows = store.capture_inputs(endpoint, start_ns, end_ns, sampled_only=True)
    refuse_width(endpoint, features, row_width(rows))
    current = capture_frame(rows, features)
    if current.empty:
        raise DriftError(f"{endpoint} kept only its failures in this window (capture=0): drift "
                         "needs a random sample of its requests; probe it with ?capture= above 0")
    columns = [f for f in features if f in ref_frame.columns]
    if PREDICTION_COLUMN in ref_frame.columns:
        columns.append(PREDICTION_COLUMN)
    kinds = dict.fromkeys(columns, Kind.NUMERICAL)
    kinds[PREDICTION_COLUMN] = Kind.CATEGORICAL
    return EndpointWindow(endpoint, ref_frame, current, tuple(columns), kinds, start_ns, end_ns)


def open_workspace(db_path: str | Path) -> Store:
    """An existing workspace, writable (so older files get the drift schema step); a
    mistyped path is an error, not a new empty workspace."""
    if not Path(db_path).exists():  # a folder is left to Store, in every command's words
        raise DriftError(f"no workspace at {db_path}")
    return Store(db_path)


def _with_prediction_note(window: EndpointWindow, result: DriftResult) -> DriftResult:
    if PREDICTION_COLUMN in window.columns:
        return result
    return replace(result, columns=(*result.columns, ColumnDrift(
        PREDICTION_COLUMN, Kind.CATEGORICAL, None, None, None, False, NO_PREDICTIONS)))


def endpoint_drift(db_path: str | Path, name: str, window_s: float, *,
                   reference_file: str | Path | None = None) -> EndpointDrift:
    """Fast drift of the endpoint's window; stores nothing."""
    store = open_workspace(db_path)
    try:
        window = endpoint_window(store, name, window_s, reference_file=reference_file)
    finally:
        store.close()
    result = evaluate(prepare_reference(window.reference, window.columns), window.current,
                      columns=window.columns, kinds=window.kinds)
    return EndpointDrift(window, _with_prediction_note(window, result))


def endpoint_report(db_path: str | Path, name: str, window_s: float, *,
                    reference_file: str | Path | None = None,
                    html_path: str | Path | None = None,
                    progress: Callable[[float], None] = lambda _: None,
                    cancelled: Callable[[], bool] = lambda: False) -> EndpointDrift:
    """Evidently's full report on the endpoint's window: HTML saved (beside the workspace
    unless ``html_path``), per-column results stored as an 'evidently' evaluation."""
    store = open_workspace(db_path)
    try:
        window = endpoint_window(store, name, window_s, reference_file=reference_file)
        html = Path(html_path) if html_path else report_path_for(db_path, window.endpoint,
                                                                  window.end_ns)
        result = evidently_report(window.reference, window.current, columns=window.columns,
                                  kinds=window.kinds, html_path=html, progress=progress,
                                  cancelled=cancelled)
        saved = html if html.exists() else None
        ev_id = save_result(store, window.endpoint, window.end_ns, result, source="evidently",
                            report_path=str(saved) if saved else None)
    finally:
        store.close()
    return EndpointDrift(window, _with_prediction_note(window, result), saved, ev_id)
