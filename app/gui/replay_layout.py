"""The replay panel's widget tree below and beside its filters: the run bar (add a version,
provider, Replay, Cancel, progress, saved replays), the failure list over the version picker,
the results grid and the case view side by side; and how the grid and the saved box are sized
to what they show. Builds and sizes widgets only: the panel connects them and lays the rows
out. Thread: GUI only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.gui.replay_models import FailureTableModel, ResultTableModel
from app.gui.replay_versions import VersionListWidget
from probes.onnx_local import available_providers
from widgets.case_view import CaseViewWidget
from widgets.flow_layout import FlowLayout

_COLUMN_CHARS = 24  # a results column is at most this many average characters wide
_SAVED_WIDE = "#99 9999 cases"  # the saved-replay box is at least this wide
# Widening the grid to its columns after a replay leaves the failure list and the case view
# at least this wide (the case view's image or features beside its bars and answers).
_LIST_MIN_PX = 180
_CASE_MIN_PX = 500


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
    result_view: QTableView
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


def build_widgets(provider: str) -> ReplayWidgets:
    """The widgets, ``provider`` chosen (the first one available if it is not)."""
    failure_model = FailureTableModel()
    failure_view = QTableView()
    failure_view.setModel(failure_model)
    failure_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    failure_view.verticalHeader().setVisible(False)
    _one_line_rows(failure_view)
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
    result_view = QTableView()
    result_view.setModel(result_model)
    result_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    result_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    result_view.verticalHeader().setVisible(False)
    _one_line_rows(result_view)
    # Fitting columns measures cells row by row: 1,000 rows (Qt's default) took 143 ms of
    # the GUI thread on a 10,000-case replay, 200 rows take 28 ms.
    result_view.horizontalHeader().setResizeContentsPrecision(200)
    # A long version name in a capped column (``fit_columns``) keeps its start and its end,
    # where names of one model's versions differ ("…_retrained_v17").
    result_view.horizontalHeader().setTextElideMode(Qt.TextElideMode.ElideMiddle)
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
    for column, stretch in ((left, 3), (result_view, 5), (case_view, 4)):
        split.addWidget(column)
        split.setStretchFactor(split.count() - 1, stretch)
    split.setChildrenCollapsible(False)
    return ReplayWidgets(
        failure_model=failure_model, failure_view=failure_view, failure_count=failure_count,
        version_list=version_list, add_button=add_button, provider_box=provider_box,
        run_button=run_button, cancel_button=cancel_button, progress=progress,
        saved_box=saved_box, open_button=open_button, export_button=export_button,
        result_model=result_model, result_view=result_view, summary=summary,
        case_view=case_view, run_row=run_row, split=split)


def fit_columns(view: QTableView) -> None:
    """The results grid's columns fitted to their contents, each capped: a long version
    name would make its column as wide as its header, the grid's width, leaving its cells
    colour only (capped, it is elided; the header's tooltip has it)."""
    view.resizeColumnsToContents()
    cap = view.fontMetrics().averageCharWidth() * _COLUMN_CHARS
    header = view.horizontalHeader()
    for c in range(view.model().columnCount()):
        if header.sectionSize(c) > cap:
            header.resizeSection(c, cap)


def widen_grid(view: QTableView, split: QSplitter) -> None:
    """Widen the grid (the middle of ``split``) to its columns, so every version and "first
    failing" are in sight, taking from the failure list, then the case view, down to a
    working width each. Where that is not enough the grid scrolls sideways in itself."""
    sizes = split.sizes()
    need = (view.horizontalHeader().length() + 2 * view.frameWidth()
            + view.verticalScrollBar().sizeHint().width())
    short = need - sizes[1]
    for k, floor in ((0, _LIST_MIN_PX), (2, _CASE_MIN_PX)):
        give = max(0, min(short, sizes[k] - floor))
        sizes[k] -= give
        sizes[1] += give
        short -= give
    if sizes != split.sizes():
        split.setSizes(sizes)


def fill_saved_box(box: QComboBox, saved: Sequence[Mapping[str, Any]]) -> None:
    """The saved replays (the store's rows: ``id``, ``cases``, ``cancelled``), newest first."""
    box.clear()
    for r in saved:
        box.addItem(f"#{r['id']} {r['cases']} cases"
                    f"{' (cancelled)' if r['cancelled'] else ''}", r["id"])
        box.setItemData(box.count() - 1, box.itemText(box.count() - 1),
                        Qt.ItemDataRole.ToolTipRole)
    # As wide as its longest entry, so "#1 5038 cases (cancelled)" is not cut to "(cance".
    box.setMinimumContentsLength(max(
        [len(_SAVED_WIDE)] + [len(box.itemText(i)) for i in range(box.count())]))
