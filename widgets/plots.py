"""Live time-series plots (pyqtgraph): named curves, a hover read-out, clickable latency points.

Thread: GUI only. Plots never pull data: their owner hands them numpy views on its repaint
timer, and a curve whose data did not change is not touched.
"""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal

from widgets.theme import Theme

HOVER_RADIUS_PX = 10.0


class TimeAxisItem(pg.DateAxisItem):
    """Clock-time ticks that stay readable in a narrow plot."""

    def __init__(self, **kwargs) -> None:
        super().__init__(orientation="bottom", **kwargs)


class SeriesPlotWidget(pg.PlotWidget):
    """A titled plot of named curves over epoch seconds, with a hover read-out."""

    def __init__(self, title: str, unit: str, theme: Theme, parent=None) -> None:
        super().__init__(parent=parent, axisItems={"bottom": TimeAxisItem()})
        self.title = title
        self.unit = unit
        self.theme = theme
        self.curves: dict[str, pg.PlotDataItem] = {}
        self._data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._styles: dict[str, dict] = {}
        item = self.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.showGrid(x=True, y=True, alpha=0.15)
        item.setClipToView(True)
        self.setMinimumHeight(140)
        vb = item.getViewBox()
        vb.setMouseEnabled(x=True, y=False)
        vb.enableAutoRange(axis="y")
        self.legend = item.addLegend(offset=(4, 2), labelTextSize="8pt", colCount=5,
                                     verSpacing=-6, horSpacing=8)
        self._hover_text = pg.TextItem(anchor=(0, 1))
        self._hover_text.setZValue(100)
        self._hover_line = pg.InfiniteLine(angle=90, movable=False)
        self._hover_line.setZValue(90)
        for it in (self._hover_text, self._hover_line):
            it.hide()
            item.addItem(it, ignoreBounds=True)
        self.scene().sigMouseMoved.connect(self._on_scene_mouse_moved)
        self.apply_theme(theme)

    # -- curves ---------------------------------------------------------------------------

    def add_curve(self, key: str, label: str, color: str, *, points: bool = False,
                  width: float = 1.5, dash: bool = False, size: float = 3.0,
                  z: float = 0.0) -> pg.PlotDataItem:
        style: dict = {"color": color, "points": points, "width": width, "dash": dash,
                       "size": size}
        curve = pg.PlotDataItem(
            name=label, clipToView=True, autoDownsample=True, downsampleMethod="peak",
            skipFiniteCheck=False, connect="finite")
        curve.setZValue(z)
        self.curves[key] = curve
        self._styles[key] = style
        self._style(curve, style)
        self.getPlotItem().addItem(curve)
        return curve

    def _style(self, curve: pg.PlotDataItem, style: dict) -> None:
        color = style["color"]
        if style["points"]:
            curve.setPen(None)
            curve.setSymbol("o")
            curve.setSymbolSize(style["size"])
            curve.setSymbolPen(None)
            curve.setSymbolBrush(pg.mkBrush(color))
        else:
            pen = pg.mkPen(color, width=style["width"],
                           style=Qt.PenStyle.DashLine if style["dash"] else Qt.PenStyle.SolidLine)
            curve.setPen(pen)

    def set_curve_color(self, key: str, color: str) -> None:
        self._styles[key]["color"] = color
        self._style(self.curves[key], self._styles[key])

    def rename(self, key: str, label: str) -> None:
        """Change a curve's legend text (history mode shows means, not percentiles)."""
        legend_label = self.legend.getLabel(self.curves[key])
        if legend_label is not None:
            legend_label.setText(label)

    def set_curve(self, key: str, t: np.ndarray, v: np.ndarray) -> None:
        self._data[key] = (t, v)
        self.curves[key].setData(t, v)

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
        self.add_curve("failures", "failed", theme.failure, points=True, size=6, z=3)
        self.add_curve("p50", "p50", theme.p50, width=1.6, z=4)
        self.add_curve("p95", "p95", theme.p95, width=1.6, z=4)
        self.add_curve("p99", "p99", theme.p99, width=1.6, z=4)
        self.slo_line = pg.InfiniteLine(angle=0, movable=False, label="SLO",
                                        labelOpts={"position": 0.03, "anchors": [(0, 1), (0, 1)]})
        self.slo_line.setZValue(5)
        self.slo_line.hide()
        # Counted in the y auto-range on purpose: the SLO is always in sight.
        self.getPlotItem().addItem(self.slo_line)
        self._apply_slo_theme()
        self.scene().sigMouseClicked.connect(self._on_scene_mouse_clicked)

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
