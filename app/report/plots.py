"""Vector plots for the report, painted with QPainter paths (lines stay lines in the PDF).
Thread: the report's painting thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPainterPath, QPen, QPolygonF

from app.report.data import HeatmapFigure, SeriesFigure
from app.report.layout import INK, MUTED, PT, RULE, font

PALETTE = [QColor("#1f5fa8"), QColor("#c0392b"), QColor("#2e8b57"), QColor("#8e44ad")]
SLO_COLOR = QColor("#d35400")
INCIDENT_FILL = QColor(192, 57, 43, 28)
INCIDENT_LINE = QColor("#c0392b")
# Where the probe said "down": hatched, so it reads through the incident's tint over it.
DOWN_BRUSH = QBrush(QColor(60, 60, 60, 110), Qt.BrushStyle.BDiagPattern)


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


def _time_labels(p: QPainter, x_of: Callable[[float], float], plot: QRectF, start_ns: int,
                 end_ns: int) -> None:
    """The time axis's labels under ``plot``: the zone ("UTC") right-aligned just left of the
    plot, then a label under each tick. "UTC" shares the row with the labels, so a tick close
    to the left edge (a window that starts just before a round time) would print its label
    over it: such a label is left out; its grid line still shows where the time falls."""
    p.setFont(font(7))
    p.setPen(MUTED)
    metrics = p.fontMetrics()
    row_y = plot.bottom() + 2 * PT
    zone_right = plot.left() - 4 * PT
    p.drawText(QRectF(zone_right - 36 * PT, row_y, 36 * PT, 10 * PT),
               int(Qt.AlignmentFlag.AlignRight), "UTC")
    for t in _time_ticks(start_ns, end_ns):
        x, label = x_of(t), _clock(t, end_ns - start_ns)
        if x - metrics.horizontalAdvance(label) / 2 < zone_right + 3 * PT:
            continue
        p.drawText(QRectF(x - 30 * PT, row_y, 60 * PT, 10 * PT),
                   int(Qt.AlignmentFlag.AlignHCenter), label)


class Frame:
    """Maps data to the plot rectangle; draws title, axes, grid and time labels."""

    def __init__(self, p: QPainter, rect: QRectF, title: str, start_ns: int, end_ns: int,
                 y_lo: float, y_hi: float, y_label: str,
                 incident: tuple[int, int | None] | None,
                 down: tuple[tuple[int, int], ...] = ()) -> None:
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
            # Inside the frame, as the down spans are: a resolve after the plotted window's
            # end once shaded the page margin out to the paper's edge.
            x0 = max(self.x(incident[0]), self.plot.left())
            x1 = self.plot.right() if incident[1] is None else \
                min(self.x(incident[1]), self.plot.right())
            if x1 >= x0 and x0 < self.plot.right():
                p.fillRect(QRectF(x0, self.plot.top(), max(0.5 * PT, x1 - x0),
                                  self.plot.height()), INCIDENT_FILL)
        for a, b in down:
            x0, x1 = max(self.x(a), self.plot.left()), min(self.x(b), self.plot.right())
            p.fillRect(QRectF(x0, self.plot.top(), max(0.5 * PT, x1 - x0), self.plot.height()),
                       DOWN_BRUSH)
        for t in ticks:
            y = self.y(t)
            p.setPen(QPen(RULE, 0.4 * PT))
            p.drawLine(QPointF(self.plot.left(), y), QPointF(self.plot.right(), y))
            p.setPen(MUTED)
            p.drawText(QRectF(rect.left(), y - 5 * PT, 36 * PT, 10 * PT),
                       int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
                       _fmt(t))
        p.setPen(QPen(RULE, 0.4 * PT))
        for t in _time_ticks(self.start, self.end):
            x = self.x(t)
            p.drawLine(QPointF(x, self.plot.top()), QPointF(x, self.plot.bottom()))
        p.setPen(QPen(INK, 0.6 * PT))
        p.drawRect(self.plot)
        p.setPen(MUTED)
        p.drawText(QRectF(rect.left(), rect.top() + 12 * PT, 80 * PT, 10 * PT),
                   int(Qt.AlignmentFlag.AlignLeft), y_label)
        _time_labels(p, self.x, self.plot, self.start, self.end)

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


def _join_limit(idx: np.ndarray, buckets: int) -> int:
    """How many buckets apart two points of a line may be and still be joined.

    The values sit on the grid of buckets the data was binned with, so a series sampled at
    least once a bucket (every request's latency) has a point in each one, and an empty
    bucket or two is jitter, not a gap. A sparse series (memory every few seconds in 1-s
    buckets) leaves empty buckets between its points; its own step, the median between its
    points, is joined across. That median is only the sampling step when there are enough
    points for the gaps to be outliers: with two or three points (two bursts a day apart)
    it is the gap itself. And no join spans more than an eighth of the plot, however sparse
    the series: a long straight line claims data that is not there."""
    steps = np.diff(idx)
    typical = int(np.median(steps)) if len(steps) >= 3 else 1
    return max(3, min(3 * typical, buckets // 8))


def draw_series(p: QPainter, rect: QRectF, fig: SeriesFigure, start_ns: int, end_ns: int,
                incident: tuple[int, int | None] | None) -> None:
    stacks = [v for v in fig.lines.values()] + (list(fig.band) if fig.band else [])
    finite = np.concatenate([v[np.isfinite(v)] for v in stacks] + [np.zeros(0)])
    lo = float(finite.min()) if len(finite) else 0.0
    hi = float(finite.max()) if len(finite) else 1.0
    peak = hi
    lines_top = max([v * 1.1 for v in fig.hlines.values()], default=-math.inf)
    if fig.band is not None and len(finite):
        # One stall (a GC pause, a page fault) would flatten everything else to the floor:
        # scale to the bulk of the envelope and say that the peak is off the chart. An SLO
        # line is kept in view too, and may itself raise the scale over the peak: so the
        # peak is judged against the bulk and the lines together.
        tops = fig.band[1][np.isfinite(fig.band[1])]
        first = next(iter(fig.lines.values()))
        means = first[np.isfinite(first)]
        bulk = max(float(np.quantile(tops, 0.98)) if len(tops) else 0.0,
                   float(means.max()) if len(means) else 0.0)
        if peak > 3 * max([bulk, *fig.hlines.values()]) > 0:
            hi = bulk * 1.5
    hi = max(hi, lines_top)
    if fig.zero_based:
        lo, hi = min(0.0, lo), hi * 1.05 or 1.0
    else:
        pad = max((hi - lo) * 0.1, abs(hi) * 0.01, 1e-9)
        lo, hi = lo - pad, hi + pad
    frame = Frame(p, rect, fig.title, start_ns, end_ns, lo, hi, fig.y_label, incident,
                  fig.down)
    # Decided on the axis as drawn, after every widening: "off scale" only when it is.
    off_scale = peak if peak > frame.y_hi else None
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
        color = PALETTE[k % len(PALETTE)]
        path = QPainterPath()
        idx = np.flatnonzero(np.isfinite(values))
        gap = _join_limit(idx, len(values))
        runs = np.split(idx, np.flatnonzero(np.diff(idx) > gap) + 1) if len(idx) else []
        for run in runs:
            path.moveTo(QPointF(xs[run[0]], frame.y(values[run[0]])))
            for i in run[1:]:
                path.lineTo(QPointF(xs[i], frame.y(values[i])))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.setPen(QPen(color, 0.9 * PT))
        p.drawPath(path)
        # A point with no neighbour to join is a path of one point, which draws nothing:
        # a dot shows that the bucket holds data.
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QBrush(color))
        for run in runs:
            if len(run) == 1:
                p.drawEllipse(QPointF(xs[run[0]], frame.y(values[run[0]])), 1.3 * PT, 1.3 * PT)
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
    if fig.down:
        legend.append(("down (the probe got no answer)", DOWN_BRUSH, "hatch"))
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
        elif dashed == "hatch":
            p.fillRect(QRectF(x, y + 1 * PT, 10 * PT, 8 * PT), color)
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
    # The incident's start and end as lines, not the series figures' shading: a tint over
    # the cells would change the colours that carry the severity. Each is named in the
    # legend; one outside the window is neither drawn nor named.
    markers = []
    if incident is not None:
        markers.append(("incident opened", incident[0], Qt.PenStyle.DashLine))
        if incident[1] is not None:
            markers.append(("incident cleared", incident[1], Qt.PenStyle.DotLine))
    markers = [m for m in markers if start_ns <= m[1] <= end_ns]
    for _, t, style in markers:
        p.setPen(QPen(INCIDENT_LINE, 0.9 * PT, style))
        p.drawLine(QPointF(x(t), plot.top()), QPointF(x(t), plot.bottom()))
    _time_labels(p, x, plot, start_ns, end_ns)
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
    for name, _, style in markers:
        p.setPen(QPen(INCIDENT_LINE, 1.2 * PT, style))
        swatch_y = rect.bottom() - 4 * PT
        p.drawLine(QPointF(lx, swatch_y), QPointF(lx + 10 * PT, swatch_y))
        p.setPen(INK)
        p.drawText(QRectF(lx + 12 * PT, rect.bottom() - 9 * PT, 90 * PT, 10 * PT),
                   int(Qt.AlignmentFlag.AlignLeft), name)
        lx += p.fontMetrics().horizontalAdvance(name) + 22 * PT
