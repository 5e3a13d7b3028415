"""Dots or a line over many points, drawn with one ``drawPoints``/``drawPolyline``. Thread: GUI.

pyqtgraph's ScatterPlotItem keeps a record per point and costs milliseconds per thousand
points on every ``setData``, and PlotDataItem re-clips and re-downsamples in Python on every
range change; a live plot changes range 30 times a second. These items keep two numpy arrays
and, at paint time, draw only the lowest and highest point of each pixel column when there
are more points than pixels, so outliers never disappear.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pyqtgraph.functions as fn
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QPainter, QTransform


def peak_decimate(x: np.ndarray, y: np.ndarray, x0: float, x1: float, columns: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Keep the min and max of y in each of ``columns`` equal slices of [x0, x1).

    Every other column lists its max first, so a polyline through the result joins max to
    max and min to min between columns instead of crossing the whole band diagonally: the
    same picture with about half the pixels to draw (drawing dominates a 10-minute view)."""
    lo, hi = x.searchsorted((x0, x1))
    x, y = x[lo:hi], y[lo:hi]
    if len(x) <= 2 * columns or columns <= 0:
        return x, y
    col = ((x - x0) * (columns / (x1 - x0))).astype(np.int64)
    first = np.empty(len(col), dtype=bool)
    first[0] = True
    np.not_equal(col[1:], col[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    finite = np.where(np.isfinite(y), y, np.nan)
    pairs = np.empty((len(starts), 2))
    np.fmin.reduceat(finite, starts, out=pairs[:, 0])
    np.fmax.reduceat(finite, starts, out=pairs[:, 1])
    pairs[1::2] = pairs[1::2, ::-1]
    return np.repeat(x[starts], 2), pairs.ravel()


class PointsItem(pg.GraphicsObject):
    def __init__(self, name: str, color: str, size: float = 3.0) -> None:
        super().__init__()
        self._name = name
        self._x = np.empty(0)
        self._y = np.empty(0)
        self._bounds = QRectF()
        self._bounding: QRectF | None = None
        # The keys LegendItem reads to draw this item's sample.
        self.opts: dict = {"pen": None, "symbol": "o", "name": name, "antialias": False}
        self.set_style(color, size)

    def name(self) -> str:
        return self._name

    def set_style(self, color: str, size: float) -> None:
        self.color = color
        self.size = size
        self.opts.update(size=size + 2, brush=pg.mkBrush(color), symbolBrush=pg.mkBrush(color))
        self._pen = pg.mkPen(color, width=size)
        # Square dots: the raster engine draws them about seven times faster than round ones.
        self._pen.setCapStyle(Qt.PenCapStyle.SquareCap)
        self._pen.setCosmetic(True)
        self.update()

    def setData(self, x: np.ndarray, y: np.ndarray) -> None:
        self.prepareGeometryChange()
        self._bounding = None
        self._x = np.asarray(x, dtype=np.float64)
        self._y = np.asarray(y, dtype=np.float64)
        if len(self._x):
            finite = self._y[np.isfinite(self._y)]
            ymin, ymax = (float(finite.min()), float(finite.max())) if len(finite) else (0, 0)
            self._bounds = QRectF(float(self._x[0]), ymin, float(self._x[-1] - self._x[0]),
                                  ymax - ymin)
        else:
            self._bounds = QRectF()
        self.informViewBoundsChanged()
        self.update()

    def dataBounds(self, ax: int, frac: float = 1.0, orthoRange=None):
        if not len(self._x):
            return None, None
        if ax == 0:
            return float(self._x[0]), float(self._x[-1])
        y = self._y
        if orthoRange is not None:
            lo, hi = np.searchsorted(self._x, orthoRange)
            y = y[lo:hi]
        y = y[np.isfinite(y)]
        return (float(y.min()), float(y.max())) if len(y) else (None, None)

    def pixelPadding(self) -> float:
        return self.size

    def boundingRect(self) -> QRectF:
        # Qt asks for this many times a frame; it only changes with the data or the view.
        if self._bounding is None:
            if self._bounds.isNull():
                self._bounding = QRectF()
            else:
                px, py = self.pixelVectors()
                pad_x = 0.0 if px is None else px.length() * self.size
                pad_y = 0.0 if py is None else py.length() * self.size
                self._bounding = self._bounds.adjusted(-pad_x, -pad_y, pad_x, pad_y)
        return self._bounding

    def viewTransformChanged(self) -> None:
        self.prepareGeometryChange()
        self._bounding = None
        super().viewTransformChanged()

    def paint(self, painter: QPainter, *_args) -> None:
        vb = self.getViewBox()
        if vb is None or not len(self._x):
            return
        (x0, x1), _ = vb.viewRange()
        columns = int(vb.width())
        x, y = peak_decimate(self._x, self._y, x0, x1, columns)
        keep = np.isfinite(y)
        x, y = x[keep], y[keep]
        if not len(x):
            return
        polygon = fn.create_qpolygonf(len(x))
        buf = fn.ndarray_from_qpolygonf(polygon)
        buf[:, 0] = x
        buf[:, 1] = y
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        painter.setPen(self._pen)
        painter.drawPoints(polygon)


class LineItem(PointsItem):
    """A polyline; a NaN breaks it (a gap in the data stays a gap on screen)."""

    def __init__(self, name: str, color: str, width: float = 1.0,
                 style: Qt.PenStyle = Qt.PenStyle.SolidLine) -> None:
        self._style = style
        super().__init__(name, color, width)
        self.opts["symbol"] = None

    def set_style(self, color: str, size: float) -> None:
        super().set_style(color, size)
        self._pen.setCapStyle(Qt.PenCapStyle.FlatCap)
        self._pen.setStyle(self._style)
        self.opts["pen"] = self._pen  # the legend's sample shows the line as styled
        # Qt's raster engine strokes a wider-than-one-pixel line as a polygon, ten times the
        # cost of its one-pixel path. A solid line n pixels wide is drawn instead as
        # one-pixel strokes shifted right and down by up to n - 1 pixels: an L-shaped brush,
        # solid at every slope, and at 2 px three fast strokes cost a third of one wide one.
        width = max(1, round(size)) if self._style == Qt.PenStyle.SolidLine else 1
        self._shifts = [(0, 0), *((i, 0) for i in range(1, width)),
                        *((0, i) for i in range(1, width))]
        self._stroke_pen = pg.mkPen(color, width=1) if len(self._shifts) > 1 else self._pen
        self._stroke_pen.setCosmetic(True)
        self._stroke_pen.setCapStyle(Qt.PenCapStyle.FlatCap)

    def paint(self, painter: QPainter, *_args) -> None:
        vb = self.getViewBox()
        if vb is None or not len(self._x):
            return
        (x0, x1), _ = vb.viewRange()
        # One sample either side of the window, so the line runs to the plot's edges.
        lo, hi = self._x.searchsorted((x0, x1))
        lo, hi = max(0, int(lo) - 1), min(len(self._x), int(hi) + 1)
        x, y = self._x[lo:hi], self._y[lo:hi]
        if not len(x):
            return
        x, y = peak_decimate(x, y, float(x[0]), float(x[-1]) + 1e-9, int(vb.width()))
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        painter.setPen(self._stroke_pen)
        gaps = np.flatnonzero(~np.isfinite(y)).tolist()
        polygons = []
        for start, end in zip([0, *(g + 1 for g in gaps)], [*gaps, len(y)], strict=True):
            if end - start >= 2:
                polygon = fn.create_qpolygonf(end - start)
                buf = fn.ndarray_from_qpolygonf(polygon)
                buf[:, 0] = x[start:end]
                buf[:, 1] = y[start:end]
                polygons.append(polygon)
        to_device = painter.transform()
        for dx, dy in self._shifts:
            if dx or dy:
                painter.setTransform(to_device * QTransform.fromTranslate(dx, dy))
            for polygon in polygons:
                painter.drawPolyline(polygon)
        painter.setTransform(to_device)
