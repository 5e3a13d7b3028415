"""One plot with one figure of several endpoints, a colour each: two model versions' p95 side
by side, or a canary's failures against production's. Thread: GUI.

It draws what the endpoints' own panels draw (live: their rolling figures; history: their
downsampled ones), so it costs no reading of its own and always agrees with them; the owner
links its time axis with theirs and calls ``redraw`` on every frame and history refresh.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
)

from widgets.endpoint_panel import EndpointPanel
from widgets.plots import SeriesPlotWidget
from widgets.theme import Theme

# What can be overlaid: the panel's plot and curve it comes from, the plot's title and unit.
FIGURES: dict[str, tuple[str, str, str, str]] = {
    "p50 latency": ("latency_plot", "p50", "p50 latency", "ms"),
    "p95 latency": ("latency_plot", "p95", "p95 latency", "ms"),
    "p99 latency": ("latency_plot", "p99", "p99 latency", "ms"),
    "requests/s": ("rate_plot", "throughput", "Requests", "/s"),
    "failed/s": ("rate_plot", "errors", "Failed requests", "/s"),
}
DEFAULT_FIGURE = "p95 latency"
FIRST_CHOSEN = 2  # endpoints ticked when the overlay first opens
OVERLAY_HEIGHT_PX = 230
# Long windows draw each endpoint's downsampled history: a mean a bucket, no percentiles.
HISTORY_NOTE = "1 h and all show each endpoint's mean latency: percentiles are live only"


class OverlayPanel(QFrame):
    """The overlay: a figure box, an Endpoints menu of checkable endpoints, a close button."""

    closed = Signal()

    def __init__(self, theme: Theme, parent=None) -> None:
        super().__init__(parent)
        self.theme = theme
        self.setObjectName("endpointPanel")  # styled as the endpoint panels are
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # takes focus when shown: Esc closes
        self._names: dict[str, str] = {}  # endpoint -> its short name, in panel order
        self._chosen: list[str] = []
        self._drawn: dict[str, tuple[int, int]] = {}  # curve -> ids of the arrays it drew
        self._history = False
        outer = QVBoxLayout(self)
        outer.setContentsMargins(8, 6, 8, 6)
        outer.setSpacing(4)
        header = QHBoxLayout()
        title = QLabel("Overlay")
        title.setObjectName("panelTitle")
        self.figure_box = QComboBox()
        self.figure_box.addItems(list(FIGURES))
        self.figure_box.setCurrentText(DEFAULT_FIGURE)
        self.figure_box.setToolTip("The figure drawn for each endpoint")
        self.figure_box.currentTextChanged.connect(self._on_figure_changed)
        self.endpoints_button = QToolButton()
        self.endpoints_button.setText("Endpoints")
        self.endpoints_button.setToolTip("Which endpoints to draw, a colour each")
        self.endpoints_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.endpoints_menu = QMenu(self.endpoints_button)
        self.endpoints_button.setMenu(self.endpoints_menu)
        self.note = QLabel("")
        self.note.setObjectName("panelStats")
        self.note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        close = QToolButton()
        close.setText("✕")
        close.setToolTip("Close the overlay (View > Overlay plot)")
        close.clicked.connect(self.closed)
        header.addWidget(title)
        header.addWidget(self.figure_box)
        header.addWidget(self.endpoints_button)
        header.addWidget(self.note, 1)
        header.addWidget(close)
        outer.addLayout(header)
        self.plot = SeriesPlotWidget("Overlay", "ms", theme)
        self.plot.export_stem = "overlay"
        outer.addWidget(self.plot)
        self.setMinimumHeight(OVERLAY_HEIGHT_PX)
        self._retitle()

    # -- what is drawn --------------------------------------------------------------------

    @property
    def figure(self) -> str:
        return self.figure_box.currentText()

    def chosen(self) -> list[str]:
        return list(self._chosen)

    def set_endpoints(self, names: Mapping[str, str]) -> None:
        """The endpoints there are (endpoint -> short name, in panel order). Ticked ones that
        are gone leave; the first two are ticked while none is."""
        self._names = dict(names)
        chosen = [e for e in self._chosen if e in self._names]
        if not chosen:
            chosen = list(self._names)[:FIRST_CHOSEN]
        self._set_chosen(chosen)

    def set_chosen(self, endpoints: list[str]) -> None:
        self._set_chosen([e for e in endpoints if e in self._names])

    def _set_chosen(self, chosen: list[str], *, refill: bool = True) -> None:
        for endpoint in [e for e in self._chosen if e not in chosen]:
            self.plot.remove_curve(endpoint)
            self._drawn.pop(endpoint, None)
        self._chosen = chosen
        palette = self.theme.series
        for i, endpoint in enumerate(chosen):
            color = palette[i % len(palette)]
            if endpoint in self.plot.curves:
                self.plot.set_curve_color(endpoint, color)
            else:
                self.plot.add_curve(endpoint, self._names[endpoint], color, width=1.6)
        if refill:  # not from one of the menu's own actions: clearing it would delete it
            self._fill_menu()

    def _fill_menu(self) -> None:
        self.endpoints_menu.clear()
        for endpoint, name in self._names.items():
            action = self.endpoints_menu.addAction(name)
            action.setToolTip(endpoint)
            action.setCheckable(True)
            action.setChecked(endpoint in self._chosen)
            action.toggled.connect(lambda on, e=endpoint: self._on_endpoint_toggled(e, on))
        if not self._names:
            self.endpoints_menu.addAction("no endpoint attached").setEnabled(False)

    def _on_endpoint_toggled(self, endpoint: str, on: bool) -> None:
        self._set_chosen([e for e in self._names if (e == endpoint and on)
                          or (e != endpoint and e in self._chosen)], refill=False)

    def _on_figure_changed(self, _figure: str) -> None:
        self._drawn.clear()  # every curve takes the new figure at the next redraw
        self._retitle()

    def set_history(self, history: bool) -> None:
        """Long windows draw history, where a panel's latency curve is its mean."""
        self._history = history
        self._drawn.clear()
        self._retitle()

    def _retitle(self) -> None:
        _, key, title, unit = FIGURES[self.figure]
        latency = key in ("p50", "p95", "p99")
        self.plot.title = "mean latency" if self._history and latency else title
        self.plot.unit = unit
        self.plot.apply_theme(self.theme)
        self.note.setText(HISTORY_NOTE if self._history and latency else "")

    def redraw(self, panels: Mapping[str, EndpointPanel]) -> bool:
        """Each ticked endpoint's figure as its panel draws it now; False if none changed."""
        attr, key, _, _ = FIGURES[self.figure]
        if self._history and key in ("p95", "p99"):
            key = "p50"  # the history views' mean latency
        changed = False
        for endpoint in self._chosen:
            panel = panels.get(endpoint)
            source = getattr(panel, attr, None) if panel is not None else None
            data = source.curve_data(key) if source is not None else None
            t, v = data if data is not None else (np.empty(0), np.empty(0))
            mark = (id(t), id(v))
            if self._drawn.get(endpoint) == mark:
                continue
            self._drawn[endpoint] = mark
            self.plot.set_curve(endpoint, t, v)
            changed = True
        return changed

    def apply_theme(self, theme: Theme) -> None:
        self.theme = theme
        self.plot.apply_theme(theme)
        self._set_chosen(self._chosen)
        self._drawn.clear()

    def keyPressEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_Escape:
            self.closed.emit()
            return
        super().keyPressEvent(event)
