"""Drift plots (pyqtgraph): a features x time heat map of severity with a colour bar, reference vs
current distributions of one feature, and the share of drifted features over time.

Thread: GUI only. The plots are fed plain numpy arrays by their owner; they read no store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Signal
from PySide6.QtGui import QMouseEvent, QResizeEvent

from widgets.plots import TimeAxisItem
from widgets.theme import DARK, Theme

# Severity 1.0 is a method's threshold; the colour scale ends at 2 (twice as far past it) so
# the step from "close" to "drifted" gets most of the colours. Larger values show saturated.
SEVERITY_LEVELS = (0.0, 2.0)
DEFAULT_INTERVAL_S = 5.0  # width of a lone evaluation's column
# A pause longer than this many usual spacings between evaluations is drawn empty.
GAP_FACTOR = 3.0
# The visible time range is drawn on one column per screen pixel, at most this many.
MAX_DRAWN_COLUMNS = 8192
UNSHOWN_WIDTH_PX = 1000  # the plot's width assumed before it is first laid out
UNLAID_CHROME_PX = 52  # title and time axis above and below the rows, before a layout


def severity_colormap() -> pg.ColorMap:
    """Calm blue below the threshold, a pale midpoint at it, red beyond."""
    return pg.ColorMap([0.0, 0.35, 0.5, 0.75, 1.0],
                       ["#1b3a5c", "#2f6f9f", "#f2e6c9", "#e0663b", "#b3001b"])


def _style_axes(plot: pg.PlotItem, theme: Theme) -> None:
    plot.setMenuEnabled(False)
    plot.hideButtons()
    for name in ("left", "bottom"):
        axis = plot.getAxis(name)
        axis.setPen(pg.mkPen(theme.border))
        axis.setTextPen(pg.mkPen(theme.muted))
        axis.enableAutoSIPrefix(False)


class DriftHeatMapWidget(pg.PlotWidget):
    """Severity per feature (rows, first feature on top) and evaluation (columns, clock time).
    Hovering a cell tells its feature, time and severity, and hovering a row's place on the
    names' axis its feature and how often it drifted; clicking either names its feature."""

    feature_clicked = Signal(str)

    def __init__(self, theme: Theme = DARK, parent=None) -> None:
        super().__init__(parent=parent, axisItems={"bottom": TimeAxisItem()})
        self.setBackground(theme.base)
        self.plot = self.getPlotItem()
        _style_axes(self.plot, theme)
        self._title_color = theme.muted
        self._set_title(empty=True)
        self.image = pg.ImageItem(axisOrder="col-major")
        self.plot.addItem(self.image)
        self.plot.getViewBox().invertY(True)
        self.plot.getViewBox().setMouseEnabled(x=True, y=False)
        self.colorbar = pg.ColorBarItem(values=SEVERITY_LEVELS, colorMap=severity_colormap(),
                                        interactive=False, width=12, label="severity")
        self.colorbar.setImageItem(self.image, insert_in=self.plot)
        self.features: tuple[str, ...] = ()
        self.shape: tuple[int, int] = (0, 0)  # (evaluations, features)
        self._t_s = np.empty(0)
        self._ends = np.empty(0)  # when each evaluation's column ends (seconds)
        self._severity = np.empty((0, 0))
        self._raster: tuple[float, float, int] | None = None  # drawn (start, width, columns)
        self.plot.getViewBox().sigXRangeChanged.connect(self._on_x_range_changed)
        self.scene().sigMouseMoved.connect(self._on_scene_mouse_moved)
        self.scene().sigMouseClicked.connect(self._on_scene_mouse_clicked)
        self.setMinimumHeight(180)
        self.plot.showAxis("bottom", False)  # no time yet: an axis would show made-up ticks

    def _set_title(self, *, empty: bool) -> None:
        text = "Drift severity per feature (1 = at threshold)" + (
            ": no evaluations in this span yet" if empty else "")
        self.plot.setTitle(text, color=self._title_color, size="9pt")

    def cell_at(self, view: QPointF) -> tuple[int, int] | None:
        """(evaluation, feature) under a point in plot coordinates, or None outside. Where a
        drawn column holds several evaluations (zoomed out), the one whose colour it shows."""
        if not self.features or len(self._t_s) == 0 or self._raster is None:
            return None
        j = math.floor(view.y())
        x = view.x()
        lo, dx, n = self._raster
        k = math.floor((x - lo) / dx)
        if not (0 <= j < len(self.features) and 0 <= k < n):
            return None
        centre, starts = self._column_members(lo + k * dx, lo + (k + 1) * dx)
        members = ([centre] if centre is not None else []) + list(starts)
        if not members:
            return None  # a pause in the evaluations: drawn empty
        values = self._severity[members, j]
        tested = ~np.isnan(values)
        if not tested.any():
            return members[0], j
        return members[int(np.argmax(np.where(tested, values, -np.inf)))], j

    def _column_members(self, left: float, right: float) -> tuple[int | None, range]:
        """The evaluation covering a drawn column's centre (None in a pause) and the
        evaluations starting inside it."""
        t_s, ends = self._t_s, self._ends
        centre = (left + right) / 2
        i = int(np.searchsorted(t_s, centre, side="right")) - 1
        covering = i if i >= 0 and centre < ends[i] else None
        first = int(np.searchsorted(t_s, left, side="left"))
        last = int(np.searchsorted(t_s, right, side="left"))
        return covering, range(first, last)

    def row_on_axis(self, scene_pos: QPointF) -> int | None:
        """The feature row beside a point on the names' axis, or None elsewhere: an unnamed
        row (a short map names only some) is named there on hover."""
        if not self.features or not self.plot.getAxis("left").sceneBoundingRect().contains(
                scene_pos):
            return None
        j = math.floor(self.plot.getViewBox().mapSceneToView(scene_pos).y())
        return j if 0 <= j < len(self.features) else None

    def row_text(self, j: int) -> str:
        """A row's name and its drift over the shown span, for the names' axis tooltip."""
        values = self._severity[:, j] if self._severity.ndim == 2 else np.empty(0)
        tested = values[~np.isnan(values)]
        if not len(tested):
            return f"{self.features[j]}: not tested in this span"
        drifted = int((tested >= 1.0).sum())
        latest = ("not tested" if math.isnan(values[-1]) else f"{values[-1]:.2f}")
        return (f"{self.features[j]}: drifted in {drifted} of {len(tested)} evaluations shown; "
                f"peak severity {tested.max():.2f}, latest {latest}")

    def _on_scene_mouse_moved(self, scene_pos: QPointF) -> None:
        cell = self.cell_at(self.plot.getViewBox().mapSceneToView(scene_pos))
        if cell is None:
            row = self.row_on_axis(scene_pos)
            self.setToolTip("" if row is None else self.row_text(row))
            return
        i, j = cell
        value = self._severity[i, j]
        clock = time.strftime("%H:%M:%S", time.localtime(self._t_s[i]))
        verdict = ("not tested" if math.isnan(value) else
                   f"severity {value:.2f}" + (" (drifted)" if value >= 1.0 else ""))
        self.setToolTip(f"{self.features[j]} at {clock}: {verdict}")

    def _on_scene_mouse_clicked(self, event) -> None:
        cell = self.cell_at(self.plot.getViewBox().mapSceneToView(event.scenePos()))
        row = cell[1] if cell is not None else self.row_on_axis(event.scenePos())
        if row is not None:
            self.feature_clicked.emit(self.features[row])

    def mousePressEvent(self, event: QMouseEvent) -> None:
        super().mousePressEvent(event)
        if self.row_on_axis(self.mapToScene(event.position().toPoint())) is not None:
            event.accept()  # the click names a row: it is not the parent's to handle

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        super().mouseReleaseEvent(event)
        if self.row_on_axis(self.mapToScene(event.position().toPoint())) is not None:
            event.accept()

    def _label_features(self) -> None:
        """Name every feature row that has room: in a short dock the rows are thinner than a
        line of text, so only rows at least a line apart get a name that is always drawn (a
        major tick), and the rest minor ones, which pyqtgraph draws only where they do not
        crowd. The named rows are the ones that drifted most over the shown span, so the
        rows red in an incident keep their names, and the names do not move with each new
        evaluation; every row is named on hover over the axis."""
        if not getattr(self, "features", ()):  # also resized while being built
            return
        view = self.plot.getViewBox()
        if view is None:  # closed
            return
        row_px = view.height() / len(self.features)
        line_px = self.fontMetrics().height()
        stride = max(1, math.ceil(line_px / max(row_px, 1e-6)))
        ticks = [(j + 0.5, name) for j, name in enumerate(self.features)]
        named = self._rows_to_name(stride)
        self.plot.getAxis("left").setTicks([[ticks[j] for j in named],
                                            [t for j, t in enumerate(ticks) if j not in named]])

    def _rows_to_name(self, stride: int) -> list[int]:
        """Rows at least ``stride`` apart, in row order. Chosen most drifted first: in the
        most evaluations of the shown span, then by peak severity, then from the top. Not by
        the latest evaluation alone: that named a different half of the rows after every
        evaluation, and left unnamed the rows that were red a minute ago."""
        n = len(self.features)
        if stride <= 1:
            return list(range(n))
        severity = getattr(self, "_severity", np.empty((0, 0)))
        if severity.ndim == 2 and severity.shape[0] and severity.shape[1] == n:
            filled = np.nan_to_num(severity, nan=-1.0)
            drifted, peak = (filled >= 1.0).sum(axis=0), filled.max(axis=0)
        else:
            drifted, peak = np.zeros(n, dtype=int), np.zeros(n)
        chosen: list[int] = []
        for j in sorted(range(n), key=lambda j: (-drifted[j], -peak[j], j)):
            if all(abs(j - k) >= stride for k in chosen):
                chosen.append(j)
        return sorted(chosen)

    def height_to_name_every_row(self) -> int:
        """The widget height at which each row is a line of text tall, so every row is
        named: what the panel gives the map first when there is room."""
        view = self.plot.getViewBox()
        laid_out = view is not None and view.height() > 1
        chrome = self.height() - view.height() if laid_out else UNLAID_CHROME_PX
        rows = max(1, len(getattr(self, "features", ())))
        return max(self.minimumHeight(),
                   math.ceil(chrome + rows * self.fontMetrics().height()))

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._label_features()
        self._draw_visible()  # a wider plot gets finer columns

    def set_matrix(self, ts_ns: np.ndarray, features: Sequence[str],
                   severity: np.ndarray) -> None:
        """``severity`` is (evaluations, features), oldest evaluation first; NaN cells
        (untested) are left empty. Each evaluation holds from its time to the next one's."""
        self.features = tuple(features)
        self.shape = (len(ts_ns), len(self.features))
        self._severity = np.asarray(severity, dtype=np.float64)
        self._t_s = np.asarray(ts_ns, dtype=np.float64) / 1e9
        self._raster = None
        empty = len(ts_ns) == 0 or not self.features
        self._set_title(empty=empty)
        self.plot.showAxis("bottom", not empty)
        if empty:
            self._ends = np.empty(0)
            self.image.clear()
            self.plot.getAxis("left").setTicks([[]])
            return
        t_s = self._t_s
        gaps = np.diff(t_s)
        positive = gaps[gaps > 0]
        # The monitor's interval, read from the evaluations themselves: the usual spacing.
        step = float(np.median(positive)) if len(positive) else DEFAULT_INTERVAL_S
        # A pause (the app closed, no traffic) is not stretched over by the evaluation
        # before it: that one keeps one usual column and the rest of the pause stays empty.
        self._ends = np.append(np.where(gaps <= GAP_FACTOR * step, t_s[1:], t_s[:-1] + step),
                               t_s[-1] + step)
        self._label_features()
        self.plot.getViewBox().setRange(xRange=(t_s[0], self._ends[-1]),
                                        yRange=(0, len(self.features)), padding=0)
        self._draw_visible()

    def _on_x_range_changed(self, *_args) -> None:
        self._draw_visible()

    def _draw_visible(self) -> None:
        """Paint the evaluations in the visible time range onto columns of equal time width,
        one per screen pixel: evaluations are not evenly spaced, so an image with one
        column per evaluation would put them at the wrong times. A drawn column spanning
        several evaluations shows the most severe of each feature, so a short drift is not
        lost when zoomed out."""
        if not getattr(self, "features", ()) or len(self._t_s) == 0:  # or being built
            return
        view = self.plot.getViewBox()
        if view is None:  # closed
            return
        view_lo, view_hi = view.viewRange()[0]
        lo, hi = max(view_lo, self._t_s[0]), min(view_hi, self._ends[-1])
        if not hi > lo:  # panned off the data
            lo, hi = view_lo, view_hi = self._t_s[0], self._ends[-1]
        # One column per screen pixel: more would be thinned out by the scaling, dropping
        # columns (a lone drifted evaluation among them) by where they fall.
        px = view.width() if view.width() > 1 else UNSHOWN_WIDTH_PX
        n = max(1, min(MAX_DRAWN_COLUMNS, math.ceil(px * (hi - lo) / (view_hi - view_lo))))
        dx = (hi - lo) / n
        self._raster = (lo, dx, n)
        edges = lo + dx * np.arange(n + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        t_s, ends, sev = self._t_s, self._ends, self._severity
        covering = np.searchsorted(t_s, centres, side="right") - 1
        inside = (covering >= 0) & (centres < ends[np.maximum(covering, 0)])
        image = np.where(inside[:, None], sev[np.maximum(covering, 0)], np.nan)
        # Evaluations starting inside a column: [first[k], first[k + 1]).
        first = np.searchsorted(t_s, edges, side="left")
        holds = first[:-1] < first[1:]
        if holds.any():
            worst = np.fmax.reduceat(sev[:first[-1]], first[:-1][holds], axis=0)
            image[holds] = np.fmax(image[holds], worst)
        self.image.setImage(np.clip(image, *SEVERITY_LEVELS), levels=SEVERITY_LEVELS,
                            autoLevels=False)
        self.image.setRect(QRectF(lo, 0.0, hi - lo, float(len(self.features))))


class DistributionPlotWidget(pg.PlotWidget):
    """Reference and current shares of one feature on shared bins, overlaid."""

    def __init__(self, theme: Theme = DARK, parent=None) -> None:
        super().__init__(parent=parent)
        self.theme = theme
        self.setBackground(theme.base)
        self.plot = self.getPlotItem()
        _style_axes(self.plot, theme)
        self.plot.getViewBox().setMouseEnabled(x=False, y=False)
        self.legend = self.plot.addLegend(offset=(-10, 10), labelTextColor=theme.text)
        self.items: dict[str, pg.GraphicsObject] = {}
        self.feature: str | None = None
        self._kind: str | None = None  # "numerical" or "categorical" while items are drawn
        self.setMinimumHeight(160)

    def clear_distribution(self, message: str = "") -> None:
        """Remove the shares and show ``message`` alone: axes left from the previous feature
        would read as this one's."""
        for item in self.items.values():
            self.plot.removeItem(item)
        self.items = {}
        self._kind = None
        self.legend.clear()
        self.feature = None
        self.plot.getAxis("bottom").setTicks(None)
        self._show_axes(False)
        self.plot.setTitle(message, color=self.theme.muted, size="9pt")

    def _show_axes(self, show: bool) -> None:
        for name in ("left", "bottom"):
            self.plot.showAxis(name, show)

    def _update_in_place(self, kind: str, feature: str, title: str) -> bool:
        """Whether the items drawn are of ``kind``, so new shares go onto them: the panel
        redraws its distribution on every refresh, and removing and re-adding the items and
        the legend's swatches each time cost the GUI thread more than the shares did."""
        if self._kind != kind:
            return False
        self.feature = feature
        if self.plot.titleLabel.text != title:
            self.plot.setTitle(title, color=self.theme.muted, size="9pt")
        return True

    def set_numerical(self, feature: str, edges: np.ndarray, reference: np.ndarray,
                      current: np.ndarray, title: str | None = None) -> None:
        title = title or f"{feature}: share of rows per bin"
        if self._update_in_place("numerical", feature, title):
            self.items["reference"].setData(edges, reference)
            self.items["current"].setData(edges, current)
            self.plot.enableAutoRange()
            return
        self.clear_distribution(title)
        self._show_axes(True)
        self.feature = feature
        self._kind = "numerical"
        for name, shares, colour, alpha in (("reference", reference, self.theme.series[0], 70),
                                            ("current", current, self.theme.series[3], 70)):
            brush = pg.mkColor(colour)
            brush.setAlpha(alpha)
            item = pg.PlotDataItem(edges, shares, stepMode="center", fillLevel=0.0,
                                   brush=brush, pen=pg.mkPen(colour, width=2))
            self.plot.addItem(item)
            # A filled step curve's own legend sample is a skewed polygon; a swatch reads better.
            self.legend.addItem(pg.BarGraphItem(x=[0], height=[1], width=1, brush=brush,
                                                pen=pg.mkPen(colour, width=2)), name)
            self.items[name] = item
        self.plot.enableAutoRange()

    def set_categorical(self, feature: str, categories: Sequence[str], reference: np.ndarray,
                        current: np.ndarray, title: str | None = None) -> None:
        title = title or f"{feature}: share of rows per category"
        x = np.arange(len(categories), dtype=np.float64)
        if self._update_in_place("categorical", feature, title):
            self.items["reference"].setOpts(x=x - 0.2, height=reference)
            self.items["current"].setOpts(x=x + 0.2, height=current)
            self.plot.getAxis("bottom").setTicks(
                [[(i, str(c)) for i, c in enumerate(categories)]])
            self.plot.enableAutoRange()
            return
        self.clear_distribution(title)
        self._show_axes(True)
        self.feature = feature
        self._kind = "categorical"
        for name, shares, colour, offset in (("reference", reference, self.theme.series[0], -0.2),
                                             ("current", current, self.theme.series[3], 0.2)):
            item = pg.BarGraphItem(x=x + offset, height=shares, width=0.38,
                                   brush=pg.mkBrush(colour), pen=pg.mkPen(colour))
            self.plot.addItem(item)
            # Named here, not on the item: the plot would list a named item a second time.
            self.legend.addItem(item, name)
            self.items[name] = item
        self.plot.getAxis("bottom").setTicks([[(i, str(c)) for i, c in enumerate(categories)]])
        self.plot.enableAutoRange()


class DriftShareWidget(pg.PlotWidget):
    """Share of drifted features per evaluation, over clock time (0..1), for a live view."""

    def __init__(self, theme: Theme = DARK, parent=None) -> None:
        super().__init__(parent=parent, axisItems={"bottom": TimeAxisItem()})
        self.setBackground(theme.base)
        self.plot = self.getPlotItem()
        _style_axes(self.plot, theme)
        self.plot.setTitle("Share of drifted features", color=theme.muted, size="9pt")
        self.plot.getViewBox().setMouseEnabled(x=True, y=False)
        self.plot.setYRange(0.0, 1.0, padding=0.05)
        self.curve = self.plot.plot(pen=pg.mkPen(theme.series[5], width=2), symbol="o",
                                    symbolSize=4, symbolBrush=theme.series[5],
                                    symbolPen=None)
        self.setMinimumHeight(120)

    def set_series(self, ts_ns: np.ndarray, share: np.ndarray) -> None:
        t_s = np.asarray(ts_ns, dtype=np.float64) / 1e9
        self.curve.setData(t_s, np.asarray(share, dtype=np.float64))

    def point_count(self) -> int:
        x, _ = self.curve.getData()
        return 0 if x is None else len(x)

    def last_share(self) -> float:
        _, y = self.curve.getData()
        return math.nan if y is None or len(y) == 0 else float(y[-1])
