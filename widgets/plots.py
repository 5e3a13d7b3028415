"""Live time-series plots (pyqtgraph): named curves, a hover read-out, clickable latency points,
and a menu of our own (export CSV or PNG, reset zoom).

Thread: GUI only. Plots never pull data: their owner hands them numpy views on its repaint
timer, and a curve whose data did not change is not touched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPointF, Qt, Signal
from PySide6.QtWidgets import QGraphicsItem, QMenu

from widgets.incident_marks import IncidentMarks, IncidentSpan
from widgets.plot_menu import PlotMenu
from widgets.points_item import LineItem, PointsItem
from widgets.theme import Theme

HOVER_RADIUS_PX = 10.0
HOVER_MAX_POINTS = 4_000  # looked at around the cursor per curve: a mouse move stays cheap
LEGEND_OFFSET_PX = (4, 2)
PLOT_MIN_HEIGHT_PX = 140
LEGEND_SPACING_PX = (8, 9)  # between a legend's cells, around them
LEGEND_COMPACT_PX = (3, 3)  # the same where the plot is too narrow for two rows of entries


class TimeAxisItem(pg.DateAxisItem):
    """Clock-time ticks that stay readable in a narrow plot."""

    def __init__(self, **kwargs) -> None:
        super().__init__(orientation="bottom", **kwargs)


class ValueAxisItem(pg.AxisItem):
    """The y axis. The wheel over it zooms y where its plot allows (frozen and history views);
    the view box itself keeps y off the mouse, so the wheel inside the plot zooms time only."""

    def __init__(self, **kwargs) -> None:
        super().__init__(orientation="left", **kwargs)
        self.zoom_y: Callable[[float, QPointF], bool] | None = None

    def wheelEvent(self, event) -> None:
        if self.zoom_y is not None and self.zoom_y(event.delta(), event.scenePos()):
            event.accept()
        else:
            super().wheelEvent(event)


class SeriesPlotWidget(PlotMenu, pg.PlotWidget):
    """A titled plot of named curves over epoch seconds, with a hover read-out and a menu.

    Three y modes: live (the owner's frames fit y on every frame), following (paused or
    history: y refits to what is in sight as x pans) and the user's own y zoom (wheel over
    the y axis in a frozen view), kept until Reset zoom or the next live frame."""

    def __init__(self, title: str, unit: str, theme: Theme, parent=None, *,
                 zero_floor: bool = True) -> None:
        super().__init__(parent=parent, axisItems={"bottom": TimeAxisItem(),
                                                   "left": ValueAxisItem()})
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
        self._y_zoomed = False  # the user set y with the wheel; fits leave it alone
        self._user_hidden: set[str] = set()  # curves hidden from the legend, kept across views
        self._linker: XLinker | None = None
        self._menu: QMenu | None = None
        self.export_stem = "-".join(title.lower().replace("&", " ").split()) or "plot"
        item = self.getPlotItem()
        # pyqtgraph's own menu would let x be set per plot, but x is linked and driven by the
        # window's clock: ours (context_menu) offers what stays true for the linked plots.
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
        self.compact = False
        self.setMinimumHeight(PLOT_MIN_HEIGHT_PX)
        vb = item.getViewBox()
        vb.setMouseEnabled(x=True, y=False)
        vb.enableAutoRange(axis="y")
        vb.sigXRangeChanged.connect(self._on_view_x_range_changed)
        vb.sigResized.connect(self._on_view_resized)
        item.getAxis("left").zoom_y = self._zoom_y
        self.legend = item.addLegend(offset=LEGEND_OFFSET_PX, labelTextSize="8pt", colCount=5,
                                     verSpacing=-6, horSpacing=8)
        self.legend.sigSampleClicked.connect(self._on_legend_sample_clicked)
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
        self.scene().sigMouseClicked.connect(self._on_scene_mouse_clicked)
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
        self._fit_legend(relayout=True)

    def show_curve(self, key: str, shown: bool) -> None:
        """Show or hide a curve and its legend entry: a legend must not list what is not
        drawn (history views draw no percentiles and no failure dots). A curve the user hid
        from the legend stays hidden, listed with its crossed-out eye."""
        curve = self.curves[key]
        curve.setVisible(shown and key not in self._user_hidden)
        listed = self.legend.getLabel(curve) is not None
        if shown and not listed:
            self._add_to_legend(curve, self._labels.get(key, key))
        elif not shown and listed:
            self._labels[key] = self.legend.getLabel(curve).text
            self.legend.removeItem(curve)
            self._fit_legend(relayout=True)

    def _on_legend_sample_clicked(self, curve: QGraphicsItem) -> None:
        # The legend has already toggled the curve: remember the user's choice for later views.
        key = next((k for k, c in self.curves.items() if c is curve), None)
        if key is None:
            return
        if curve.isVisible():
            self._user_hidden.discard(key)
        else:
            self._user_hidden.add(key)
            self.hide_hover()
        if self._follow_y:
            self._refit_y()

    def _fit_legend(self, *, relayout: bool = False) -> None:
        """As many legend columns as the plot's width holds: a narrow plot wraps its legend
        onto more rows instead of clipping its last entries. Runs on resizes and on legend
        changes, never per frame."""
        legend, items = self.legend, self.legend.items
        room = self.getPlotItem().getViewBox().width() - LEGEND_OFFSET_PX[0] - 2
        if not items or room <= 0:
            return
        widths = [sample.width() + label.item.boundingRect().width() for sample, label in items]

        def columns_for(gap: float, margin: float) -> int:
            for n in range(len(widths), 1, -1):
                need = 2 * margin + gap * (2 * n - 1) + sum(max(widths[c::n]) for c in range(n))
                if need <= room:
                    return n
            return 1

        spacing = LEGEND_SPACING_PX
        columns = columns_for(*spacing)
        if math.ceil(len(widths) / columns) > 2:  # tighter before a third row covers the data
            spacing = LEGEND_COMPACT_PX
            columns = columns_for(*spacing)
        layout = legend.layout
        if layout.horizontalSpacing() != spacing[0]:
            layout.setHorizontalSpacing(spacing[0])
            layout.setContentsMargins(*[spacing[1]] * 4)
            relayout = True
        if relayout or columns != legend.columnCount:
            # setColumnCount lays every entry out again, in order: no holes where an entry
            # was removed (a history view's percentiles).
            legend.columnCount = 0
            legend.setColumnCount(columns)

    def _on_view_resized(self, _vb) -> None:
        self._fit_legend()

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
        if self._follow_y or self._y_zoomed:
            self._leave_frozen()
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
        highest value to the top edge, where the legend then hides it. A y range the user
        zoomed to stays (history refits every refresh) until Reset zoom."""
        if self._y_zoomed:
            return
        self._follow_y = True
        self._refit_y()

    @property
    def frozen(self) -> bool:
        """Not driven by the live clock (paused or history): the mouse may zoom and reset."""
        return self._follow_y or self._y_zoomed

    def _leave_frozen(self) -> None:
        # Back to live frames: the clock fits y on every frame itself, and what the mouse
        # left on the frozen view (a read-out, a zoom) no longer describes it.
        self._follow_y = self._y_zoomed = False
        self._last_view = None
        self.hide_hover()

    def reset_interaction(self) -> None:
        """A new view (another time window): drop the hover read-out and the user's y zoom."""
        self.hide_hover()
        self._y_zoomed = False

    def _zoom_y(self, delta: float, scene_pos: QPointF) -> bool:
        """The wheel over the y axis: zoom y about the cursor, frozen views only (live views
        keep y fitted to the data). True when it zoomed."""
        if not self.frozen:
            return False
        vb = self.getPlotItem().getViewBox()
        (y0, y1), centre = vb.viewRange()[1], vb.mapSceneToView(scene_pos).y()
        scale = 1.02 ** (delta * vb.state["wheelScaleFactor"])  # as pyqtgraph's own wheel
        self._follow_y, self._y_zoomed = False, True
        vb.setYRange(centre + (y0 - centre) * scale, centre + (y1 - centre) * scale, padding=0)
        return True

    def reset_zoom(self) -> None:
        """Back to the frozen view's own time range with y fitted, for every linked plot
        (a live view has no zoom to reset)."""
        if not self.frozen:
            return
        self.hide_hover()
        if self._linker is not None:
            self._linker.reset_zoom()
            return
        self._y_zoomed = False
        spans = [(t[0], t[-1]) for key, (t, _) in self._data.items()
                 if len(t) and self.curves[key].isVisible()]
        if spans:
            self.setXRange(min(a for a, _ in spans), max(b for _, b in spans), padding=0.01)
        self.fit_y()

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

    def set_compact(self, compact: bool, min_height: int) -> None:
        """Short panels (many endpoints in sight): a smaller title and no legend, whose rows
        would cover most of a short plot; the hover read-out still names each curve, and a
        curve hidden from the legend before stays hidden."""
        self.compact = compact
        self.setMinimumHeight(min_height)
        self.legend.setVisible(not compact)
        # Only the major ticks' values: a short axis otherwise prints its labels over each other.
        self.getPlotItem().getAxis("left").setStyle(maxTextLevel=0 if compact else 2)
        self.apply_theme(self.theme)
        if self._follow_y and not self._y_zoomed:  # headroom for a legend that went or came
            self._refit_y()

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

    def in_sight(self) -> bool:
        """Whether any of the plot is on screen (its viewport's region: the view's own is
        always empty, the viewport covering it)."""
        return self.isVisible() and not self.viewport().visibleRegion().isEmpty()

    def curve_data(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """What a curve draws now (its last ``set_curve``), or None before any."""
        return self._data.get(key)

    def remove_curve(self, key: str) -> None:
        """Take a curve off the plot and its legend (an overlay's endpoint unticked)."""
        curve = self.curves.pop(key, None)
        if curve is None:
            return
        if self.legend.getLabel(curve) is not None:
            self.legend.removeItem(curve)
            self._fit_legend(relayout=True)
        self.getPlotItem().removeItem(curve)
        for table in (self._data, self._styles, self._labels):
            table.pop(key, None)
        self._user_hidden.discard(key)
        self._data_version += 1

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
                      size="7pt" if self.compact else "9pt")
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
        """The curve under a scene position, within a few pixels, and its sample there.

        Distances are in screen pixels, in x and y: to each dot, and for a line also to its
        segments, so pointing anywhere on a line (between its samples too) picks that line,
        and the sample reported is the segment's end nearer the cursor; a dot is hit anywhere
        on it. On a tie (the cursor on two dots) the curve drawn on top wins."""
        vb = self.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(scene_pos):
            return None
        pos = vb.mapSceneToView(scene_pos)
        px, py = vb.viewPixelSize()
        reach = HOVER_RADIUS_PX * px
        best: tuple[float, float, str, float, float] | None = None  # score, z, key, t, v
        for key in keys or list(self._data):
            if key not in self._data or not self.curves[key].isVisible():
                continue
            t, v = self._data[key]
            line = not self._styles[key]["points"]
            lo, hi = (int(i) for i in np.searchsorted(t, (pos.x() - reach, pos.x() + reach)))
            if line:  # the segments that cross into the cursor's reach from either side
                lo, hi = max(0, lo - 1), min(len(t), hi + 1)
            if hi - lo > HOVER_MAX_POINTS:
                mid = int(np.searchsorted(t, pos.x()))
                lo, hi = max(lo, mid - HOVER_MAX_POINTS // 2), min(hi, mid + HOVER_MAX_POINTS // 2)
            if hi <= lo:
                continue
            dx = (t[lo:hi] - pos.x()) / px
            dy = (v[lo:hi] - pos.y()) / py
            d2 = np.nan_to_num(dx * dx + dy * dy, nan=np.inf)
            j = int(np.argmin(d2))
            score = float(d2[j])
            if line and hi - lo >= 2:
                seg, k = _nearest_segment(dx, dy)
                if seg < score:
                    score, j = seg, k
            # On what is drawn (a dot's disc, a line's width, a pixel's rounding besides)
            # counts as on it, and then the curve drawn on top wins: a big red dot over
            # request dots, a percentile line over the dots it crosses.
            style = self._styles[key]
            if math.sqrt(score) <= (style["width"] if line else style["size"]) / 2 + 1.0:
                score = 0.0
            z = self.curves[key].zValue()
            if best is None or (score, -z) < (best[0], -best[1]):
                best = (score, z, key, float(t[lo + j]), float(v[lo + j]))
        if best is None or best[0] > HOVER_RADIUS_PX ** 2:
            return None
        return best[2], best[3], best[4]

    def _on_scene_mouse_moved(self, scene_pos: QPointF) -> None:
        hit = self.nearest(scene_pos)
        if hit is None:
            self.hide_hover()
            return
        key, t, v = hit
        label = self._labels.get(key) or self.curves[key].name() or key
        stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"
        self._hover_text.setText(f"{label}: {v:.4g} {self.unit}\n{stamp}")
        self._hover_text.setPos(t, v)
        self._hover_text.setAnchor(self._hover_anchor(t, v))
        self._hover_line.setPos(t)
        self._hover_text.show()
        self._hover_line.show()

    def _hover_anchor(self, t: float, v: float) -> tuple[float, float]:
        """Above and right of the point, flipped left or below where the box would leave
        the plot (a point near the right edge is where live data is)."""
        vb = self.getPlotItem().getViewBox()
        inside = vb.sceneBoundingRect()
        at = vb.mapViewToScene(QPointF(t, v))
        size = self._hover_text.textItem.boundingRect()
        flip_x = at.x() + size.width() > inside.right() and at.x() - size.width() >= inside.left()
        flip_y = at.y() - size.height() < inside.top()
        return (1.0 if flip_x else 0.0, 0.0 if flip_y else 1.0)

    def hide_hover(self) -> None:
        self._hover_text.hide()
        self._hover_line.hide()

    def leaveEvent(self, event) -> None:
        self.hide_hover()
        super().leaveEvent(event)

    def viewportEvent(self, event: QEvent) -> bool:
        # The mouse leaves the viewport (the plot's whole face), not the view around it.
        if event.type() == QEvent.Type.Leave:
            self.hide_hover()
        return super().viewportEvent(event)

    # -- menu, export, zoom reset ---------------------------------------------------------

    def _on_scene_mouse_clicked(self, event) -> None:
        inside = self.getPlotItem().sceneBoundingRect().contains(event.scenePos())
        if not inside or event.isAccepted():
            return
        if event.button() == Qt.MouseButton.RightButton:
            event.accept()
            self.context_menu().popup(event.screenPos().toPoint())

    def mouseDoubleClickEvent(self, event) -> None:
        # Here rather than in the scene's click events: under Qt 6 a double-click arrives as
        # press, double-click, release, and pyqtgraph's scene then reports a single click.
        super().mouseDoubleClickEvent(event)
        at = self.mapToScene(event.position().toPoint())
        if (event.button() == Qt.MouseButton.LeftButton and self.frozen
                and self.getPlotItem().getViewBox().sceneBoundingRect().contains(at)
                and not (self.legend.isVisible()
                         and self.legend.sceneBoundingRect().contains(at))):
            event.accept()
            self.reset_zoom()

def _nearest_segment(dx: np.ndarray, dy: np.ndarray) -> tuple[float, int]:
    """Squared distance from the origin (the cursor) to the nearest segment of a polyline
    given in pixel offsets, and the index of that segment's end nearer to the cursor.
    A segment with a NaN end is a gap, not a segment."""
    ax, ay, bx, by = dx[:-1], dy[:-1], dx[1:], dy[1:]
    sx, sy = bx - ax, by - ay
    length2 = sx * sx + sy * sy
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.clip(np.where(length2 > 0, -(ax * sx + ay * sy) / length2, 0.0), 0.0, 1.0)
    cx, cy = ax + u * sx, ay + u * sy
    d2 = np.nan_to_num(cx * cx + cy * cy, nan=np.inf)
    k = int(np.argmin(d2))
    return float(d2[k]), k + (1 if u[k] > 0.5 else 0)


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
        super()._on_scene_mouse_clicked(event)
        if event.isAccepted() or event.button() != Qt.MouseButton.LeftButton or event.double():
            return
        hit = self.nearest(event.scenePos(), ["failures", "points"])
        if hit is not None:
            event.accept()
            self.point_clicked.emit(hit[1], hit[0] == "failures")


class XLinker:
    """Keeps many plots on one x range, copied exactly (pyqtgraph's own link aligns by pixel,
    which shifts plots whose columns differ in width)."""

    def __init__(self) -> None:
        self.plots: list[SeriesPlotWidget] = []
        self._busy = False
        # The frozen view's own x range (padding included), where Reset zoom returns.
        self.home: tuple[float, float, float] | None = None
        # The newest live frame's x range: plots out of sight skip live frames (``set_views``)
        # and take it when the view freezes or a plot joins.
        self._live: tuple[float, float] | None = None

    def add(self, plot: SeriesPlotWidget) -> None:
        self.plots.append(plot)
        plot._linker = self
        plot.getViewBox().sigXRangeChanged.connect(self._on_view_x_range_changed)
        if self._live is not None:
            plot.setXRange(*self._live, padding=0)
        elif len(self.plots) > 1:
            x0, x1 = self.plots[0].getViewBox().viewRange()[0]
            plot.setXRange(x0, x1, padding=0)

    def clear(self) -> None:
        self.plots.clear()

    def remove(self, plot: SeriesPlotWidget) -> None:
        if plot in self.plots:
            self.plots.remove(plot)
            plot.getViewBox().sigXRangeChanged.disconnect(self._on_view_x_range_changed)
            plot._linker = None

    def set_range(self, x0: float, x1: float, padding: float = 0.0) -> None:
        self.home = (x0, x1, padding)
        self._live = None
        self._busy = True
        try:
            for plot in self.plots:
                plot.setXRange(x0, x1, padding=padding)
        finally:
            self._busy = False

    def set_views(self, x0: float, x1: float, *, snap: bool = False) -> None:
        """Live frame: each plot in sight gets x and a fitted y in one change. One out of
        sight (most of them, with many endpoints) is left until it comes into sight, a frame
        later: moving all 28 plots of ten endpoints was nine tenths of a frame's work."""
        self._live = (x0, x1)
        self._busy = True
        try:
            for plot in self.plots:
                if plot.in_sight():
                    plot.set_view(x0, x1, snap=snap)
        finally:
            self._busy = False

    def fit_y(self) -> None:
        """The view froze (paused): y follows what is in sight, and Reset zoom comes back
        to this x range (the last live frame's, which every plot takes now)."""
        if self._live is not None:
            self.set_range(*self._live)
        if self.plots:
            x0, x1 = self.plots[0].getViewBox().viewRange()[0]
            self.home = (x0, x1, 0.0)
        for plot in self.plots:
            plot.hide_hover()
            plot.fit_y()

    def reset_zoom(self) -> None:
        for plot in self.plots:
            plot._y_zoomed = False
        if self.home is not None:
            self.set_range(*self.home)
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
