"""One replayed case side by side: its input (a table of named features, or an image when the
input is image-shaped), each version's output as bars, and each version's answer and latency.
Fed plain data by its owner; the verdict palette, the image and the bars' score arithmetic
live in ``verdict_style``, ``case_image`` and ``case_scores``. Thread: GUI only.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QResizeEvent
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.domain import figure_text
from widgets.case_image import PictureLabel, image_of, to_qimage
from widgets.case_scores import is_probabilities, min_max, non_finite_note
from widgets.verdict_style import VERDICT_COLORS, VERDICT_MARKS, text_color_for

# What the replay panel, its models and the tests import from here, wherever it is defined.
__all__ = ["BARS_MIN_PX", "VERDICT_COLORS", "VERDICT_MARKS", "CaseViewWidget", "VersionAnswer",
           "image_of", "text_color_for"]

VERSION_COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1")
MAX_CLASS_TICKS = 20  # more classes than this: the axis picks its own ticks
LEGEND_NAME_CHARS = 24  # a longer version name is cut in the legend (whole in its tooltip)
# The input's pane beside the bars: a table's names and values; an image, which in a short
# dock is small anyway, leaves the bars more. In a narrow view it takes at most this share
# of the width (and no less than its floor), so the bars keep room beside it.
TABLE_PANE_PX = 240
IMAGE_PANE_PX = 190
INPUT_PANE_SHARE = 0.4
INPUT_PANE_MIN_PX = 110
# The bars' plot, axes included, is never squeezed under this: at ~60 px (five versions'
# answers under it in a short dock) the bars were a few pixels tall and unreadable. The
# answers give up rows (and scroll) first.
BARS_MIN_PX = 125
_NO_CASE = "Select a case to compare versions"
ANSWER_MIN_ROWS = 3  # answers shown however short the view (more scroll)
# A longer error or reason in the answers' class column is elided, whole in its tooltip:
# resized to its contents, it pushed conf., ms and verdict out of sight.
CLASS_CELL_CHARS = 9


@dataclass(frozen=True, slots=True)
class VersionAnswer:
    """What one version answered for the case shown."""

    version: str
    scores: np.ndarray | None  # the first output, flattened; None after an error
    prediction: str | None
    confidence: float | None
    latency_ms: float | None
    verdict: str
    error: str | None = None
    why: str = ""  # the verdict in words, with the rules a failing case broke
    latency_means: str = ""  # what its latency is a time of (one request, a batch's share)


def _unbroken(text: str) -> str:
    """Escaped, with no-break spaces and a word joiner after each hyphen (Qt breaks a line
    after one: wine-|v2): the legend wraps between versions, never inside one."""
    return html.escape(text).replace(" ", "&nbsp;").replace("-", "-\u2060")


class _OneLineLabel(QLabel):
    """A line of text elided to its width, whole in its tooltip and in ``whole``: wrapped,
    a case's title took two lines of a short dock from the bars in a narrow case view."""

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.whole = ""
        self.set_whole(text)

    def set_whole(self, text: str) -> None:
        self.whole = text
        self.setToolTip(text)
        self._fit()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        self.setText(self.fontMetrics().elidedText(self.whole, Qt.TextElideMode.ElideRight,
                                                   max(0, self.width())))


class _ChartOverAnswers(QWidget):
    """``top`` (the input and the bars) over ``table`` (the answers), placed by hand: the
    table as tall as its rows while ``top`` keeps its minimum, then the table gives up rows
    (down to ``ANSWER_MIN_ROWS``) and scrolls. The table used to keep a fixed height of up
    to five rows whatever the view had, and the bars got what was left: ~60 px with five
    versions in a short dock."""

    _GAP_PX = 3

    def __init__(self, top: QWidget, table: QTableWidget) -> None:
        super().__init__()
        self.top, self.table = top, table
        top.setParent(self)
        table.setParent(self)

    def table_px(self, rows: int) -> int:
        return (self.table.horizontalHeader().sizeHint().height()
                + rows * self.table.verticalHeader().defaultSectionSize()
                + 2 * self.table.frameWidth() + 2)

    def _top_min_px(self) -> int:
        return max(self.top.minimumSizeHint().height(), self.top.minimumHeight())

    def minimumSizeHint(self) -> QSize:
        return QSize(max(self.top.minimumSizeHint().width(),
                         self.table.minimumSizeHint().width()),
                     self._top_min_px() + self._GAP_PX + self.table_px(ANSWER_MIN_ROWS))

    def sizeHint(self) -> QSize:
        rows = max(ANSWER_MIN_ROWS, self.table.rowCount())
        return QSize(self.top.sizeHint().width(),
                     self.top.sizeHint().height() + self._GAP_PX + self.table_px(rows))

    def refit(self) -> None:
        self.updateGeometry()
        self._place()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._place()

    def _place(self) -> None:
        w, h = self.width(), self.height()
        want = self.table_px(max(ANSWER_MIN_ROWS, self.table.rowCount()))
        room = h - self._GAP_PX - self._top_min_px()
        table_h = max(self.table_px(ANSWER_MIN_ROWS), min(want, room))
        self.top.setGeometry(0, 0, w, max(0, h - self._GAP_PX - table_h))
        self.table.setGeometry(0, h - table_h, w, table_h)


class CaseViewWidget(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = _OneLineLabel(_NO_CASE)
        self.inputs = QTableWidget(0, 2)
        self.inputs.setHorizontalHeaderLabels(["feature", "value"])
        self.inputs.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.inputs.verticalHeader().setVisible(False)
        self.image = PictureLabel()
        # Under the image: the values it spans and how they map to grey.
        self.image_range = QLabel()
        self.image_range.setWordWrap(True)
        self.image_range.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        self.image_page = QWidget()
        page = QVBoxLayout(self.image_page)
        page.setContentsMargins(0, 0, 0, 0)
        page.setSpacing(2)
        page.addWidget(self.image, 1)
        page.addWidget(self.image_range)
        self.input_stack = QStackedWidget()
        self.input_stack.addWidget(self.inputs)
        self.input_stack.addWidget(self.image_page)
        self.input_stack.setMaximumWidth(TABLE_PANE_PX)
        self.bars = pg.PlotWidget()
        self.bars.setMinimumHeight(BARS_MIN_PX)
        # The legend is a line above the plot, not pyqtgraph's legend inside it: that one sat
        # over the first class's bars (the tallest, for a confident answer), and its swatches
        # read as bar tops. Entries wrap between versions when the pane is narrow.
        self.legend = QLabel()
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)
        # Clipped rather than widening the dock when an entry cannot wrap in a narrow pane.
        self.legend.setMinimumWidth(40)
        self.bars.setLabel("bottom", "class")
        self.bars.setLabel("left", "output")
        for name in ("left", "bottom"):  # probabilities read as 0-1, not "x0.001"
            self.bars.getAxis(name).enableAutoSIPrefix(False)
        self.answers = QTableWidget(0, 5)
        # Short headers: the pane is narrow and "confidence" came out as "onfidenc".
        for c, (label, tip) in enumerate((
                ("version", ""), ("class", "the class this version answered"),
                ("conf.", "confidence: the answered class's probability"),
                ("ms", "latency in ms: one request of its own for the cases a replay sends "
                       "alone (200 of them), else the case's share of its batch; a SLOW "
                       "capture held to an SLO: the median of 7 calls alone"),
                ("verdict", "fixed, still failing, newly broken, ok, or no answer"))):
            header = QTableWidgetItem(label)
            header.setToolTip(tip)
            self.answers.setHorizontalHeaderItem(c, header)
        # The version's name takes what is left; the numbers and the verdict are never cut.
        header = self.answers.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.answers.setWordWrap(False)
        # Cut in the middle: one model's versions differ at the end ("digits-v1", "-v2").
        self.answers.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.answers.verticalHeader().setVisible(False)
        # Rows of one line (the style's are ~30 px): three versions' answers fit under the
        # bars in a 430 px dock, and more features show beside them.
        row_px = self.answers.fontMetrics().height() + 6
        for table in (self.answers, self.inputs):
            table.verticalHeader().setDefaultSectionSize(row_px)
            table.verticalHeader().setMinimumSectionSize(row_px)
            # Tab leaves the table (to the next control) instead of walking its cells: a
            # keyboard user could not get past the panel's tables.
            table.setTabKeyNavigation(False)
        chart = QWidget()
        chart_layout = QVBoxLayout(chart)
        chart_layout.setContentsMargins(0, 0, 0, 0)
        chart_layout.setSpacing(2)
        chart_layout.addWidget(self.legend)
        chart_layout.addWidget(self.bars, 1)
        self._split = split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.input_stack)
        split.addWidget(chart)
        split.setStretchFactor(1, 2)
        split.setChildrenCollapsible(False)
        self._pane_dragged = False  # the input pane's width is the user's (``_fit_input_pane``)
        split.splitterMoved.connect(self._on_split_moved)
        # The answers across the whole width, under the input and the bars: in a short dock
        # they stay in sight, and a version's name has room.
        self._body = _ChartOverAnswers(split, self.answers)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(3)
        layout.addWidget(self.title)
        layout.addWidget(self._body, 1)
        self._bar_items: list[pg.BarGraphItem] = []
        self._notes: list[pg.TextItem] = []  # said on the plot when it has no bar at all
        self._scaled: list[str] = []  # versions whose raw scores are drawn stretched to 0..1

    def _fit_input_pane(self) -> None:
        """The input's pane at most its own width (a table's or an image's), and in a narrow
        view at most ``INPUT_PANE_SHARE`` of it: the grid beside may take width from this
        view, and the bars keep room."""
        cap = min(IMAGE_PANE_PX if self.showing_image() else TABLE_PANE_PX,
                  max(INPUT_PANE_MIN_PX, int(self.width() * INPUT_PANE_SHARE)))
        self.input_stack.setMaximumWidth(cap)
        # A splitter keeps a capped pane's old share as a blank strip (122 px in a 336 px
        # view): the bars get it back; and the pane grows back with the view, until
        # someone drags the handle, after which their width stands (under the cap).
        sizes = self._split.sizes()
        total = sum(sizes)  # 0 until the splitter is laid out: nothing to share yet
        if total > cap and (sizes[0] > cap or (sizes[0] < cap and not self._pane_dragged)):
            self._split.setSizes([cap, total - cap])

    def _on_split_moved(self, _pos: int, _index: int) -> None:
        self._pane_dragged = True

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit_input_pane()

    def showing_image(self) -> bool:
        return self.input_stack.currentWidget() is self.image_page

    def scaled_versions(self) -> list[str]:
        """The versions whose bars are raw scores stretched to 0..1 (beside probabilities)."""
        return list(self._scaled)

    def bar_count(self) -> int:
        """How many versions have bars drawn (one whose outputs are all NaN has none)."""
        return len(self._bar_items)

    def clear(self) -> None:
        self.title.set_whole(_NO_CASE)
        self.inputs.setRowCount(0)
        self.answers.setRowCount(0)
        self._body.refit()
        self.image.set_image(None)
        self.image_range.clear()
        self._clear_bars()

    def _clear_bars(self) -> None:
        for item in [*self._bar_items, *self._notes]:
            self.bars.removeItem(item)
        self._bar_items = []
        self._notes = []
        self.legend.clear()
        self.legend.setToolTip("")
        self._scaled = []

    def show_case(self, title: str, array: np.ndarray | None, feature_names: list[str],
                  answers: list[VersionAnswer]) -> None:
        """``array`` None: the capture kept no input (the table says so)."""
        self.title.set_whole(title)
        picture = image_of(array) if array is not None else None
        if array is None:
            self.inputs.setRowCount(1)
            self.inputs.setItem(0, 0, QTableWidgetItem("(no input kept)"))
            self.inputs.setItem(0, 1, QTableWidgetItem("-"))
            self.input_stack.setCurrentWidget(self.inputs)
        elif picture is not None:
            image, caption = to_qimage(picture)
            self.image.set_image(image)
            self.image_range.setText(caption)
            self.image_range.setToolTip(caption)
            self.input_stack.setCurrentWidget(self.image_page)
        else:
            values = np.asarray(array).reshape(-1)
            self.inputs.setRowCount(len(values))
            for r, v in enumerate(values.tolist()):
                name = feature_names[r] if r < len(feature_names) else f"f{r}"
                self.inputs.setItem(r, 0, QTableWidgetItem(name))
                self.inputs.setItem(r, 1, QTableWidgetItem(f"{v:.6g}"))
            self.input_stack.setCurrentWidget(self.inputs)
        self._fit_input_pane()
        self._show_bars(answers)
        self.answers.setRowCount(len(answers))
        self._body.refit()
        metrics = self.answers.fontMetrics()
        class_px = metrics.averageCharWidth() * CLASS_CELL_CHARS
        for r, a in enumerate(answers):
            # An error (a version that could not answer says why) is elided to the column's
            # cap; the cell's tooltip has it whole.
            answered = metrics.elidedText(a.error, Qt.TextElideMode.ElideRight, class_px) \
                if a.error else (a.prediction or "-")
            cells = [a.version, answered,
                     "-" if a.confidence is None else f"{a.confidence:.3f}",
                     "-" if a.latency_ms is None else figure_text(a.latency_ms),
                     a.verdict.replace("_", " ")]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c == 4:
                    background = VERDICT_COLORS.get(a.verdict, VERDICT_COLORS["ok"])
                    item.setBackground(QColor(background))
                    item.setForeground(QColor(text_color_for(background)))
                if a.error:
                    item.setToolTip(a.error)
                elif c == 4 and a.why:
                    item.setToolTip(a.why)
                elif c == 3 and a.latency_means:
                    item.setToolTip(a.latency_means)
                self.answers.setItem(r, c, item)

    def _show_bars(self, answers: list[VersionAnswer]) -> None:
        self._clear_bars()
        shown = [a for a in answers if a.scores is not None and a.scores.size]
        if not shown:
            return
        width = 0.8 / len(shown)
        classes = max(a.scores.size for a in shown)
        # One tick per class while they fit; the axis's own (fractional) ticks mean nothing
        # under bars grouped per class.
        self.bars.getAxis("bottom").setTicks(
            [[(c, str(c)) for c in range(classes)]] if classes <= MAX_CLASS_TICKS else None)
        entries, tips = [], []
        # Probabilities beside raw scores (logits, say) on one axis: scores of 25 flatten
        # the others' 0..1 to a pixel. Each raw-score version is then drawn stretched
        # min-max to 0..1 (no softmax: which class is highest, and by how much relative to
        # the others, still reads), and the legend and the axis say so.
        rescale = any(is_probabilities(a.scores) for a in shown) and \
            not all(is_probabilities(a.scores) for a in shown)
        self._scaled = []
        for k, a in enumerate(shown):
            scores = a.scores.astype(np.float64)
            finite = np.isfinite(scores)
            if rescale and finite.any() and not is_probabilities(scores):
                scores = min_max(scores)
                self._scaled.append(a.version)
            x = np.arange(len(scores)) - 0.4 + width * (k + 0.5)
            color = VERSION_COLORS[k % len(VERSION_COLORS)]
            if finite.any():  # no bar where there is no number (a 0 would read as an answer)
                item = pg.BarGraphItem(x=x[finite], height=scores[finite], width=width * 0.9,
                                       brush=color, name=a.version)
                self.bars.addItem(item)
                self._bar_items.append(item)
            note = "; ".join(n for n in (
                "raw, min\u2013max" if a.version in self._scaled else "",
                non_finite_note(scores)) if n)
            name = a.version if len(a.version) <= LEGEND_NAME_CHARS else \
                a.version[:LEGEND_NAME_CHARS - 1] + "…"
            entry = f'<span style="color:{color}">&#9632;</span>&nbsp;{_unbroken(name)}'
            if note:  # a long list of classes may wrap: it must not widen the pane
                short = len(note) <= 20
                entry += ("&nbsp;" if short else " ") + \
                    f"<i>({_unbroken(note) if short else html.escape(note)})</i>"
            entries.append(entry)
            if a.version in self._scaled:
                note += (" (raw scores, not probabilities: drawn stretched min\u2013max to "
                         "0\u20131 beside the others' probabilities)")
            tips.append(a.version + (f": {note}" if note else ""))
        self.legend.setText("&nbsp;&nbsp; ".join(entries))
        self.bars.setLabel("left", "output (scaled)" if self._scaled else "output")
        self.legend.setToolTip("\n".join(tips))
        if not self._bar_items:  # an empty plot says why it is empty
            text = pg.TextItem("no finite output:\nno bars", anchor=(0.5, 0.5),
                               color="#9e9e9e")
            text.setPos((classes - 1) / 2, 0.5)
            self.bars.addItem(text)
            self._notes.append(text)
