"""Incidents drawn on a time plot: a shaded band from when each opened to when it cleared (or
to now, while open), labelled with its number and rule. Thread: GUI.

The bands sit behind the curves and do not count for auto-range; their items are kept and
moved rather than rebuilt when the incident list is refreshed, so a refresh every few seconds
costs nothing per frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pyqtgraph as pg
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QGraphicsItem

from widgets.theme import Theme

# Of 255: visible behind the curves without hiding them, also where two incidents overlap.
_OPEN_ALPHA, _CLEARED_ALPHA = 26, 14
_LABEL_HEIGHT, _LABEL_STEP = 0.72, 0.16  # up the band, below the legend row; then lower


@dataclass(frozen=True, slots=True)
class IncidentSpan:
    incident_id: int
    start_s: float
    end_s: float  # when it cleared; for an open incident, the time of the refresh ("now")
    rule: str
    open: bool

    @property
    def label(self) -> str:
        return f"#{self.incident_id} {self.rule.replace('_', ' ')}"


class IncidentMarks:
    """The incident bands of one plot."""

    def __init__(self, plot_item: pg.PlotItem, theme: Theme, *, labelled: bool = True) -> None:
        self._plot = plot_item
        self._theme = theme
        self.labelled = labelled
        self._regions: list[tuple[pg.LinearRegionItem, pg.InfLineLabel]] = []
        self._spans: list[IncidentSpan] = []

    @property
    def spans(self) -> list[IncidentSpan]:
        """What is drawn, in the order given."""
        return list(self._spans)

    def set_spans(self, spans: Sequence[IncidentSpan]) -> None:
        before, self._spans = self._spans, list(spans)
        while len(self._regions) < len(self._spans):
            self._regions.append(self._make())
        for i, (region, label) in enumerate(self._regions):
            if i >= len(self._spans):
                region.hide()
                continue
            span = self._spans[i]
            region.setRegion((span.start_s, max(span.end_s, span.start_s)))
            if (i < len(before) and before[i] == replace(span, end_s=before[i].end_s)
                    and region.isVisible() and label.isVisible() == self.labelled):
                continue  # only an open incident's end moved: its label and colours stand
            label.setFormat(span.label)
            label.setVisible(self.labelled)
            # Incidents that open close together would print their labels on one another.
            label.setPosition(_LABEL_HEIGHT - _LABEL_STEP * (i % 3))
            self._paint(region, label, span)
            region.setToolTip(f"incident {span.label}" + (" (open)" if span.open else ""))
            region.show()

    def apply_theme(self, theme: Theme) -> None:
        self._theme = theme
        for (region, label), span in zip(self._regions, self._spans, strict=False):
            self._paint(region, label, span)

    def _make(self) -> tuple[pg.LinearRegionItem, pg.InfLineLabel]:
        region = pg.LinearRegionItem(orientation="vertical", movable=False)
        region.setZValue(-20)  # behind the curves
        for line in region.lines:
            line.setHoverPen(line.pen)  # not movable: no hover highlight
        label = pg.InfLineLabel(region.lines[0], text="", position=_LABEL_HEIGHT,
                                anchors=[(0, 0), (0, 0)])
        label.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self._plot.addItem(region, ignoreBounds=True)
        return region, label

    def _paint(self, region: pg.LinearRegionItem, label: pg.InfLineLabel,
               span: IncidentSpan) -> None:
        color = QColor(self._theme.failure if span.open else self._theme.muted)
        fill = QColor(color)
        fill.setAlpha(_OPEN_ALPHA if span.open else _CLEARED_ALPHA)
        region.setBrush(fill)
        edge = QColor(color)
        edge.setAlpha(150)
        for line in region.lines:
            line.setPen(pg.mkPen(edge, width=1))
            line.setHoverPen(pg.mkPen(edge, width=1))
        region.lines[1].setVisible(not span.open)  # an open incident has no end yet
        label.setColor(color)
