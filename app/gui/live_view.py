"""The stack of endpoint panels and the clock that draws them. Thread: GUI only.

Live windows (1 min, 10 min) hand ring-buffer views to the plots on one ~30 Hz timer, however
fast data arrives; long windows (1 h, all) ask the history worker for downsampled series every
two seconds. All plots share one time axis.
"""

from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QScrollArea, QVBoxLayout, QWidget

from app.gui.actions import LIVE_WINDOWS, TIME_WINDOWS
from app.gui.bridge import CommittedSeries
from app.gui.history import HistoryClient
from widgets.endpoint_panel import (
    DEFAULT_PANEL_HEIGHT_PX,
    PANEL_HEIGHTS_PX,
    EndpointPanel,
    short_names,
)
from widgets.incident_marks import IncidentSpan
from widgets.overlay_panel import OverlayPanel
from widgets.plots import XLinker
from widgets.series import PERCENTILE_WINDOW_S, PERCENTILE_WINDOWS_S
from widgets.theme import Theme

FRAME_INTERVAL_MS = 33  # ~30 Hz
HISTORY_REFRESH_MS = 2000
MAX_PANELS_WITH_OWN_AXIS = 4
COARSE_WINDOW_S = 300.0  # from here on a pixel spans over a second: draw per-second extremes
SCROLL_AGAIN_MS = 50  # long enough for the scroll area to have laid out a new panel


class LiveView(QScrollArea):
    point_clicked = Signal(str, float, bool)  # endpoint, epoch seconds, failed?
    overlay_closed = Signal()  # its own close button or Esc

    def __init__(self, theme: Theme, history: HistoryClient, parent=None) -> None:
        super().__init__(parent)
        self.theme = theme
        self.history = history
        self.panels: dict[str, EndpointPanel] = {}
        self.incidents: dict[str, list[IncidentSpan]] = {}  # endpoint -> spans to shade
        self.x_link = XLinker()  # every plot shares one time axis
        self.window_key = "1 min"
        self.panel_height_px = DEFAULT_PANEL_HEIGHT_PX
        self.overlay: OverlayPanel | None = None  # View > Overlay plot, made when first shown
        self.percentile_window_s = PERCENTILE_WINDOW_S
        self.paused = False
        self.frames = 0  # repaint ticks that handed new data to a plot
        self.samples_seen = 0
        # Whole-pixel steps skip frames that would look identical; the fps benchmark turns
        # this off to measure the cost of redrawing everything on every frame.
        self.snap_to_pixels = True
        self._history_span = (-1, 0)
        self._history_range: tuple[float, float] | None = None  # to apply, once per round
        self._history_applied: tuple[float, float] | None = None
        self._history_seen: tuple[int, int] | None = None
        host = QWidget()
        self._layout = QVBoxLayout(host)
        self._layout.setContentsMargins(8, 8, 8, 8)
        self._layout.setSpacing(8)
        self._layout.addStretch(1)
        self.setWidgetResizable(True)
        self.setWidget(host)
        self.frame_timer = QTimer(self, interval=FRAME_INTERVAL_MS)
        self.frame_timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.frame_timer.timeout.connect(self._on_frame_timer_timeout)
        self._history_timer = QTimer(self, interval=HISTORY_REFRESH_MS)
        self._history_timer.timeout.connect(self._refresh_history)
        self._history_asked: set[str] = set()  # endpoints asked for since the last refresh
        self.verticalScrollBar().valueChanged.connect(self._on_scrolled)
        history.history_ready.connect(self._on_history_ready)

    # -- panels ---------------------------------------------------------------------------

    def prefill(self, endpoint: str, series: dict[str, tuple[np.ndarray, np.ndarray]],
                failures: tuple[np.ndarray, np.ndarray]) -> bool:
        """What the workspace recorded of an endpoint in the last minutes, into its live
        plots, so a reopened workspace's live windows go on from its recent past. Only before
        any live data of it: the plots take samples in time order. True if taken."""
        panel = self.panels.get(endpoint)
        if panel is None or panel.series.newest_s() is not None or not series:
            return False
        panel.ingest(series, failures if len(failures[0]) else None)
        self._link_new_plots(panel)
        return True

    def panel(self, endpoint: str, kind: str) -> EndpointPanel:
        """The endpoint's panel, created on first use."""
        panel = self.panels.get(endpoint)
        if panel is None:
            panel = self.panels[endpoint] = EndpointPanel(endpoint, kind, self.theme)
            panel.point_clicked.connect(self.point_clicked)
            if self.panel_height_px != DEFAULT_PANEL_HEIGHT_PX:
                panel.set_height(self.panel_height_px)
            panel.series.set_percentile_window(self.percentile_window_s)
            panel.set_mode("live" if self.window_key in LIVE_WINDOWS else "history")
            panel.set_incidents(self.incidents.get(endpoint, []))
            self._layout.insertWidget(self._layout.count() - 1, panel)
            for plot in panel.plots():
                self.x_link.add(plot)
            self._place_time_axes()
            for e, name in short_names(list(self.panels)).items():  # may tell two apart now
                self.panels[e].title.setText(name)
            self._offer_to_overlay()
        return panel

    # -- the overlay ----------------------------------------------------------------------

    def show_overlay(self, shown: bool) -> OverlayPanel | None:
        """Show (made on first use) or hide the overlay plot above the panels."""
        overlay = self.overlay
        if not shown:
            if overlay is not None and overlay.isVisible():
                overlay.hide()
                self.x_link.remove(overlay.plot)
            return overlay
        if overlay is None:
            overlay = self.overlay = OverlayPanel(self.theme)
            overlay.closed.connect(self.overlay_closed)
            self._layout.insertWidget(0, overlay)
        if overlay.plot not in self.x_link.plots:
            self.x_link.add(overlay.plot)
        overlay.set_history(self.window_key not in LIVE_WINDOWS)
        self._offer_to_overlay()
        overlay.show()
        self._redraw_overlay()
        self.ensureWidgetVisible(overlay)
        overlay.setFocus()  # Esc closes it from here, as its tooltip says
        return overlay

    def _offer_to_overlay(self) -> None:
        """The endpoints the overlay can draw, in panel order: those with request figures
        (``system:`` has none of them)."""
        if self.overlay is not None:
            names = short_names(list(self.panels))
            self.overlay.set_endpoints({e: names[e] for e, panel in self.panels.items()
                                        if panel.latency_plot is not None})

    def _redraw_overlay(self) -> bool:
        overlay = self.overlay
        if overlay is None or not overlay.isVisible():
            return False
        return overlay.redraw(self.panels)

    def set_panel_height(self, px: int) -> int:
        """Every panel's height, now and for panels made later: the one of
        ``PANEL_HEIGHTS_PX`` nearest ``px`` (a hand-edited setting cannot make them 5 px
        tall). Returns the height taken."""
        px = min(PANEL_HEIGHTS_PX, key=lambda h: abs(h - px))
        self.panel_height_px = px
        for panel in self.panels.values():
            panel.set_height(px)
        return px

    def step_panel_height(self, steps: int) -> int:
        """Taller (+1) or shorter (-1) by one of ``PANEL_HEIGHTS_PX``; 0: the default.
        Returns the height now."""
        if steps == 0:
            return self.set_panel_height(DEFAULT_PANEL_HEIGHT_PX)
        heights = PANEL_HEIGHTS_PX
        here = heights.index(self.panel_height_px)
        return self.set_panel_height(heights[max(0, min(len(heights) - 1, here + steps))])

    def set_percentile_window(self, window_s: float) -> float:
        """Every endpoint's live p50/p95/p99 over ``window_s`` seconds (the nearest of
        ``PERCENTILE_WINDOWS_S``), now and for panels made later; returns it."""
        window_s = min(PERCENTILE_WINDOWS_S, key=lambda w: abs(w - window_s))
        self.percentile_window_s = window_s
        for panel in self.panels.values():
            panel.series.set_percentile_window(window_s)
            panel.update_stats()
        return window_s

    def clear(self) -> None:
        for panel in self.panels.values():
            panel.deleteLater()
        self.panels.clear()
        self.x_link.clear()
        self._history_seen = None
        if self.overlay is not None:
            self._offer_to_overlay()
            if self.overlay.isVisible():
                self.x_link.add(self.overlay.plot)

    def _place_time_axes(self) -> None:
        # Time labels are costly to redraw on every frame; with many panels stacked on one
        # linked time axis, only the bottom panel shows it.
        panels = list(self.panels.values())
        for i, panel in enumerate(panels):
            shown = len(panels) <= MAX_PANELS_WITH_OWN_AXIS or i == len(panels) - 1
            for plot in panel.plots():
                plot.show_time_axis(shown)

    def add_drift_share(self, endpoint: str, t_s: float, share: float) -> None:
        """Plot one drift evaluation on the endpoint's panel (made on first use)."""
        panel = self.panels.get(endpoint)
        if panel is None:
            return
        panel.add_drift_share(t_s, share)
        self._link_new_plots(panel)

    def _link_new_plots(self, panel: EndpointPanel) -> None:
        """Put plots a panel made since (drift, a server's GPU load...) on the shared axis."""
        new = [p for p in panel.plots() if p not in self.x_link.plots]
        for plot in new:
            self.x_link.add(plot)
        if new:
            self._place_time_axes()

    def set_incidents(self, by_endpoint: dict[str, list[IncidentSpan]]) -> None:
        """Shade each endpoint's incidents on its plots (endpoints not named: none)."""
        self.incidents = dict(by_endpoint)
        for endpoint, panel in self.panels.items():
            panel.set_incidents(self.incidents.get(endpoint, []))

    def show_endpoint(self, endpoint: str) -> None:
        panel = self.panels.get(endpoint)
        if panel is not None:
            self.ensureWidgetVisible(panel)
            # A panel made just now has no place yet (the scroll area lays its column out on
            # a posted event): scroll again once it has one.
            QTimer.singleShot(SCROLL_AGAIN_MS, lambda: endpoint in self.panels
                              and self.ensureWidgetVisible(self.panels[endpoint]))

    # -- data in, frames out --------------------------------------------------------------

    def ingest(self, committed: CommittedSeries) -> None:
        self.samples_seen += committed.sample_count
        for endpoint, metrics in committed.series.items():
            panel = self.panels.get(endpoint) or self.panel(endpoint, endpoint.partition(":")[0])
            panel.ingest(metrics, committed.failures.get(endpoint))
            self._link_new_plots(panel)
        for endpoint, failures in committed.failures.items():
            if endpoint not in committed.series and endpoint in self.panels:
                self.panels[endpoint].ingest({}, failures)

    def _on_frame_timer_timeout(self) -> None:
        if self.paused or self.window_key not in LIVE_WINDOWS or not self.panels:
            return
        now, start, drew = self._draw_live()
        self.x_link.set_views(start, now, snap=self.snap_to_pixels)
        self.frames += drew

    def _draw_live(self, *, every_panel: bool = False) -> tuple[float, float, bool]:
        """The live window's frame for the panels in sight and the overlay's (or for
        ``every_panel``), then the overlay: ``(now, window start, whether any changed)``."""
        now = time.time()
        span = TIME_WINDOWS[self.window_key] or 60.0
        start = now - span
        coarse = span >= COARSE_WINDOW_S
        drew = False
        overlaid = set(self.overlay.chosen()) if self.overlay is not None \
            and self.overlay.isVisible() else set()
        for endpoint, panel in self.panels.items():
            # An outage's seconds close by the clock, whether the panel is in sight or not:
            # no request arrives to close them (widgets/series.py).
            panel.series.settle(now)
            # Out of sight, a panel is drawn only for the overlay, which draws what it does.
            if every_panel or endpoint in overlaid or not panel.visibleRegion().isEmpty():
                drew = panel.redraw(start, coarse=coarse) or drew
        drew = self._redraw_overlay() or drew
        return now, start, drew

    def set_time_window(self, key: str) -> None:
        self.window_key = key
        self._history_applied = None  # a history view starts on its whole range
        # "all": the span every endpoint's answers cover, together; it only grows while the
        # window stays, so the refreshes of the panels in sight keep the others' part of it.
        self._history_seen = None
        live = key in LIVE_WINDOWS
        for panel in self.panels.values():
            panel.set_mode("live" if live else "history")
        if self.overlay is not None:
            self.overlay.set_history(not live)
        if live:
            self._history_timer.stop()
        else:
            self.request_history()
            self._history_timer.start()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if paused:
            if self.window_key in LIVE_WINDOWS:
                # A frozen view is one moment: a panel scrolled to while frozen must not show
                # where it was last drawn.
                self._draw_live(every_panel=True)
            self.x_link.fit_y()  # panning a frozen view refits y to what is in sight

    def show_range(self, start_s: float, end_s: float) -> None:
        """Freeze the plots on a past stretch of time (an incident's window, say)."""
        self.set_paused(True)
        self._history_applied = None
        self.x_link.set_range(start_s, end_s)

    def request_history(self, *, every_panel: bool = True) -> None:
        """Ask for each panel's downsampled history over the time window. The periodic
        refresh (``every_panel`` False) asks only for the panels in sight or in the overlay:
        redrawing all ten endpoints' history every 2 s, most of them out of sight, stalled
        the window; one scrolled into view is asked for then (``_on_scrolled``)."""
        if self.window_key in LIVE_WINDOWS or self.paused:
            return
        end_ns = time.time_ns()
        span = TIME_WINDOWS[self.window_key]
        start_ns = -1 if span is None else end_ns - int(span * 1e9)
        self._history_span = (start_ns, end_ns)
        self._history_asked = set()
        for endpoint, panel in self.panels.items():
            if every_panel or self._wants_drawing(endpoint, panel):
                self._history_asked.add(endpoint)
                self.history.request_history(endpoint, start_ns, end_ns)

    def _refresh_history(self) -> None:
        self.request_history(every_panel=False)

    def _wants_drawing(self, endpoint: str, panel: EndpointPanel) -> bool:
        return not panel.visibleRegion().isEmpty() or (
            self.overlay is not None and self.overlay.isVisible()
            and endpoint in self.overlay.chosen())

    def _on_scrolled(self, _value: int) -> None:
        """Panels scrolled into a history view since its last refresh: asked for now, over
        the refresh's span (its x range is the one already shown)."""
        if self.window_key in LIVE_WINDOWS or self.paused:
            return
        start_ns, end_ns = self._history_span
        for endpoint, panel in self.panels.items():
            if endpoint not in self._history_asked and self._wants_drawing(endpoint, panel):
                self._history_asked.add(endpoint)
                self.history.request_history(endpoint, start_ns, end_ns)

    def _on_history_ready(self, _rid: int, endpoint: str, result: dict) -> None:
        panel = self.panels.get(endpoint)
        if panel is None or self.window_key in LIVE_WINDOWS:
            return
        panel.set_history(result)
        self._link_new_plots(panel)
        for plot in panel.plots():
            plot.fit_y()
        if self._redraw_overlay():
            self.overlay.plot.fit_y()
        start_ns, end_ns = self._history_span
        if start_ns < 0:  # all of it: from the first sample of any endpoint to the last
            drawn = [h for h in result.values() if len(h)]
            if drawn:
                first = min(int(h.ts_ns[0]) for h in drawn)
                last = max(int(h.ts_ns[-1]) + int(getattr(h, "width_ns", 0)) for h in drawn)
                seen = self._history_seen
                self._history_seen = seen = (first, last) if seen is None else (
                    min(seen[0], first), max(seen[1], last))
            else:
                seen = self._history_seen or (end_ns - 60 * 10**9, end_ns)
            start_ns, end_ns = seen
        # Once for a round's answers (ten endpoints answer together), and only if it moved:
        # each setting refits every linked plot, so ten of them cost endpoints x plots.
        if self._history_range is None:
            QTimer.singleShot(0, self._apply_history_range)
        self._history_range = (start_ns / 1e9, end_ns / 1e9)
        self.frames += 1

    def _apply_history_range(self) -> None:
        wanted, self._history_range = self._history_range, None
        if wanted is None or self.window_key in LIVE_WINDOWS:
            return
        if wanted != self._history_applied:
            self._history_applied = wanted
            self.x_link.set_range(*wanted, padding=0.01)

    def apply_theme(self, theme: Theme) -> None:
        self.theme = theme
        for panel in self.panels.values():
            panel.apply_theme(theme)
        if self.overlay is not None:
            self.overlay.apply_theme(theme)

    def stop(self) -> None:
        self.frame_timer.stop()
        self._history_timer.stop()
