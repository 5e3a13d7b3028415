"""Table models for the replay panel: the failure list and the results grid coloured and marked
by verdict, both sorting themselves; and the proxy that filters the grid by a version's
verdict. Thread: GUI only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor

from app.core.replay import (
    CONTROL_OK,
    FIXED,
    NEWLY_BROKEN,
    NO_ANSWER,
    NO_CLASS,
    STILL_FAILING,
    Case,
    ReplayResult,
    VersionRun,
    confidence_text,
)
from app.core.replay_timing import MAX_TIMED_CALLS, TIMED_CALLS
from widgets.case_view import VersionAnswer
from widgets.verdict_style import VERDICT_COLORS, VERDICT_MARKS, text_color_for

_INDEX = QModelIndex()
# What tells failures apart first (kind, label) next to the id, where a 200 px column shows
# them; the endpoint, long and often the same for all, last.
FAILURE_COLUMNS = ("#", "kind", "label", "time", "prediction", "confidence", "endpoint")
# The verdicts a grid cell can have, in the order the filter offers them; a cell's is kept as
# its position here (one small int per case and version).
VERDICTS = (FIXED, STILL_FAILING, NEWLY_BROKEN, CONTROL_OK, NO_ANSWER)
_ASCENDING = Qt.SortOrder.AscendingOrder


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


def _numeric_order(keys: np.ndarray, descending: bool) -> np.ndarray:
    """Positions of ``keys`` sorted, ties in their first order, NaN (no value) last either
    way: a version with no confidence to show is not the least confident."""
    missing = np.isnan(keys)
    at = np.flatnonzero(~missing)
    values = keys[at]
    ranked = np.argsort(-values if descending else values, kind="stable")
    return np.concatenate([at[ranked], np.flatnonzero(missing)])


def _text_order(keys: Sequence[str], descending: bool) -> np.ndarray:
    # Python's sort keeps ties in order when reversed too.
    return np.asarray(sorted(range(len(keys)), key=keys.__getitem__, reverse=descending),
                      dtype=np.int64)


class _SortedRows(QAbstractTableModel):
    """A table whose rows show its items in ``_order`` (row -> item), sorted by the model
    itself with numpy: a QSortFilterProxyModel asks ``data`` of Python per comparison, 1 s
    for 10,000 cases. Selections and the current row follow their items across a sort."""

    def __init__(self) -> None:
        super().__init__()
        self._order = np.zeros(0, dtype=np.int64)

    def case_at(self, row: int) -> int:
        """The item (case) shown in ``row``."""
        return int(self._order[row])

    def row_of(self, case: int) -> int:
        """The row that shows item ``case``."""
        return int(np.flatnonzero(self._order == case)[0])

    def _reset_order(self, n: int) -> None:
        self._order = np.arange(n, dtype=np.int64)

    def _sort_keys(self, column: int, descending: bool) -> np.ndarray | None:
        """The items in their order sorted by ``column``; None: that column does not sort
        (no column does here: each table's model says which of its columns sort, and how)."""
        return None

    def sort(self, column: int, order: Qt.SortOrder = _ASCENDING) -> None:
        n = len(self._order)
        new = (np.arange(n, dtype=np.int64) if column < 0
               else self._sort_keys(column, order != _ASCENDING))
        if new is None or not n:
            return
        self.layoutAboutToBeChanged.emit()
        rank = np.empty(n, dtype=np.int64)
        rank[new] = np.arange(n)
        old = self.persistentIndexList()
        moved = [self.index(int(rank[self._order[p.row()]]), p.column()) for p in old]
        self._order = new
        self.changePersistentIndexList(old, moved)
        self.layoutChanged.emit()


class FailureTableModel(_SortedRows):
    """The failures a replay would run (controls are kept aside, not listed). ``cases`` stay
    in the order they were listed (newest first), whichever way the rows are sorted."""

    def __init__(self) -> None:
        super().__init__()
        self.cases: list[Case] = []

    def set_cases(self, cases: list[Case]) -> None:
        self.beginResetModel()
        self.cases = cases
        self._reset_order(len(cases))
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
        if not index.isValid():
            return None
        case = self.cases[self.case_at(index.row())]
        c = case.capture
        if role == Qt.ItemDataRole.ToolTipRole and index.column() == len(FAILURE_COLUMNS) - 1:
            return c.endpoint  # elided in the cell
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        return (case.capture_id, str(c.status), c.label or "", _clock(c.ts_ns),
                c.prediction or "", "" if c.confidence is None else f"{c.confidence:.3f}",
                _short(c.endpoint))[index.column()]

    def _sort_keys(self, column: int, descending: bool) -> np.ndarray | None:
        captures = [c.capture for c in self.cases]
        if column == 0:
            return _numeric_order(np.asarray([c.capture_id for c in self.cases], float),
                                  descending)
        if column == 3:
            return _numeric_order(np.asarray([c.ts_ns for c in captures], float), descending)
        if column == 5:
            return _numeric_order(np.asarray(
                [np.nan if c.confidence is None else c.confidence for c in captures], float),
                descending)
        texts = {1: lambda c: str(c.status), 2: lambda c: c.label or "",
                 4: lambda c: c.prediction or "", 6: lambda c: c.endpoint}
        text = texts.get(column)
        return None if text is None else _text_order([text(c) for c in captures], descending)


class ResultTableModel(_SortedRows):
    """One row per case; per version its verdict's mark, class (confidence), coloured by
    verdict. Sorting by a version's column sorts by its confidence, by "first failing" in
    bisect order."""

    FIXED_COLUMNS = ("#", "kind", "label")

    def __init__(self) -> None:
        super().__init__()
        self.result: ReplayResult | None = None
        self._first: list[str | None] = []
        self._verdicts: list[np.ndarray] = []  # per run: each case's verdict (VERDICTS index)
        # The cases whose latency is one request's, or several calls' alone (SLOW cases).
        self._request_rows: set[int] = set()
        self._timed_alone: set[int] = set()

    def set_result(self, result: ReplayResult | None) -> None:
        self.beginResetModel()
        self.result = result
        self._first = result.first_failing() if result else []
        self._verdicts = [_verdict_codes(result, j) for j in range(len(result.runs))] \
            if result else []
        self._request_rows = set(result.request_rows.tolist()) if result else set()
        self._timed_alone = set(result.timed_alone.tolist()) if result else set()
        self._reset_order(len(result.cases) if result else 0)
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

    def verdict(self, case: int, run: int) -> str:
        """Case ``case``'s verdict on run ``run``, as ``ReplayResult.verdict`` gives it."""
        return VERDICTS[self._verdicts[run][case]]

    def verdict_mask(self, run: int, verdict: str) -> np.ndarray:
        """Per case, whether it has ``verdict`` on run ``run``."""
        return self._verdicts[run] == VERDICTS.index(verdict)

    def verdict_counts(self, run: int) -> dict[str, int]:
        counts = np.bincount(self._verdicts[run], minlength=len(VERDICTS))
        return {v: int(n) for v, n in zip(VERDICTS, counts, strict=True)}

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
        i, col = self.case_at(index.row()), index.column()
        j = self.run_of(col)
        if role == Qt.ItemDataRole.DisplayRole:
            case = self.result.cases[i]
            if col == 0:
                return case.capture_id
            if col == 1:
                return "control" if case.control else str(case.capture.status)
            if col == 2:
                return case.capture.label or ""
            if j is None:
                return self._first[i] or ""
            return self._cell_text(i, j)
        if j is None:
            if role == Qt.ItemDataRole.ToolTipRole and col >= len(self.FIXED_COLUMNS):
                return self._first[i]  # "first failing": a version's name, maybe elided
            return None
        background = VERDICT_COLORS[self.verdict(i, j)]
        if role == Qt.ItemDataRole.BackgroundRole:
            return QColor(background)
        if role == Qt.ItemDataRole.ForegroundRole:
            return QColor(text_color_for(background))
        if role == Qt.ItemDataRole.ToolTipRole:
            run = self.result.runs[j]
            if i in run.unanswered:
                return f"no answer: {run.errors.get(i) or 'the version was not asked'}"
            return _verdict_text(self.result, i, j)
        return None

    def _cell_text(self, i: int, j: int) -> str:
        """The cell's text, such as "✓ 1 (0.723)": the verdict in a glyph or word, so it
        reads without its colour; "no answer" where the version could not be asked (as the
        summary counts it), and "✗ error" where it was asked and failed."""
        assert self.result is not None
        verdict = self.verdict(i, j)
        if verdict == NO_ANSWER:
            return VERDICT_MARKS[NO_ANSWER]
        run = self.result.runs[j]
        mark = VERDICT_MARKS[verdict]
        if i in run.errors:
            return f"{mark} error"
        pred = int(run.prediction[i])
        conf = float(run.confidence[i])
        text = "-" if pred == NO_CLASS else str(pred)
        return f"{mark} {text}" if np.isnan(conf) else f"{mark} {text} ({self._confidence(run, i)})"

    def widest_texts(self, run: int) -> list[str]:
        """The widest text each verdict run ``run`` has takes in its cells (to size its
        column without measuring every cell)."""
        assert self.result is not None
        r = self.result.runs[run]
        answered = r.prediction[r.prediction != NO_CLASS]
        digits = len(str(int(np.abs(answered).max()))) if answered.size else 1
        texts = [VERDICT_MARKS[NO_ANSWER]]
        for verdict, n in self.verdict_counts(run).items():
            if n and verdict != NO_ANSWER:
                texts += [f"{VERDICT_MARKS[verdict]} {'8' * digits} (0.000)",
                          f"{VERDICT_MARKS[verdict]} error"]
        return texts

    def _sort_keys(self, column: int, descending: bool) -> np.ndarray | None:
        result = self.result
        if result is None:
            return None
        j = self.run_of(column)
        if j is not None:
            return _numeric_order(result.runs[j].confidence.astype(np.float64), descending)
        if column == 0:
            return _numeric_order(np.asarray(
                [np.nan if c is None else c for c in result.capture_ids], float), descending)
        if column in (1, 2):
            control = result.control_mask
            texts = [("control" if control[i] else result.kind(i)) if column == 1
                     else result.label(i) or "" for i in range(len(result.cases))]
            return _text_order(texts, descending)
        # "first failing" in bisect order, not by name; failing on none last.
        position = {r.version: k for k, r in enumerate(result.runs)}
        return _numeric_order(np.asarray([position.get(v, np.nan) if v else np.nan
                                          for v in self._first], float), descending)

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
        if i in self._request_rows:
            means = "one request of its own, sent after the batches"
        elif i in self._timed_alone:
            means = (f"{TIMED_CALLS} to {MAX_TIMED_CALLS} calls of it alone (more where the "
                     "machine was noisy), round by round beside the other versions' (a SLOW "
                     "capture, held to its SLO)")
        else:
            means = "its share of its batch's time (the pace through a backlog)"
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
                verdict=self.verdict(i, j), error=run.errors.get(i),
                why=_verdict_text(self.result, i, j), latency_means=means))
        return out



def _verdict_codes(result: ReplayResult, run: int) -> np.ndarray:
    """Each case's verdict on ``run`` (its index in VERDICTS), worked out for all cases at
    once as ``ReplayResult.verdict`` does it for one: the filter and a sort ask for every
    case, the grid for every cell it draws."""
    control = result.control_mask
    failing = np.asarray(result.failing[run], dtype=bool)
    codes = np.where(control, np.where(failing, 2, 3), np.where(failing, 1, 0))
    unanswered = result.runs[run].unanswered
    if unanswered:
        codes[np.fromiter(unanswered, dtype=np.int64, count=len(unanswered))] = 4
    return codes.astype(np.int8)


class ResultFilterProxy(QSortFilterProxyModel):
    """The grid's rows with one version's verdict (``show``), or all of them. Sorting is the
    source model's (``_SortedRows``): a sort asked of this proxy is passed down to it."""

    def __init__(self, source: ResultTableModel) -> None:
        super().__init__()
        self.source = source
        self.setSourceModel(source)
        self._keep: np.ndarray | None = None  # per case; None: every case
        self.shown: tuple[str, int] | None = None  # (verdict, run) shown, or None
        # A new result has other cases: its filter is set anew by whoever set the result.
        source.modelAboutToBeReset.connect(self._forget)

    def _forget(self) -> None:
        self._keep, self.shown = None, None

    def show(self, verdict: str | None, run: int | None = None) -> None:
        """Only the cases with ``verdict`` on run ``run``; None: every case."""
        self.beginFilterChange()
        if verdict is None or run is None:
            self._forget()
        else:
            self._keep = self.source.verdict_mask(run, verdict)
            self.shown = (verdict, run)
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row: int,
                         source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        return self._keep is None or bool(self._keep[self.source.case_at(source_row)])

    def sort(self, column: int, order: Qt.SortOrder = _ASCENDING) -> None:
        self.source.sort(column, order)

    def case_at(self, row: int) -> int | None:
        """The case shown in this proxy's ``row``; None for no row."""
        index = self.mapToSource(self.index(row, 0))
        return self.source.case_at(index.row()) if index.isValid() else None

    def row_of(self, case: int) -> int | None:
        """This proxy's row that shows ``case``; None while the filter hides it."""
        index = self.mapFromSource(self.source.index(self.source.row_of(case), 0))
        return index.row() if index.isValid() else None


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
