"""The main window: endpoint list, per-endpoint live plots, status bar; ``run_window``. Thread: GUI.

Data reaches the window only through ``Bridge.batch_committed``; plots repaint on one ~30 Hz
timer, however fast samples arrive. Long time windows and capture look-ups go through the
history worker, which reads the store on its own thread.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.core.monitor import Monitor
from app.core.store import Store
from app.gui.actions import LIVE_WINDOWS, TIME_WINDOWS, build_actions
from app.gui.attach_dialog import AttachDialog, onnx_uri
from app.gui.bridge import Bridge, CommittedSeries
from app.gui.capture_dialog import CaptureDialog
from app.gui.history import HistoryClient
from app.gui.settings import Settings, demo_db_path
from app.gui.theme import app_icon, apply_app_theme
from probes import Probe, ProbeError, schemes
from widgets.endpoint_list import EndpointListWidget
from widgets.endpoint_panel import EndpointPanel
from widgets.lag_meter import EventLoopLagMeter
from widgets.plots import XLinker
from widgets.status_bar import StatusBarWidget
from widgets.theme import theme_named

log = logging.getLogger(__name__)

FRAME_INTERVAL_MS = 33  # ~30 Hz
HISTORY_REFRESH_MS = 2000
STATUS_INTERVAL_MS = 1000
MAX_PANELS_WITH_OWN_AXIS = 4
COARSE_WINDOW_S = 300.0  # from here on a pixel spans over a second: draw per-second extremes


def user_errors() -> tuple[type[BaseException], ...]:
    from app.core.demo import DemoError
    from app.core.domain import UriError
    from app.core.store import StoreError

    return (ProbeError, StoreError, UriError, DemoError, OSError)


class MainWindow(QMainWindow):
    def __init__(self, db_path: Path, *, title: str = "") -> None:
        super().__init__()
        self.settings = Settings()
        self.theme = theme_named(self.settings.theme())
        apply_app_theme(QApplication.instance(), self.theme)
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        self.resize(1440, 900)
        self.monitor: Monitor | None = None
        self.db_path = db_path
        self._title = title
        self.panels: dict[str, EndpointPanel] = {}
        self.x_link = XLinker()  # every plot shares one time axis
        self.live_paused = False
        self.frames = 0  # repaint ticks that handed new data to a plot
        self._samples_seen = 0
        self._rate_mark = (time.perf_counter(), 0)
        self._capture_requests: set[int] = set()
        self._history_span = (-1, 0)
        self.capture_dialog: CaptureDialog | None = None
        self._closed = False

        self.bridge = Bridge(self)
        self.bridge.batch_committed.connect(self._on_bridge_batch_committed)
        self.history = HistoryClient(self)
        self.history.history_ready.connect(self._on_history_ready)
        self.history.capture_ready.connect(self._on_history_capture_ready)
        self.history.failed.connect(lambda msg: self.statusBar().showMessage(msg, 8000))

        self.endpoint_list = EndpointListWidget(self.theme)
        self.endpoint_list.current_endpoint_changed.connect(self._on_list_current_changed)
        dock = QDockWidget("Endpoints", self)
        dock.setObjectName("endpointsDock")
        dock.setWidget(self.endpoint_list)
        dock.setMinimumWidth(380)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
        self._panel_host = QWidget()
        self._panel_layout = QVBoxLayout(self._panel_host)
        self._panel_layout.setContentsMargins(8, 8, 8, 8)
        self._panel_layout.setSpacing(8)
        self._panel_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self._panel_host)
        self.setCentralWidget(scroll)
        self.status = StatusBarWidget(self.theme)
        self.setStatusBar(self.status)

        self.actions = build_actions(self)
        a = self.actions
        a.view_menu.addAction(dock.toggleViewAction())
        a.open.triggered.connect(self._on_open_triggered)
        a.save_as.triggered.connect(self._on_save_as_triggered)
        a.quit.triggered.connect(self.close)
        a.attach.triggered.connect(self.show_attach_dialog)
        a.detach.triggered.connect(lambda: self._for_current(self.detach))
        a.pause_probe.triggered.connect(lambda on: self._for_current(
            lambda e: self.pause_probe(e, on)))
        a.freeze.toggled.connect(self.set_live_paused)
        a.dark.triggered.connect(lambda: self.set_theme("dark"))
        a.light.triggered.connect(lambda: self.set_theme("light"))
        (a.dark if self.theme.name == "dark" else a.light).setChecked(True)
        a.window_box.setCurrentText(self.settings.time_window())
        a.window_box.currentTextChanged.connect(self.set_time_window)
        a.retint(self.theme)
        self.endpoint_list.addActions([a.detach, a.pause_probe])
        self._fill_recent_menu(self.settings.recent())

        self.lag_meter = EventLoopLagMeter(self)
        self._frame_timer = QTimer(self, interval=FRAME_INTERVAL_MS)
        self._frame_timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._frame_timer.timeout.connect(self._on_frame_timer_timeout)
        self._history_timer = QTimer(self, interval=HISTORY_REFRESH_MS)
        self._history_timer.timeout.connect(self._request_history)
        self._status_timer = QTimer(self, interval=STATUS_INTERVAL_MS)
        self._status_timer.timeout.connect(self._on_status_timer_timeout)
        try:
            self.open_workspace(db_path)
        except BaseException:
            self.history.stop()  # no thread may outlive a window that failed to open
            raise
        if (geometry := self.settings.geometry()) is not None:
            self.restoreGeometry(geometry)
        if (state := self.settings.window_state()) is not None:
            self.restoreState(state)
        self.lag_meter.start()
        self._frame_timer.start()
        self._status_timer.start()
        self.set_time_window(a.window_box.currentText())

    # -- workspace ------------------------------------------------------------------------

    def open_workspace(self, path: Path) -> None:
        """Close the current workspace (stopping its probes) and open another."""
        monitor = Monitor(path)  # raises StoreError before anything is torn down
        self._close_monitor()
        for panel in self.panels.values():
            panel.deleteLater()
        self.panels.clear()
        self.x_link.clear()
        for endpoint in self.endpoint_list.endpoints():
            self.endpoint_list.remove_endpoint(endpoint)
        self.monitor = monitor
        self.db_path = Path(path)
        self.bridge.connect_monitor(monitor)
        self.history.set_path(self.db_path)
        self.setWindowTitle(f"ProbeScope — {self._title or self.db_path.name}")
        store = Store(self.db_path)
        try:
            stored = store.endpoints()
        finally:
            store.close()
        for row in stored:  # what earlier sessions recorded: history, no live probe
            panel = self._panel(row["uri"], row["kind"] or "")
            panel.set_slo(row.get("slo_ms"))
            panel.set_state("stopped")
            self.endpoint_list.set_endpoint(row["uri"], state="stopped", kind=row["kind"] or "",
                                            version=row.get("model_version") or "")
        if not self._title:
            self._fill_recent_menu(self.settings.add_recent(self.db_path))
        if stored and self.actions.window_box.currentText() in LIVE_WINDOWS:
            self.actions.window_box.setCurrentText("all")  # nothing live yet: show the past
        self._request_history()

    def _close_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor.close()  # stops probes, then the recorder's final flush
            self.bridge.disconnect_monitor()
            self.monitor = None

    def _fill_recent_menu(self, paths: list[str]) -> None:
        menu = self.actions.recent_menu
        menu.clear()
        for p in paths:
            menu.addAction(p, lambda p=p: self._open_path(Path(p)))
        menu.setEnabled(bool(paths))

    def _open_path(self, path: Path) -> None:
        try:
            self._title = ""
            self.open_workspace(path)
        except user_errors() as exc:
            QMessageBox.warning(self, "Cannot open workspace", str(exc))

    def _on_open_triggered(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open workspace", str(self.db_path.parent),
                                              "ProbeScope workspaces (*.db);;All files (*)")
        if path:
            self._open_path(Path(path))

    def _on_save_as_triggered(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save workspace as", "",
                                              "ProbeScope workspaces (*.db)")
        if not path:
            return
        store = Store(self.db_path)
        try:
            store.backup_to(path)
            self.statusBar().showMessage(f"saved a copy to {path}", 5000)
        except user_errors() as exc:
            QMessageBox.warning(self, "Cannot save workspace", str(exc))
        finally:
            store.close()

    # -- endpoints ------------------------------------------------------------------------

    def attach(self, uri: str) -> Probe:
        """Attach and start a probe; raises ProbeError (shown by the caller) on a bad URI."""
        assert self.monitor is not None
        probe = self.monitor.attach(uri)
        info = probe.info()
        panel = self._panel(probe.endpoint, info.get("kind", probe.scheme))
        panel.set_slo(getattr(probe, "slo_ms", None))
        self._show_probe(probe)
        self.endpoint_list.select(probe.endpoint)
        return probe

    def detach(self, endpoint: str) -> None:
        if self.monitor is not None and endpoint in self.monitor.probes:
            self.monitor.detach(endpoint)
        self.endpoint_list.set_endpoint(endpoint, state="stopped")
        if endpoint in self.panels:
            self.panels[endpoint].set_state("stopped")

    def pause_probe(self, endpoint: str, paused: bool) -> None:
        probe = self.monitor.probes.get(endpoint) if self.monitor else None
        if probe is not None:
            probe.pause() if paused else probe.resume()
            self._show_probe(probe)

    def _for_current(self, fn) -> None:
        endpoint = self.endpoint_list.current_endpoint()
        if endpoint:
            fn(endpoint)

    def _show_probe(self, probe: Probe) -> None:
        info = probe.info()
        state = str(probe.state)
        self.endpoint_list.set_endpoint(
            probe.endpoint, state=state, kind=info.get("kind", probe.scheme),
            version=info.get("model_version", ""), provider=info.get("provider", ""),
            requests=probe.requests, detail=probe.last_error or "")
        panel = self.panels.get(probe.endpoint)
        if panel is not None:
            panel.set_state(state, probe.last_error or "")

    def _panel(self, endpoint: str, kind: str) -> EndpointPanel:
        panel = self.panels.get(endpoint)
        if panel is None:
            panel = self.panels[endpoint] = EndpointPanel(endpoint, kind, self.theme)
            panel.point_clicked.connect(self._on_panel_point_clicked)
            panel.set_mode("live" if self._window_key() in LIVE_WINDOWS else "history")
            self._panel_layout.insertWidget(self._panel_layout.count() - 1, panel)
            for plot in panel.plots():
                self.x_link.add(plot)
            self._place_time_axes()
        return panel

    def _place_time_axes(self) -> None:
        # Time labels are costly to redraw on every frame; with many panels stacked on one
        # linked time axis, only the bottom panel shows it.
        panels = list(self.panels.values())
        for i, panel in enumerate(panels):
            shown = len(panels) <= MAX_PANELS_WITH_OWN_AXIS or i == len(panels) - 1
            for plot in panel.plots():
                plot.show_time_axis(shown)

    def show_attach_dialog(self) -> AttachDialog:
        dialog = AttachDialog(schemes(), self.attach, user_errors(), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    def _on_list_current_changed(self, endpoint: str) -> None:
        probe = self.monitor.probes.get(endpoint) if self.monitor and endpoint else None
        self.actions.detach.setEnabled(probe is not None)
        self.actions.pause_probe.setEnabled(probe is not None)
        self.actions.pause_probe.setChecked(bool(probe and probe.paused))
        panel = self.panels.get(endpoint)
        if panel is not None:
            self.centralWidget().ensureWidgetVisible(panel)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if any(u.toLocalFile().lower().endswith(".onnx") for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        for url in event.mimeData().urls():
            path = url.toLocalFile()
            if path.lower().endswith(".onnx"):
                try:
                    self.attach(onnx_uri(path))
                except user_errors() as exc:
                    box = QMessageBox(QMessageBox.Icon.Warning, "Cannot attach", str(exc),
                                      QMessageBox.StandardButton.Ok, self)
                    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
                    box.open()
        event.acceptProposedAction()

    # -- data in, frames out --------------------------------------------------------------

    def _on_bridge_batch_committed(self, committed: CommittedSeries) -> None:
        self._samples_seen += committed.sample_count
        for endpoint, metrics in committed.series.items():
            panel = self.panels.get(endpoint) or self._panel(endpoint, endpoint.partition(":")[0])
            panel.ingest(metrics, committed.failures.get(endpoint))
        for endpoint, failures in committed.failures.items():
            if endpoint not in committed.series and endpoint in self.panels:
                self.panels[endpoint].ingest({}, failures)

    def _on_frame_timer_timeout(self) -> None:
        if self.live_paused or self._window_key() not in LIVE_WINDOWS or not self.panels:
            return
        now = time.time()
        span = TIME_WINDOWS[self._window_key()] or 60.0
        start = now - span
        coarse = span >= COARSE_WINDOW_S
        drew = False
        for panel in self.panels.values():
            if not panel.visibleRegion().isEmpty():
                drew = panel.redraw(start, coarse=coarse) or drew
        self.x_link.set_views(start, now)
        self.frames += drew

    def _window_key(self) -> str:
        return self.actions.window_box.currentText()

    def set_time_window(self, key: str) -> None:
        if key not in TIME_WINDOWS:
            return
        if self.actions.window_box.currentText() != key:
            self.actions.window_box.setCurrentText(key)  # comes back here through the signal
            return
        self.settings.set_time_window(key)
        live = key in LIVE_WINDOWS
        for panel in self.panels.values():
            panel.set_mode("live" if live else "history")
        if live:
            self._history_timer.stop()
        else:
            self._request_history()
            self._history_timer.start()

    def _request_history(self) -> None:
        key = self._window_key()
        if key in LIVE_WINDOWS or self.live_paused:
            return
        end_ns = time.time_ns()
        span = TIME_WINDOWS[key]
        start_ns = -1 if span is None else end_ns - int(span * 1e9)
        self._history_span = (start_ns, end_ns)
        for endpoint in self.panels:
            self.history.request_history(endpoint, start_ns, end_ns)

    def _on_history_ready(self, _rid: int, endpoint: str, result: dict) -> None:
        panel = self.panels.get(endpoint)
        if panel is None or self._window_key() in LIVE_WINDOWS:
            return
        panel.set_history(result)
        for plot in panel.plots():
            plot.fit_y()
        start_ns, end_ns = self._history_span
        if start_ns < 0:
            starts = [h.ts_ns[0] for h in result.values() if len(h)]
            start_ns = min(starts) if starts else end_ns - 60 * 10**9
        self.x_link.set_range(start_ns / 1e9, end_ns / 1e9, padding=0.01)
        self.frames += 1

    def set_live_paused(self, paused: bool) -> None:
        self.live_paused = paused
        if paused:
            self.x_link.fit_y()  # panning a frozen view refits y to what is in sight
        self.status.set_paused(paused)
        if self.actions.freeze.isChecked() != paused:
            self.actions.freeze.setChecked(paused)

    def _on_panel_point_clicked(self, endpoint: str, t_s: float, failed: bool) -> None:
        self._capture_requests.add(self.history.request_capture(endpoint, int(t_s * 1e9),
                                                                failed))

    def _on_history_capture_ready(self, rid: int, stored) -> None:
        if rid not in self._capture_requests:
            return
        self._capture_requests.discard(rid)
        if stored is None:
            self.statusBar().showMessage(
                "no capture kept for that request (successes are sampled; failures always "
                "kept)", 6000)
            return
        self.capture_dialog = CaptureDialog(stored, self)
        self.capture_dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.capture_dialog.open()

    def _on_status_timer_timeout(self) -> None:
        now = time.perf_counter()
        t0, n0 = self._rate_mark
        rate = (self._samples_seen - n0) / max(1e-6, now - t0)
        self._rate_mark = (now, self._samples_seen)
        dropped = self.monitor.stats().dropped if self.monitor else 0
        size = sum(p.stat().st_size for s in ("", "-wal", "-shm")
                   if (p := Path(f"{self.db_path}{s}")).exists())
        self.status.show_figures(rate, dropped, size, self.lag_meter.worst_ms())
        if self.monitor is not None:
            for probe in self.monitor.probes.values():
                self._show_probe(probe)

    # -- look and lifetime ----------------------------------------------------------------

    def set_theme(self, name: str) -> None:
        self.theme = theme_named(name)
        self.settings.set_theme(self.theme.name)
        apply_app_theme(QApplication.instance(), self.theme)
        for widget in (self.endpoint_list, self.status, *self.panels.values()):
            widget.apply_theme(self.theme)
        self.actions.retint(self.theme)
        (self.actions.dark if name == "dark" else self.actions.light).setChecked(True)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop timers, probes, recorder and history worker; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.settings.save_layout(self.saveGeometry(), self.saveState())
        for timer in (self._frame_timer, self._history_timer, self._status_timer):
            timer.stop()
        self.lag_meter.stop()
        self._close_monitor()
        self.history.stop()


def start_demo(window: MainWindow) -> None:
    from app.core.demo import demo_endpoints

    for uri in demo_endpoints():
        try:
            window.attach(uri)
        except user_errors() as exc:
            log.error("demo endpoint %s: %s", uri, exc)
            window.statusBar().showMessage(f"demo: {exc}", 10000)


def _fresh_demo_path() -> Path:
    # The demo starts from an empty workspace each time, so its file never grows without bound.
    path = demo_db_path()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def run_window(db_path: Path | None, *, screenshot: Path | None = None,
               screenshot_after_s: float = 15.0, theme: str | None = None) -> int:
    """Open the window on a workspace, or on the demo when ``db_path`` is None."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("ProbeScope")
    app.setApplicationName("ProbeScope")
    window = MainWindow(db_path or _fresh_demo_path(), title="demo" if db_path is None else "")
    if theme:
        window.set_theme(theme)
    window.show()
    if db_path is None:
        QTimer.singleShot(0, lambda: start_demo(window))
    if screenshot is not None:  # for docs: grab the real window after it has run a while
        def grab() -> None:
            window.grab().save(str(screenshot))
            window.close()
            app.quit()

        QTimer.singleShot(int(screenshot_after_s * 1000), grab)
    code = app.exec()
    window.shutdown()
    return code
