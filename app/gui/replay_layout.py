"""The replay panel's widget tree below and beside its filters: the run bar (add a version,
provider, Replay, Cancel, progress, saved replays), the failure list over the version picker,
the results grid (under its verdict filter) and the case view side by side; how the grid's
verdict cells are drawn when selected or stale; and how the grid, the failure list and the
saved box are sized to what they show. Builds and sizes widgets only: the panel connects them
and lays the rows out. Thread: GUI only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QPainter, QPalette, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.core.domain import utc_text
from app.core.replay import FIXED, NEWLY_BROKEN, NO_ANSWER, STILL_FAILING, selection_text
from app.core.replay_store import saved_selection, saved_title
from app.core.summary import fit
from app.gui.replay_models import FailureTableModel, ResultFilterProxy, ResultTableModel
from app.gui.replay_versions import VersionListWidget
from probes.onnx_local import available_providers
from widgets.case_view import CaseViewWidget
from widgets.flow_layout import FlowLayout

_COLUMN_CHARS = 24  # a results column is at most this many average characters wide
_SAVED_WIDE = "#99 9999 cases"  # the saved-replay box is at least this wide
_SAVED_NAME_CHARS = 28  # a saved replay's title (or selection) in its box, cut in the middle
# Widening the grid to its columns after a replay leaves the failure list and the case view
# at least this wide: the list its #, kind and label columns (``_list_floor``), never under
# _LIST_MIN_PX; the case view its features beside the bars, and the answers' columns (its
# input pane narrows with it). At 500 the case view kept the 5th version and "first failing"
# of a 1234 px dock out of sight.
_LIST_MIN_PX = 180
_LIST_KEY_COLUMNS = 3  # the failure list's #, kind and label
_CASE_MIN_PX = 340
_CASE_LEAST_PX = 300  # then this, for a grid of more versions: the bars narrower
# The verdicts the grid's filter offers per version, in its order ("ok", a control still
# right, is what most controls are: not worth a line).
_FILTER_VERDICTS = (FIXED, STILL_FAILING, NEWLY_BROKEN, NO_ANSWER)
_STALE_OPACITY = 0.35  # a previous replay's verdict cells, while the next one runs


@dataclass
class ReplayWidgets:
    """What ``build_widgets`` made; ``run_row`` and ``split`` hold the rest, in place."""

    failure_model: FailureTableModel
    failure_view: QTableView
    failure_count: QLabel
    version_list: VersionListWidget
    add_button: QPushButton
    provider_box: QComboBox
    run_button: QPushButton
    cancel_button: QPushButton
    progress: QProgressBar
    saved_box: QComboBox
    open_button: QPushButton
    export_button: QPushButton
    result_model: ResultTableModel
    result_proxy: ResultFilterProxy  # what the grid shows: the model, filtered by verdict
    result_view: QTableView
    show_box: QComboBox  # the grid's verdict filter
    shown_count: QLabel  # how many of the cases the filter shows
    summary: QLabel
    case_view: CaseViewWidget
    run_row: FlowLayout  # the run bar, wrapping in a narrow dock
    split: QSplitter  # failure list and versions | results grid | case view


def _one_line_rows(view: QTableView) -> None:
    """Rows one line of text tall (the style's default is ~30 px): in a 430 px dock the
    tables show a third more rows, and three versions' answers fit under the bars."""
    row_px = view.fontMetrics().height() + 6
    header = view.verticalHeader()
    header.setMinimumSectionSize(row_px)
    header.setDefaultSectionSize(row_px)


def _sortable(view: QTableView) -> None:
    """Sorted by a click on a column's header; first in the order the rows came (no column
    marked), not by the first column. Tab leaves the table instead of walking its cells:
    a keyboard user got stuck in it, short of Replay, Open and Export."""
    view.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
    view.horizontalHeader().setSortIndicatorClearable(True)
    view.setSortingEnabled(True)
    view.setTabKeyNavigation(False)


class VerdictCellDelegate(QStyledItemDelegate):
    """Draws a verdict cell (one with a background colour) in its colours when its row is
    selected too, framed in the text colour: the selection's flat highlight hid the
    selected case's verdicts. A disabled grid (a previous replay, while the next one runs)
    draws them faded."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        state = option.state
        selected = bool(state & QStyle.StateFlag.State_Selected)
        enabled = bool(state & QStyle.StateFlag.State_Enabled)
        if index.data(Qt.ItemDataRole.BackgroundRole) is None or (enabled and not selected):
            super().paint(painter, option, index)
            return
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.state &= ~QStyle.StateFlag.State_Selected
        # Drawn with the enabled palette: the fade below is what says "stale", and the
        # foreground stays the one chosen for contrast on this background.
        opt.state |= QStyle.StateFlag.State_Enabled
        widget = opt.widget
        style = widget.style() if widget is not None else QApplication.style()
        painter.save()
        if not enabled:
            painter.setOpacity(_STALE_OPACITY)
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)
        if selected and enabled:
            pen = QPen(option.palette.color(QPalette.ColorRole.Text))
            pen.setWidth(2)
            painter.setPen(pen)
            painter.drawRect(option.rect.adjusted(1, 1, -1, -1))
        painter.restore()


def build_widgets(provider: str) -> ReplayWidgets:
    """The widgets, ``provider`` chosen (the first one available if it is not)."""
    failure_model = FailureTableModel()
    failure_view = QTableView()
    failure_view.setModel(failure_model)
    failure_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    failure_view.verticalHeader().setVisible(False)
    failure_view.horizontalHeader().setResizeContentsPrecision(200)
    _one_line_rows(failure_view)
    _sortable(failure_view)
    failure_count = QLabel("no failures loaded")
    failure_count.setWordWrap(True)  # else its length sets the column's minimum
    failure_count.setToolTip("select rows to replay only those")

    version_list = VersionListWidget()
    add_button = QPushButton("Add ONNX…")
    provider_box = QComboBox()
    provider_box.setToolTip("onnxruntime provider for the ONNX versions; one that "
                            "cannot start is reported, never replaced by CPU")
    for name in available_providers():
        provider_box.addItem(name, name)
    provider_box.setCurrentIndex(max(0, provider_box.findData(provider)))
    run_button = QPushButton("Replay")
    cancel_button = QPushButton("Cancel")
    cancel_button.setEnabled(False)
    progress = QProgressBar()
    progress.setRange(0, 1000)
    saved_box = QComboBox()
    saved_box.setMinimumContentsLength(len(_SAVED_WIDE))  # widened to its entries
    saved_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    open_button = QPushButton("Open")
    open_button.setEnabled(False)
    export_button = QPushButton("Export CSV…")
    export_button.setToolTip("every case of the replay shown, one row each, with each "
                             "version's class, confidence, latency and verdict")
    export_button.setEnabled(False)
    saved = QWidget()  # kept on one line when the row wraps
    saved_row = QHBoxLayout(saved)
    saved_row.setContentsMargins(0, 0, 0, 0)
    for w in (QLabel("saved:"), saved_box, open_button, export_button):
        saved_row.addWidget(w)
    run_row = FlowLayout()
    for w in (add_button, provider_box, run_button, cancel_button, progress, saved):
        run_row.addWidget(w, 1 if w is progress else 0)

    result_model = ResultTableModel()
    result_proxy = ResultFilterProxy(result_model)
    result_view = QTableView()
    result_view.setModel(result_proxy)
    result_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    result_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    result_view.verticalHeader().setVisible(False)
    result_view.setItemDelegate(VerdictCellDelegate(result_view))
    _one_line_rows(result_view)
    _sortable(result_view)
    result_view.horizontalHeader().setToolTip(
        "click to sort: a version by its confidence, \"first failing\" in bisect order; "
        "again to reverse, a third time for the replay's order")
    # Fitting columns measures cells row by row: 1,000 rows (Qt's default) took 143 ms of
    # the GUI thread on a 10,000-case replay, 200 rows take 28 ms.
    result_view.horizontalHeader().setResizeContentsPrecision(200)
    # A long version name in a capped column (``fit_columns``) keeps its start and its end,
    # where names of one model's versions differ ("…_retrained_v17").
    result_view.horizontalHeader().setTextElideMode(Qt.TextElideMode.ElideMiddle)
    show_box = QComboBox()
    show_box.setToolTip("show only the cases with this verdict on this version")
    show_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    show_box.setMinimumContentsLength(len("newly broken on wine-v3"))  # the list shows all
    show_box.setEnabled(False)
    shown_count = QLabel("")
    grid = QWidget()
    gv = QVBoxLayout(grid)
    gv.setContentsMargins(0, 0, 0, 0)
    gv.setSpacing(2)
    show_row = QHBoxLayout()
    show_row.addWidget(QLabel("show:"))
    show_row.addWidget(show_box, 1)
    show_row.addWidget(shown_count)
    gv.addLayout(show_row)
    gv.addWidget(result_view, 1)
    summary = QLabel("")
    summary.setWordWrap(True)
    summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    case_view = CaseViewWidget()

    left = QWidget()
    lv = QVBoxLayout(left)
    lv.setContentsMargins(0, 0, 0, 0)
    lv.addWidget(failure_view, 1)
    lv.addWidget(failure_count)
    lv.addWidget(QLabel("Versions (bisect order):"))
    lv.addWidget(version_list)
    # Side by side: the panel is docked under the plots, wide and short. The filters and the
    # per-version summary span the width above, so no column is as wide as they are.
    split = QSplitter(Qt.Orientation.Horizontal)
    for column, stretch in ((left, 3), (grid, 5), (case_view, 4)):
        split.addWidget(column)
        split.setStretchFactor(split.count() - 1, stretch)
    split.setChildrenCollapsible(False)
    return ReplayWidgets(
        failure_model=failure_model, failure_view=failure_view, failure_count=failure_count,
        version_list=version_list, add_button=add_button, provider_box=provider_box,
        run_button=run_button, cancel_button=cancel_button, progress=progress,
        saved_box=saved_box, open_button=open_button, export_button=export_button,
        result_model=result_model, result_proxy=result_proxy, result_view=result_view,
        show_box=show_box, shown_count=shown_count, summary=summary, case_view=case_view,
        run_row=run_row, split=split)


def fit_columns(view: QTableView, model: ResultTableModel) -> None:
    """The results grid's columns fitted to their contents, each capped: a long version
    name would make its column as wide as its header, the grid's width, leaving its cells
    colour only (capped, it is elided; the header's tooltip has it). A version's column is
    as wide as its widest verdict's text (``model.widest_texts``), which the 200 rows
    measured may not hold: "▲ new 1 (0.953)" of a control at the end read "▲ new 1 …"."""
    view.resizeColumnsToContents()
    metrics = view.fontMetrics()
    cap = metrics.averageCharWidth() * _COLUMN_CHARS
    # What the item delegate adds to a text's width, and 2 px so that rounding never elides.
    pad = 2 * (view.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, view)
               + 1) + 2
    header = view.horizontalHeader()
    for c in range(view.model().columnCount()):
        j = model.run_of(c)
        if j is not None:
            widest = max(metrics.horizontalAdvance(t) for t in model.widest_texts(j)) + pad
            if header.sectionSize(c) < widest:
                header.resizeSection(c, widest)
        if header.sectionSize(c) > cap:
            header.resizeSection(c, cap)


def sort_again(view: QTableView) -> None:
    """New rows sorted as the header says (the model's reset put them in their own order),
    or the header's mark taken away when that column is gone."""
    header = view.horizontalHeader()
    section = header.sortIndicatorSection()
    if 0 <= section < view.model().columnCount():
        view.sortByColumn(section, header.sortIndicatorOrder())
    elif section >= 0:
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)


def fit_failure_columns(view: QTableView) -> None:
    """The failure list's columns fitted to their contents (the first 200 rows), so # kind
    and label show in its narrow column; the endpoint, last, may run off the side."""
    view.resizeColumnsToContents()


def _list_floor(failures: QTableView) -> int:
    """The failure list's width that shows its #, kind and label columns whole."""
    header = failures.horizontalHeader()
    columns = sum(header.sectionSize(c) for c in range(
        min(_LIST_KEY_COLUMNS, header.count())))
    return max(_LIST_MIN_PX, columns + 2 * failures.frameWidth()
               + failures.verticalScrollBar().sizeHint().width())


def widen_grid(view: QTableView, split: QSplitter, failures: QTableView | None = None) -> None:
    """Widen the grid (the middle of ``split``) to its columns, so every version and "first
    failing" are in sight, taking from the failure list (``failures``: its columns set its
    floor) and the case view, down to a working width each. Where that is not enough the
    grid scrolls sideways in itself."""
    sizes = split.sizes()
    need = (view.horizontalHeader().length() + 2 * view.frameWidth()
            + view.verticalScrollBar().sizeHint().width())
    short = need - sizes[1]
    list_floor = _list_floor(failures) if failures is not None else _LIST_MIN_PX
    # Each down to a comfortable width: the list to its #, kind and label, the case view to
    # its features beside the bars. Further (the list to #, the case view to its bars and
    # answers) only where that brings every column in sight: a grid that scrolls anyway
    # gains nothing from a cramped case view.
    comfortable = ((0, list_floor), (2, _CASE_MIN_PX))
    least = ((0, _LIST_MIN_PX), (2, _CASE_LEAST_PX))
    room = sum(max(0, sizes[k] - floor) for k, floor in least)
    for k, floor in comfortable + (least if room >= short else ()):
        give = max(0, min(short, sizes[k] - floor))
        sizes[k] -= give
        sizes[1] += give
        short -= give
    if sizes != split.sizes():
        split.setSizes(sizes)


def fill_filter_box(box: QComboBox, model: ResultTableModel,
                    keep: tuple[str, str] | None = None) -> None:
    """The grid's filter: every case, then per version each verdict it has ("newly broken on
    wine-v3 (22)"; none with no cases); data (verdict, run index), None for every case.
    ``keep``: (verdict, version name) to choose again if the new replay has it."""
    box.blockSignals(True)  # the panel applies the choice once, after
    box.clear()
    result = model.result
    box.addItem(f"all {model.rowCount()} cases", None)
    chosen = 0
    for j, run in enumerate(result.runs if result is not None else []):
        counts = model.verdict_counts(j)
        for verdict in _FILTER_VERDICTS:
            if counts[verdict]:
                box.addItem(f"{verdict.replace('_', ' ')} on {run.version} "
                            f"({counts[verdict]})", (verdict, j))
                if keep == (verdict, run.version):
                    chosen = box.count() - 1
    box.setCurrentIndex(chosen)
    box.setEnabled(box.count() > 1)
    box.blockSignals(False)


def _versions_of(row: Mapping[str, Any]) -> list[dict]:
    try:
        versions = json.loads(row.get("versions") or "[]")
    except ValueError:
        return []
    return [v for v in versions if isinstance(v, dict)] if isinstance(versions, list) else []


def fill_saved_box(box: QComboBox, saved: Sequence[Mapping[str, Any]],
                   select: int | None = None) -> None:
    """The saved replays (the store's rows: ``id``, ``cases``, ``cancelled``), newest first;
    replay ``select`` chosen when it is there (the one on screen), else the one chosen
    before, else the newest."""
    before = box.currentData()
    box.clear()
    for r in saved:
        # Its title, else what it selected: "#3 1001 cases" told replays apart by id alone.
        title, selection = saved_title(dict(r)), selection_text(saved_selection(dict(r)))
        cancelled = " (cancelled)" if r["cancelled"] else ""
        box.addItem(f"#{r['id']} {fit(title or selection, _SAVED_NAME_CHARS)} · "
                    f"{r['cases']} cases{cancelled}", r["id"])
        when = utc_text(r["created_ns"]) if r.get("created_ns") else "unknown time"
        versions = ", ".join(v.get("name", "?") for v in _versions_of(r))
        tip = "\n".join(x for x in (
            f"Replay #{r['id']}{' “' + title + '”' if title else ''}{cancelled}",
            f"selected: {selection}", f"{r['cases']} cases on {versions or 'no version'}",
            f"saved {when}") if x)
        box.setItemData(box.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
    # As wide as its longest entry (capped: the title's cut), so "(cancelled)" is not cut.
    box.setMinimumContentsLength(max(
        [len(_SAVED_WIDE)] + [len(box.itemText(i)) for i in range(box.count())]))
    for wanted in (select, before):
        at = box.findData(wanted) if wanted is not None else -1
        if at >= 0:
            box.setCurrentIndex(at)
            break
