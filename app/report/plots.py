"""Vector plots for the report, painted with QPainter paths (lines stay lines in the PDF).
Thread: the report's painting thread.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPainterPath, QPen, QPolygonF

from app.report.data import HeatmapFigure, SeriesFigure
from app.report.layout import INK, MUTED, PT, RULE, font

PALETTE = [QColor("#1f5fa8"), QColor("#c0392b"), QColor("#2e8b57"), QColor("#8e44ad")]
SLO_COLOR = QColor("#d35400")
INCIDENT_FILL = QColor(192, 57, 43, 28)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def _time_ticks(start_ns: int, end_ns: int) -> list[int]:
    span_s = max(1e-9, (end_ns - start_ns) / 1e9)
    step_s = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
                               21600, 43200, 86400) if span_s / s <= 6), 86400 * 7)
    first = math.ceil(start_ns / 1e9 / step_s) * step_s
    return [int((first + i * step_s) * 1e9) for i in range(int(span_s / step_s) + 2)
            if (first + i * step_s) * 1e9 <= end_ns]


def _clock(ts_ns: int, span_ns: int) -> str:
    fmt = "%H:%M:%S" if span_ns < 3 * 3600 * 10**9 else "%d %b %H:%M"
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).strftime(fmt)


class Frame:
    """Maps data to the plot rectangle; draws title, axes, grid and time labels."""

    def __init__(self, p: QPainter, rect: QRectF, title: str, start_ns: int, end_ns: int,
                 y_lo: float, y_hi: float, y_label: str,
                 incident: tuple[int, int | None] | None) -> None:
        self.p = p
        self.start, self.end = start_ns, max(end_ns, start_ns + 1)
        ticks = nice_ticks(y_lo, y_hi)
        self.y_lo, self.y_hi = min(ticks[0], y_lo), max(ticks[-1], y_hi)
        p.setFont(font(9, bold=True))
        p.setPen(INK)
        p.drawText(QRectF(rect.left(), rect.top(), rect.width(), 13 * PT),
                   int(Qt.AlignmentFlag.AlignLeft), title)
        self.plot = QRectF(rect.left() + 40 * PT, rect.top() + 22 * PT,
                           rect.width() - 46 * PT, rect.height() - 40 * PT)
        small = font(7)
        p.setFont(small)
        if incident is not None:
            x0 = self.x(incident[0])
            x1 = self.x(incident[1]) if incident[1] is not None else self.plot.right()
            p.fillRect(QRectF(x0, self.plot.top(), max(0.5 * PT, x1 - x0), self.plot.height()),
                       INCIDENT_FILL)
        for t in ticks:
            y = self.y(t)
            p.setPen(QPen(RULE, 0.4 * PT))
            p.drawLine(QPointF(self.plot.left(), y), QPointF(self.plot.right(), y))
            p.setPen(MUTED)
            p.drawText(QRectF(rect.left(), y - 5 * PT, 36 * PT, 10 * PT),
                       int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
                       _fmt(t))
        for t in _time_ticks(self.start, self.end):
            x = self.x(t)
            p.setPen(QPen(RULE, 0.4 * PT))
            p.drawLine(QPointF(x, self.plot.top()), QPointF(x, self.plot.bottom()))
            p.setPen(MUTED)
            p.drawText(QRectF(x - 30 * PT, self.plot.bottom() + 2 * PT, 60 * PT, 10 * PT),
                       int(Qt.AlignmentFlag.AlignHCenter), _clock(t, self.end - self.start))
        p.setPen(QPen(INK, 0.6 * PT))
        p.drawRect(self.plot)
        p.setPen(MUTED)
        p.drawText(QRectF(rect.left(), rect.top() + 12 * PT, 80 * PT, 10 * PT),
                   int(Qt.AlignmentFlag.AlignLeft), y_label)
        p.drawText(QRectF(rect.left(), self.plot.bottom() + 2 * PT, 36 * PT, 10 * PT),
                   int(Qt.AlignmentFlag.AlignRight), "UTC")

    def x(self, ts_ns: float) -> float:
        return self.plot.left() + (ts_ns - self.start) / (self.end - self.start) \
            * self.plot.width()

    def y(self, v: float) -> float:
        return self.plot.bottom() - (v - self.y_lo) / (self.y_hi - self.y_lo or 1) \
            * self.plot.height()


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index runs where mask holds."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def draw_series(p: QPainter, rect: QRectF, fig: SeriesFigure, start_ns: int, end_ns: int,
                incident: tuple[int, int | None] | None) -> None:
    stacks = [v for v in fig.lines.values()] + (list(fig.band) if fig.band else [])
    finite = np.concatenate([v[np.isfinite(v)] for v in stacks] + [np.zeros(0)])
    lo = float(finite.min()) if len(finite) else 0.0
    hi = float(finite.max()) if len(finite) else 1.0
    off_scale = None
    if fig.band is not None and len(finite):
        # One stall (a GC pause, a page fault) would flatten everything else to the floor:
        # scale to the bulk of the envelope and say that the peak is off the chart.
        tops = fig.band[1][np.isfinite(fig.band[1])]
        first = next(iter(fig.lines.values()))
        means = first[np.isfinite(first)]
        bulk = max(float(np.quantile(tops, 0.98)) if len(tops) else 0.0,
                   float(means.max()) if len(means) else 0.0)
        if hi > 3 * bulk > 0:
            off_scale, hi = hi, bulk * 1.5
    hi = max([hi, *[v * 1.1 for v in fig.hlines.values()]])
    if fig.zero_based:
        lo, hi = min(0.0, lo), hi * 1.05 or 1.0
    else:
        pad = max((hi - lo) * 0.1, abs(hi) * 0.01, 1e-9)
        lo, hi = lo - pad, hi + pad
    frame = Frame(p, rect, fig.title, start_ns, end_ns, lo, hi, fig.y_label, incident)
    p.setClipRect(frame.plot)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    xs = np.array([frame.x(t) for t in fig.ts_ns.astype(np.float64)])
    if fig.band is not None:
        lo_v, hi_v = fig.band
        color = QColor(PALETTE[0])
        color.setAlpha(45)
        for a, b in _runs(np.isfinite(lo_v) & np.isfinite(hi_v)):
            pts = [QPointF(xs[i], frame.y(hi_v[i])) for i in range(a, b)]
            pts += [QPointF(xs[i], frame.y(lo_v[i])) for i in range(b - 1, a - 1, -1)]
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QBrush(color))
            p.drawPolygon(QPolygonF(pts))
    for k, values in enumerate(fig.lines.values()):
        path = QPainterPath()
        idx = np.flatnonzero(np.isfinite(values))
        # A sparse series (memory every second or two) leaves empty buckets between points:
        # join across those, but break the line at a real gap in the data.
        steps = np.diff(idx)
        gap = max(3, 3 * int(np.median(steps))) if len(steps) else 3
        for j, i in enumerate(idx):
            pt = QPointF(xs[i], frame.y(values[i]))
            if j == 0 or i - idx[j - 1] > gap:
                path.moveTo(pt)
            else:
                path.lineTo(pt)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.setPen(QPen(PALETTE[k % len(PALETTE)], 0.9 * PT))
        p.drawPath(path)
    for v in fig.hlines.values():
        pen = QPen(SLO_COLOR, 0.9 * PT, Qt.PenStyle.DashLine)
        p.setPen(pen)
        p.drawLine(QPointF(frame.plot.left(), frame.y(v)), QPointF(frame.plot.right(),
                                                                  frame.y(v)))
    p.setClipping(False)
    legend = [(n, PALETTE[k % len(PALETTE)], False) for k, n in enumerate(fig.lines)]
    legend += [(f"{n} {_fmt(v)} {fig.y_label}", SLO_COLOR, True) for n, v in fig.hlines.items()]
    if off_scale is not None:
        legend.insert(0, (f"peak {_fmt(off_scale)} {fig.y_label} off scale", QColor("#000000"),
                          "text"))
    if incident is not None:
        legend.append(("incident", INCIDENT_FILL, None))
    _legend(p, frame.plot, legend)


def _legend(p: QPainter, plot: QRectF, items: list) -> None:
    p.setFont(font(7))
    x = plot.right()
    y = plot.top() - 10 * PT
    for name, color, dashed in reversed(items):
        w = p.fontMetrics().horizontalAdvance(name) + 16 * PT
        x -= w
        if dashed == "text":
            pass  # a note, no swatch
        elif dashed is None:
            p.fillRect(QRectF(x, y + 2 * PT, 10 * PT, 6 * PT), QColor(192, 57, 43, 70))
        else:
            p.setPen(QPen(color, 1.2 * PT, Qt.PenStyle.DashLine if dashed
                          else Qt.PenStyle.SolidLine))
            p.drawLine(QPointF(x, y + 5 * PT), QPointF(x + 10 * PT, y + 5 * PT))
        p.setPen(INK)
        p.drawText(QRectF(x + 12 * PT, y, w, 10 * PT), int(Qt.AlignmentFlag.AlignLeft), name)


def _heat_color(severity: float) -> QColor:
    if not math.isfinite(severity):
        return QColor("#ffffff")
    s = min(1.0, max(0.0, severity / 3.0))  # 0 .. 3x the threshold
    if severity < 1.0:  # below the threshold: pale blue to pale yellow
        return QColor.fromRgbF(0.86 + 0.12 * s, 0.92, 0.98 - 0.3 * s)
    return QColor.fromRgbF(0.95, 0.75 - 0.55 * s, 0.35 - 0.3 * s)


def draw_heatmap(p: QPainter, rect: QRectF, fig: HeatmapFigure, start_ns: int, end_ns: int,
                 incident: tuple[int, int | None] | None) -> None:
    p.setFont(font(9, bold=True))
    p.setPen(INK)
    p.drawText(QRectF(rect.left(), rect.top(), rect.width(), 13 * PT),
               int(Qt.AlignmentFlag.AlignLeft), fig.title)
    p.setFont(font(6.5 if len(fig.features) > 12 else 7))
    label_w = max(p.fontMetrics().horizontalAdvance(f) for f in fig.features) + 8 * PT
    plot = QRectF(rect.left() + label_w, rect.top() + 18 * PT, rect.width() - label_w - 6 * PT,
                  rect.height() - 46 * PT)
    n_f = len(fig.features)
    row_h = plot.height() / max(1, n_f)
    span = max(1, end_ns - start_ns)

    def x(t: float) -> float:
        return plot.left() + (t - start_ns) / span * plot.width()

    ts = fig.ts_ns.astype(np.float64)
    edges = np.concatenate([ts, [ts[-1] + (ts[-1] - ts[-2] if len(ts) > 1 else 5e9)]])
    p.setPen(Qt.PenStyle.NoPen)
    for i in range(len(ts)):
        x0, x1 = max(plot.left(), x(edges[i])), min(plot.right(), x(edges[i + 1]))
        if x1 <= x0:
            continue
        for j in range(n_f):
            p.fillRect(QRectF(x0, plot.top() + j * row_h, x1 - x0 + 0.2 * PT, row_h),
                       _heat_color(float(fig.severity[i, j])))
    p.setFont(font(6.5 if n_f > 12 else 7))
    p.setPen(INK)
    for j, name in enumerate(fig.features):
        p.drawText(QRectF(rect.left(), plot.top() + j * row_h, label_w - 4 * PT, row_h),
                   int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), name)
    p.setPen(QPen(INK, 0.6 * PT))
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.drawRect(plot)
    if incident is not None:
        p.setPen(QPen(QColor("#c0392b"), 0.9 * PT, Qt.PenStyle.DashLine))
        p.drawLine(QPointF(x(incident[0]), plot.top()), QPointF(x(incident[0]), plot.bottom()))
    p.setFont(font(7))
    for t in _time_ticks(start_ns, end_ns):
        p.setPen(MUTED)
        p.drawText(QRectF(x(t) - 30 * PT, plot.bottom() + 2 * PT, 60 * PT, 10 * PT),
                   int(Qt.AlignmentFlag.AlignHCenter), _clock(t, span))
    legend = [("below threshold", _heat_color(0.5)), ("at threshold", _heat_color(1.0)),
              ("3x threshold", _heat_color(3.0)), ("not tested", QColor("#ffffff"))]
    lx = plot.left()
    for name, color in legend:
        p.fillRect(QRectF(lx, rect.bottom() - 7 * PT, 8 * PT, 6 * PT), color)
        p.setPen(QPen(RULE, 0.4 * PT))
        p.drawRect(QRectF(lx, rect.bottom() - 7 * PT, 8 * PT, 6 * PT))
        p.setPen(INK)
        p.drawText(QRectF(lx + 10 * PT, rect.bottom() - 9 * PT, 90 * PT, 10 * PT),
                   int(Qt.AlignmentFlag.AlignLeft), name)
        lx += p.fontMetrics().horizontalAdvance(name) + 20 * PT
