"""Table models for the replay panel: the failure list and the results grid coloured by verdict.
Thread: GUI only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor

from app.core.replay import NO_CLASS, Case, ReplayResult, VersionRun, confidence_text
from widgets.case_view import VERDICT_COLORS, VersionAnswer

_INDEX = QModelIndex()
FAILURE_COLUMNS = ("#", "time", "endpoint", "kind", "label", "prediction", "confidence")


@functools.lru_cache(maxsize=4)
def feature_names(width: int, names: Sequence[str] = ()) -> list[str]:
    """``names`` (the endpoint's, ``input_names``) when the input has that many values, else
    f0..fn: a name that does not belong to a value is worse than none."""
    return list(names) if len(names) == width else [f"f{i}" for i in range(width)]


def _short(uri: str, width: int = 32) -> str:
    if uri.startswith("onnx:"):
        uri = Path(uri[5:].split("?")[0]).name
    return uri if len(uri) <= width else uri[: width - 1] + "…"


def _clock(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9).strftime("%H:%M:%S")


class FailureTableModel(QAbstractTableModel):
    """The failures a replay would run (controls are kept aside, not listed)."""

    def __init__(self) -> None:
        super().__init__()
        self.cases: list[Case] = []

    def set_cases(self, cases: list[Case]) -> None:
        self.beginResetModel()
        self.cases = cases
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _INDEX) -> int:
        return 0 if parent.isValid() else len(self.cases)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = _INDEX) -> int:
        return 0 if parent.isValid() else len(FAILURE_COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return FAILURE_COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex,
             role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid() or role != Qt.ItemDataRole.DisplayRole:
            return None
        case = self.cases[index.row()]
        c = case.capture
        return (case.capture_id, _clock(c.ts_ns), _short(c.endpoint), str(c.status),
                c.label or "", c.prediction or "",
                "" if c.confidence is None else f"{c.confidence:.3f}")[index.column()]


class ResultTableModel(QAbstractTableModel):
    """One row per case; per version its class (confidence), coloured by verdict."""

    FIXED_COLUMNS = ("#", "kind", "label")

    def __init__(self) -> None:
        super().__init__()
        self.result: ReplayResult | None = None
        self._first: list[str | None] = []

    def set_result(self, result: ReplayResult | None) -> None:
        self.beginResetModel()
        self.result = result
        self._first = result.first_failing() if result else []
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _INDEX) -> int:
        return 0 if parent.isValid() or self.result is None else len(self.result.cases)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = _INDEX) -> int:
        if parent.isValid() or self.result is None:
            return 0
        return len(self.FIXED_COLUMNS) + len(self.result.runs) + 1

    def run_of(self, column: int) -> int | None:
        if self.result is None:
            return None
        j = column - len(self.FIXED_COLUMNS)
        return j if 0 <= j < len(self.result.runs) else None

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> object:
        # The tooltip holds the whole name: a long one is elided in its capped column.
        if role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole) \
                or orientation != Qt.Orientation.Horizontal or self.result is None:
            return None
        if section < len(self.FIXED_COLUMNS):
            return self.FIXED_COLUMNS[section]
        j = self.run_of(section)
        return self.result.runs[j].version if j is not None else "first failing"

    def data(self, index: QModelIndex | QPersistentModelIndex,
             role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid() or self.result is None:
            return None
        i, col = index.row(), index.column()
        case = self.result.cases[i]
        j = self.run_of(col)
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return case.capture_id
            if col == 1:
                return "control" if case.control else str(case.capture.status)
            if col == 2:
                return case.capture.label or ""
            if j is None:
                return self._first[i] or ""
            run = self.result.runs[j]
            if i in run.errors:
                return "error"
            pred = int(run.prediction[i])
            conf = float(run.confidence[i])
            text = "-" if pred == NO_CLASS else str(pred)
            return text if np.isnan(conf) else f"{text} ({self._confidence(run, i)})"
        if role == Qt.ItemDataRole.BackgroundRole and j is not None:
            return QColor(VERDICT_COLORS[self.result.verdict(i, j)])
        if role == Qt.ItemDataRole.ForegroundRole and j is not None:
            return QColor("white")
        if role == Qt.ItemDataRole.ToolTipRole and j is not None:
            run = self.result.runs[j]
            return run.errors.get(i) or _verdict_text(self.result, i, j)
        if role == Qt.ItemDataRole.ToolTipRole and col >= len(self.FIXED_COLUMNS):
            return self._first[i]  # "first failing": a version's name, maybe elided
        return None

    def _confidence(self, run: VersionRun, i: int) -> str:
        assert self.result is not None
        # On the side of the case's own limit it was judged on (its endpoint's minimum, or
        # the replay's for low-confidence captures), compared as ``judge`` compares.
        check = self.result.confidence_check(i, run.confidence[i])
        if check is None:
            return f"{float(run.confidence[i]):.3f}"
        return confidence_text(float(run.confidence[i]), *check)

    def answers(self, i: int) -> list[VersionAnswer]:
        """Every version's answer to case ``i``, for the side-by-side view."""
        assert self.result is not None
        out = []
        for j, run in enumerate(self.result.runs):
            outs = run.output(i)
            pred = int(run.prediction[i])
            conf, lat = float(run.confidence[i]), float(run.latency_ms[i])
            out.append(VersionAnswer(
                version=run.version,
                scores=_scores([a for _, a in outs]) if outs else None,
                prediction=None if pred == NO_CLASS else str(pred),
                # The view prints 3 decimals: given as the grid shows it, so that a value
                # judged below the threshold never prints at it there either.
                confidence=None if np.isnan(conf) else float(self._confidence(run, i)),
                latency_ms=None if np.isnan(lat) else lat,
                verdict=self.result.verdict(i, j), error=run.errors.get(i),
                why=_verdict_text(self.result, i, j)))
        return out


def _verdict_text(result: ReplayResult, i: int, j: int) -> str:
    """The verdict, and why when the case fails there ("still failing: class 1, labelled
    2; confidence 0.412 under 0.6 (its endpoint's minimum)")."""
    verdict = result.verdict(i, j).replace("_", " ")
    why = result.reasons(i, j)
    return f"{verdict}: {'; '.join(why)}" if why else verdict


def _scores(arrays: list[np.ndarray]) -> np.ndarray:
    """What the view draws as bars: the first output, or, when that is the class itself (a
    label first, as scikit-learn's exports answer), the class scores after it."""
    first = arrays[0]
    if first.dtype.kind in "iu" and first.size == 1:
        scores = next((a for a in arrays[1:] if a.dtype.kind == "f" and a.size >= 2), None)
        if scores is not None:
            first = scores
    return first.reshape(-1).astype(np.float64)
