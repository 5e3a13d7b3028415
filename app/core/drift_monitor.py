"""Live drift: keeps a rolling window of captured inputs per endpoint and evaluates it against
the endpoint's reference every few seconds, writing drift points. Thread: its own worker.

The instance is a Recorder listener (``recorder.subscribe(monitor)``). On the recorder thread
it only queues the committed captures; the worker thread owns the windows, its own Store
connection (a Store belongs to one thread) and the evaluations. Subscribers get each
``DriftUpdate`` on the worker thread, after its points are committed.

Prediction drift: predictions are compared with the reference's ``prediction`` column; a
reference without one (a data file of inputs and labels) gets a baseline from the endpoint's
first ``window_rows`` captured predictions in the workspace instead: the same baseline the
drift panel draws, and the same after a restart.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from app.core.background import BackgroundEvaluator
from app.core.domain import Batch, Capture
from app.core.drift import (
    PREDICTION_COLUMN,
    DriftError,
    DriftResult,
    PreparedReference,
    evaluate,
    tensor_rows,
)
from app.core.drift_history import first_predictions
from app.core.drift_stats import ColumnReference, Kind
from app.core.references import get_reference, input_columns, load_reference, refuse_width
from app.core.store import Store, StoreError

log = logging.getLogger(__name__)

SOURCE = "fast"


@dataclass(frozen=True, slots=True)
class DriftUpdate:
    """One committed evaluation of one endpoint's window."""

    endpoint: str
    ts_ns: int
    result: DriftResult
    evaluation_id: int


@dataclass(slots=True)
class _Window:
    rows: deque = field(default_factory=deque)  # (ts_ns, features row, prediction)
    new_rows: int = 0
    reference: PreparedReference | None = None
    reference_set_ns: int | None = None
    features: tuple[str, ...] = ()
    baseline: list = field(default_factory=list)  # the endpoint's first recorded predictions
    missing_logged: bool = False


def save_result(store: Store, endpoint: str, ts_ns: int, result: DriftResult, *,
                source: str = SOURCE, report_path: str | None = None) -> int:
    """Write one evaluation's per-column points; returns the evaluation id."""
    return store.write_drift_evaluation(
        endpoint, ts_ns, source=source, rows_reference=result.rows_reference,
        rows_current=result.rows_current, share_drifted=result.share_drifted,
        points=[(c.name, c.method, c.score, c.threshold, c.drifted) for c in result.columns],
        report_path=report_path)


class DriftMonitor(BackgroundEvaluator):
    thread_name = "drift"

    def __init__(self, db_path: str | Path, *, window_rows: int = 500, min_rows: int = 50,
                 interval_s: float = 5.0) -> None:
        super().__init__(db_path, interval_s=interval_s)
        self.window_rows = window_rows
        self.min_rows = min_rows
        self._windows: dict[str, _Window] = {}

    def __call__(self, batch: Batch) -> None:
        """Recorder listener: queue the sampled captures that carry inputs; nothing else."""
        captures = [c for c in batch.captures if c.inputs and c.sampled]
        if captures:
            self._queue.put(captures)

    # -- worker thread --------------------------------------------------------------------

    def _take(self, item: list[Capture]) -> None:
        self._add(item)

    def _add(self, captures: list[Capture]) -> None:
        for c in captures:
            window = self._windows.setdefault(c.endpoint, _Window(deque(maxlen=self.window_rows)))
            try:
                rows = tensor_rows(c.inputs[0])
            except (ValueError, TypeError) as exc:  # a tensor whose bytes do not fit its shape
                self._report(f"drift of {c.endpoint}: skipped a capture: {exc}")
                continue
            if len(rows) == 1:
                window.rows.append((c.ts_ns, rows[0], c.prediction))
            else:  # a batch: its rows count as requests; its one prediction names none
                window.rows.extend((c.ts_ns, row, None) for row in rows)
            window.new_rows += len(rows)

    def _evaluate(self, store: Store) -> None:
        for endpoint, window in self._windows.items():
            if window.new_rows == 0 or len(window.rows) < self.min_rows:
                continue
            try:
                update = self._evaluate_window(store, endpoint, window)
            except (DriftError, StoreError) as exc:
                self._report(f"drift of {endpoint}: {exc}")
                continue
            except Exception as exc:  # keep watching the other endpoints; say what broke
                log.exception("drift of %s failed", endpoint)
                self._report(f"drift of {endpoint}: internal error: {type(exc).__name__}: {exc}")
                continue
            if update is None:
                continue
            window.new_rows = 0
            self._notify(update)

    def _report(self, message: str) -> None:
        # Logged once per distinct message: a missing reference file would otherwise log
        # every few seconds.
        if message != self.last_error:
            log.warning("%s", message)
        self.last_error = message

    def _load_reference(self, store: Store, endpoint: str, window: _Window) -> bool:
        row = store.drift_reference(endpoint)
        if row is None:
            if not window.missing_logged:
                log.info("no drift reference for %s; set one to see its drift", endpoint)
                window.missing_logged = True
            return False
        if window.reference is not None and row["set_ns"] == window.reference_set_ns:
            return True
        reference = get_reference(store, endpoint)
        assert reference is not None
        frame = load_reference(store, reference)
        features = tuple(reference.columns or input_columns(frame))
        refuse_width(endpoint, features, len(window.rows[-1][1]))
        usable = [f for f in features if f in frame.columns]
        columns = usable + ([PREDICTION_COLUMN] if PREDICTION_COLUMN in frame.columns else [])
        window.reference = PreparedReference(frame, columns).warm()
        window.reference_set_ns = row["set_ns"]
        window.features = features
        return True

    def _evaluate_window(self, store: Store, endpoint: str, window: _Window
                         ) -> DriftUpdate | None:
        if not self._load_reference(store, endpoint, window):
            return None
        reference = window.reference
        assert reference is not None
        rows = list(window.rows)
        width = len(window.features)
        matrix = np.full((len(rows), width), np.nan)
        for i, (_, values, _) in enumerate(rows):
            k = min(width, len(values))
            matrix[i, :k] = values[:k]
        current = pd.DataFrame(matrix, columns=list(window.features))
        current[PREDICTION_COLUMN] = pd.Series([r[2] for r in rows], dtype=object)
        columns = [f for f in window.features if f in reference]
        if PREDICTION_COLUMN not in reference:
            if len(window.baseline) < self.window_rows:
                # Read from the workspace, not gathered since this monitor started: after a
                # restart the baseline is still the endpoint's first predictions.
                window.baseline = first_predictions(store, endpoint, self.window_rows)
            if len(window.baseline) >= self.window_rows:
                # Complete: it becomes the reference's prediction column.
                reference.add_column(ColumnReference.prepare(
                    PREDICTION_COLUMN, pd.Series(window.baseline, dtype=object)))
        if PREDICTION_COLUMN in reference:
            columns.append(PREDICTION_COLUMN)
        kinds = dict.fromkeys(columns, Kind.NUMERICAL)
        kinds[PREDICTION_COLUMN] = Kind.CATEGORICAL
        result = evaluate(reference, current, columns=columns, kinds=kinds)
        ts_ns = rows[-1][0]
        ev_id = save_result(store, endpoint, ts_ns, result)
        return DriftUpdate(endpoint, ts_ns, result, ev_id)
