"""Live time-series plots (pyqtgraph): named curves, a hover read-out, clickable latency points.

Thread: GUI only. Plots never pull data: their owner hands them numpy views on its repaint
timer, and a curve whose data did not change is not touched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtWidgets import QGraphicsItem

from widgets.incident_marks import IncidentMarks, IncidentSpan
from widgets.points_item import LineItem, PointsItem
from widgets.theme import Theme

HOVER_RADIUS_PX = 10.0


class TimeAxisItem(pg.DateAxisItem):
    """Clock-time ticks that stay readable in a narrow plot."""

    def __init__(self, **kwargs) -> None:
        super().__init__(orientation="bottom", **kwargs)


class SeriesPlotWidget(pg.PlotWidget):
    """A titled plot of named curves over epoch seconds, with a hover read-out."""

    def __init__(self, title: str, unit: str, theme: Theme, parent=None, *,
                 zero_floor: bool = True) -> None:
        super().__init__(parent=parent, axisItems={"bottom": TimeAxisItem()})
        self.zero_floor = zero_floor
        self.title = title
        self.unit = unit
        self.theme = theme
        self.curves: dict[str, PointsItem] = {}
        self._data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._styles: dict[str, dict] = {}
        self._labels: dict[str, str] = {}  # legend text per curve, kept while it is hidden
        self._data_version = 0
        self._last_view: tuple[int, int] | None = None
        self._follow_y = False  # y refits to what is in sight as x or the data change
        item = self.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        # No grid: pyqtgraph draws grid lines as part of the axes, which then repaint the whole
        # plot on every frame of a scrolling window (ten times slower with eight endpoints).
        for name in ("left", "bottom"):
            # Axes redraw from a cached pixmap unless their own range changed.
            item.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        for name in ("left", "bottom", "right", "top"):
            # No SI prefixes (the units are in the title); re-labelling on each range change
            # re-lays out rich text on every frame, even on the hidden right and top axes.
            item.getAxis(name).enableAutoSIPrefix(False)
        item.setClipToView(True)
        self.setMinimumHeight(140)
        vb = item.getViewBox()
        vb.setMouseEnabled(x=True, y=False)
        vb.enableAutoRange(axis="y")
        vb.sigXRangeChanged.connect(self._on_view_x_range_changed)
        self.legend = item.addLegend(offset=(4, 2), labelTextSize="8pt", colCount=5,
                                     verSpacing=-6, horSpacing=8)
        # Text is the costliest thing a plot paints; legend and title change rarely, so they
        # are drawn once into pixmaps and blitted on every frame.
        self.legend.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        item.titleLabel.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self._hover_text = pg.TextItem(anchor=(0, 1))
        self._hover_text.setZValue(100)
        self._hover_line = pg.InfiniteLine(angle=90, movable=False)
        self._hover_line.setZValue(90)
        for it in (self._hover_text, self._hover_line):
            it.hide()
            item.addItem(it, ignoreBounds=True)
        self.scene().sigMouseMoved.connect(self._on_scene_mouse_moved)
        self.incident_marks = IncidentMarks(item, theme)
        self.apply_theme(theme)

    # -- curves ---------------------------------------------------------------------------

    def add_curve(self, key: str, label: str, color: str, *, points: bool = False,
                  width: float = 1.0, dash: bool = False, size: float = 3.0,
                  z: float = 0.0) -> PointsItem:
        style: dict = {"color": color, "points": points, "width": width, "dash": dash,
                       "size": size}
        if points:
            curve = PointsItem(label, color, size)
        else:
            curve = LineItem(label, color, width,
                             Qt.PenStyle.DashLine if dash else Qt.PenStyle.SolidLine)
        curve.setZValue(z)
        self.curves[key] = curve
        self._labels[key] = label
        self._styles[key] = style
        self._style(curve, style)
        self.getPlotItem().addItem(curve)
        self._add_to_legend(curve, label)
        return curve

    def _add_to_legend(self, curve: QGraphicsItem, label: str) -> None:
        self.legend.addItem(curve, label)  # PlotItem lists only its own data items
        # The legend's own pixmap cache does not cover its children: without one of their
        # own, every sample and label repaints on every frame of a scrolling plot.
        sample, text = self.legend.items[-1]
        for part in (sample, text, text.item):  # the label draws through its text item
            part.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)

    def show_curve(self, key: str, shown: bool) -> None:
        """Show or hide a curve and its legend entry: a legend must not list what is not
        drawn (history views draw no percentiles and no failure dots)."""
        curve = self.curves[key]
        curve.setVisible(shown)
        listed = self.legend.getLabel(curve) is not None
        if shown and not listed:
            self._add_to_legend(curve, self._labels.get(key, key))
        elif not shown and listed:
            self._labels[key] = self.legend.getLabel(curve).text
            self.legend.removeItem(curve)

    def legend_sample(self, key: str) -> QGraphicsItem | None:
        """The legend's sample of a curve (its dot or line swatch)."""
        curve = self.curves.get(key)
        return next((sample for sample, _ in self.legend.items if sample.item is curve), None)

    def _style(self, curve: PointsItem, style: dict) -> None:
        curve.set_style(style["color"], style["size"] if style["points"] else style["width"])

    def y_extent(self, x0: float, x1: float) -> tuple[float, float] | None:
        """Min and max of the visible curves' values between x0 and x1."""
        lo = hi = None
        for key, (t, v) in self._data.items():
            if not len(t) or not self.curves[key].isVisible():
                continue
            i, j = np.searchsorted(t, (x0, x1))
            part = v[i:j]
            if not len(part):
                continue
            a, b = np.nanmin(part), np.nanmax(part)
            if np.isfinite(a):
                lo = a if lo is None else min(lo, a)
                hi = b if hi is None else max(hi, b)
        return None if lo is None else (float(lo), float(hi))

    def set_view(self, x0: float, x1: float, *, snap: bool = False) -> None:
        """Show [x0, x1] with y fitted to what is visible, in one range change (one repaint).

        With ``snap`` the window moves in whole pixels, and a plot whose data did not change
        since a view that lands on the same pixel is left alone: that frame would look the same.
        """
        vb = self.getPlotItem().getViewBox()
        if snap:
            px = (x1 - x0) / max(1.0, vb.width())
            shift = math.ceil(x1 / px) * px - x1
            x0, x1 = x0 + shift, x1 + shift
            key = (round(x1 / px), self._data_version)
            if key == self._last_view:
                return
            self._last_view = key
        else:
            self._last_view = None
        self._follow_y = False  # the live clock fits y on every frame itself
        y_range = self.y_range(x0, x1)
        if y_range is None:
            vb.setRange(xRange=(x0, x1), padding=0)
        else:
            vb.setRange(xRange=(x0, x1), yRange=y_range, padding=0)
        # Apply the new transform now rather than while painting: items that react to it
        # would otherwise schedule a second paint of the same frame.
        vb.prepareForPaint()

    def y_range(self, x0: float, x1: float) -> tuple[float, float] | None:
        """The y range that shows every visible value between x0 and x1 below the legend
        (None when nothing is visible there)."""
        extent = self.y_extent(x0, x1)
        if extent is None:
            return None
        lo, hi = extent
        lo, hi = min(lo, self.y_floor()), max(hi, self.y_ceiling())
        span = (hi - lo) or max(abs(hi) * 0.1, 1.0)
        bottom = lo - span * 0.05
        # Headroom at the top keeps the values clear of the legend: at least the legend's
        # own height (it sits in the plot's top-left corner, over the highest values
        # otherwise: a slow phase's plateau, a spike's peak).
        vb = self.getPlotItem().getViewBox()
        legend = self.legend.boundingRect().height() + 8 if self.legend.isVisible() else 0.0
        share = min(0.5, legend / max(1.0, vb.height()))
        top = max(hi + span * 0.3, (hi - share * bottom) / (1.0 - share))
        return bottom, top

    def y_floor(self) -> float:
        # Durations, rates and shares read best from 0; memory reads best zoomed on its
        # changes, where a leak shows.
        return 0.0 if self.zero_floor else np.inf

    def y_ceiling(self) -> float:
        return -np.inf

    def fit_y(self) -> None:
        """Fit y to what is in sight, below the legend, and keep it fitted as the view pans
        or its data change (paused or history views). pyqtgraph's own auto-range fits the
        highest value to the top edge, where the legend then hides it."""
        self._follow_y = True
        self._refit_y()

    def _refit_y(self) -> None:
        vb = self.getPlotItem().getViewBox()
        x0, x1 = vb.viewRange()[0]
        y_range = self.y_range(x0, x1)
        if y_range is None:
            vb.enableAutoRange(axis="y")
        else:
            vb.setYRange(*y_range, padding=0)

    def _on_view_x_range_changed(self, _vb, _x_range) -> None:
        if self._follow_y:
            self._refit_y()

    def show_time_axis(self, shown: bool) -> None:
        self.getPlotItem().showAxis("bottom", shown)

    def set_curve_color(self, key: str, color: str) -> None:
        self._styles[key]["color"] = color
        self._style(self.curves[key], self._styles[key])
        sample = self.legend_sample(key)
        if sample is not None:
            sample.update()  # drop its cached pixmap

    def rename(self, key: str, label: str) -> None:
        """Change a curve's legend text (history mode shows means, not percentiles)."""
        self._labels[key] = label
        legend_label = self.legend.getLabel(self.curves[key])
        if legend_label is not None:
            legend_label.setText(label)

    def set_curve(self, key: str, t: np.ndarray, v: np.ndarray) -> None:
        self._data_version += 1
        self._data[key] = (t, v)
        self.curves[key].setData(t, v)
        if self._follow_y:
            self._refit_y()

    def point_count(self, key: str | None = None) -> int:
        """Points currently handed to one curve (or all curves)."""
        keys = [key] if key else list(self._data)
        return sum(len(self._data[k][0]) for k in keys if k in self._data)

    def apply_theme(self, theme: Theme) -> None:
        self.theme = theme
        self.setBackground(theme.base)
        item = self.getPlotItem()
        for name in ("left", "bottom"):
            axis = item.getAxis(name)
            axis.setPen(pg.mkPen(theme.border))
            axis.setTextPen(pg.mkPen(theme.muted))
        item.setTitle(f"<span style='color:{theme.text}'>{self.title}</span>"
                      f"<span style='color:{theme.muted}'>&nbsp;&nbsp;{self.unit}</span>",
                      size="9pt")
        self._hover_text.setColor(theme.text)
        self._hover_text.fill = pg.mkBrush(theme.window + "e0")
        self._hover_line.setPen(pg.mkPen(theme.muted, style=Qt.PenStyle.DotLine))
        self.legend.setLabelTextColor(theme.muted)
        self.legend.setBrush(pg.mkBrush(theme.base + "d0"))  # readable over the data
        self.legend.update()
        self.incident_marks.apply_theme(theme)

    def set_incidents(self, spans: Sequence[IncidentSpan], *, labelled: bool = True) -> None:
        """Shade these incidents' time spans behind the curves (``labelled``: with their
        number and rule)."""
        self.incident_marks.labelled = labelled
        self.incident_marks.set_spans(spans)

    # -- hover ----------------------------------------------------------------------------

    def nearest(self, scene_pos: QPointF, keys: list[str] | None = None
                ) -> tuple[str, float, float] | None:
        """The drawn point closest to a scene position, within a few pixels in x."""
        vb = self.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(scene_pos):
            return None
        pos = vb.mapSceneToView(scene_pos)
        px = vb.viewPixelSize()
        best: tuple[float, str, float, float] | None = None
        for key in keys or list(self._data):
            if key not in self._data or not self.curves[key].isVisible():
                continue
            t, v = self._data[key]
            if len(t) == 0:
                continue
            i = int(np.searchsorted(t, pos.x()))
            lo, hi = max(0, i - 50), min(len(t), i + 50)
            dx = (t[lo:hi] - pos.x()) / px[0]
            dy = (v[lo:hi] - pos.y()) / px[1] if self._styles[key]["points"] else 0.0 * dx
            d2 = np.nan_to_num(dx * dx + dy * dy, nan=np.inf)
            j = int(np.argmin(d2))
            if best is None or d2[j] < best[0]:
                best = (float(d2[j]), key, float(t[lo + j]), float(v[lo + j]))
        if best is None or best[0] > HOVER_RADIUS_PX ** 2:
            return None
        return best[1], best[2], best[3]

    def _on_scene_mouse_moved(self, scene_pos: QPointF) -> None:
        hit = self.nearest(scene_pos)
        if hit is None:
            self._hover_text.hide()
            self._hover_line.hide()
            return
        key, t, v = hit
        label = self.curves[key].name() or key
        stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"
        self._hover_text.setText(f"{label}: {v:.4g} {self.unit}\n{stamp}")
        self._hover_text.setPos(t, v)
        self._hover_line.setPos(t)
        self._hover_text.show()
        self._hover_line.show()


class LatencyPlotWidget(SeriesPlotWidget):
    """Each request's latency as a dot, failures in red, rolling p50/p95/p99, the SLO line."""

    point_clicked = Signal(float, bool)  # epoch seconds of the clicked request, failed?

    def __init__(self, theme: Theme, parent=None) -> None:
        super().__init__("Latency", "ms", theme, parent)
        self.add_curve("points", "request", theme.points, points=True, size=3, z=1)
        self.add_curve("failures", "failed", theme.failure, points=True, size=5, z=3)
        self.add_curve("p50", "p50", theme.p50, width=1.6, z=4)
        self.add_curve("p95", "p95", theme.p95, width=1.6, z=4)
        self.add_curve("p99", "p99", theme.p99, width=1.6, z=4)
        # The label sits under the line, so it stays inside the plot when the SLO is the top,
        # and at the right end: the legend takes the top left, and covered it there whenever
        # the SLO was the top of the range (history views of a fast model).
        self.slo_line = pg.InfiniteLine(angle=0, movable=False, label="SLO",
                                        labelOpts={"position": 0.98, "anchors": [(1, 0), (1, 0)]})
        self.slo_line.setZValue(5)
        self.slo_line.label.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.slo_line.hide()
        # Counted in the y auto-range on purpose: the SLO is always in sight.
        self.getPlotItem().addItem(self.slo_line)
        self._apply_slo_theme()
        self.scene().sigMouseClicked.connect(self._on_scene_mouse_clicked)

    def y_ceiling(self) -> float:
        return self.slo_line.value() if self.slo_line.isVisible() else -np.inf

    def set_slo(self, slo_ms: float | None) -> None:
        if slo_ms is None:
            self.slo_line.hide()
            return
        self.slo_line.setPos(slo_ms)
        self.slo_line.label.setFormat(f"SLO {slo_ms:g} ms")
        self.slo_line.show()

    def apply_theme(self, theme: Theme) -> None:
        super().apply_theme(theme)
        if hasattr(self, "slo_line"):
            for key, color in (("points", theme.points), ("failures", theme.failure),
                               ("p50", theme.p50), ("p95", theme.p95), ("p99", theme.p99)):
                self.set_curve_color(key, color)
            self._apply_slo_theme()

    def _apply_slo_theme(self) -> None:
        self.slo_line.setPen(pg.mkPen(self.theme.slo, width=1.2, style=Qt.PenStyle.DashLine))
        self.slo_line.label.setColor(self.theme.slo)

    def _on_scene_mouse_clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        hit = self.nearest(event.scenePos(), ["failures", "points"])
        if hit is not None:
            event.accept()
            self.point_clicked.emit(hit[1], hit[0] == "failures")


class XLinker:
    """Keeps many plots on one x range, copied exactly (pyqtgraph's own link aligns by pixel,
    which shifts plots whose columns differ in width)."""

    def __init__(self) -> None:
        self.plots: list[pg.PlotWidget] = []
        self._busy = False

    def add(self, plot: pg.PlotWidget) -> None:
        self.plots.append(plot)
        plot.getViewBox().sigXRangeChanged.connect(self._on_view_x_range_changed)
        if len(self.plots) > 1:
            x0, x1 = self.plots[0].getViewBox().viewRange()[0]
            plot.setXRange(x0, x1, padding=0)

    def clear(self) -> None:
        self.plots.clear()

    def set_range(self, x0: float, x1: float, padding: float = 0.0) -> None:
        self._busy = True
        try:
            for plot in self.plots:
                plot.setXRange(x0, x1, padding=padding)
        finally:
            self._busy = False

    def set_views(self, x0: float, x1: float, *, snap: bool = False) -> None:
        """Live frame: each plot gets x and a fitted y in one change."""
        self._busy = True
        try:
            for plot in self.plots:
                plot.set_view(x0, x1, snap=snap)
        finally:
            self._busy = False

    def fit_y(self) -> None:
        for plot in self.plots:
            plot.fit_y()

    def _on_view_x_range_changed(self, vb, x_range) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            for plot in self.plots:
                if plot.getViewBox() is not vb:
                    plot.setXRange(x_range[0], x_range[1], padding=0)
        finally:
            self._busy = False
