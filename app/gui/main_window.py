"""The main window: endpoint list, per-endpoint live plots, status bar. Thread: GUI.

Data reaches the window only through ``Bridge.batch_committed``; plots repaint on one ~30 Hz
timer, however fast samples arrive. Long time windows and capture look-ups go through the
history worker, which reads the store on its own thread.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSizePolicy,
    QSplitter,
    QWidget,
)

from app.core.domain import EndpointUri, UriError
from app.core.monitor import Monitor
from app.core.recorded import RecordedFacts
from app.core.store import Store
from app.gui.actions import LIVE_WINDOWS, TIME_WINDOWS, build_actions
from app.gui.attach_dialog import AttachDialog, onnx_uri
from app.gui.bridge import Bridge
from app.gui.capture_dialog import CaptureDialog
from app.gui.demo import details_html, recorded_rows, user_errors
from app.gui.history import HistoryClient
from app.gui.live_view import LiveView
from app.gui.reattach import Reattacher
from app.gui.settings import Settings
from app.gui.theme import app_icon, apply_app_theme
from app.gui.workbench import Workbench
from probes import Probe, ProbeError, schemes
from widgets.endpoint_list import EndpointListWidget
from widgets.endpoint_panel import DEFAULT_PANEL_HEIGHT_PX, short_name
from widgets.lag_meter import EventLoopLagMeter
from widgets.series import PERCENTILE_WINDOW_S
from widgets.status_bar import StatusBarWidget
from widgets.theme import theme_named

log = logging.getLogger(__name__)

STATUS_INTERVAL_MS = 1000


class MainWindow(QMainWindow):
    def __init__(self, db_path: Path, *, title: str = "") -> None:
        super().__init__()
        self.settings = Settings()
        self._remember_window = True  # False while the window picks a time span by itself
        self.theme = theme_named(self.settings.theme())
        apply_app_theme(QApplication.instance(), self.theme)
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        self.resize(1440, 900)
        self.monitor: Monitor | None = None
        self.db_path = db_path
        self._title = title
        self._rate_mark = (time.perf_counter(), 0)
        self._capture_requests: set[int] = set()
        self.capture_dialog: CaptureDialog | None = None
        self.demo_server = None  # the demo's in-process model server (app.gui.demo)
        self._closed = False

        self.bridge = Bridge(self)
        self.history = HistoryClient(self)
        self.history.capture_ready.connect(self._on_history_capture_ready)
        self.history.failed.connect(lambda msg: self.statusBar().showMessage(msg, 8000))
        self.history.facts_ready.connect(self._on_history_facts_ready)
        self.history.recent_ready.connect(self._on_history_recent_ready)
        self._recent_requests: set[int] = set()  # this workspace's, still to come
        # Endpoints the workspace recorded, as its rows, and their counters once read.
        self._recorded: dict[str, dict] = {}
        self._recorded_facts: dict[str, RecordedFacts] = {}

        self.actions = build_actions(self)
        self.endpoint_list = EndpointListWidget(self.theme)
        self.endpoint_list.current_endpoint_changed.connect(self._on_list_current_changed)
        # Clicking the row already selected brings its panel back into view too.
        self.endpoint_list.itemClicked.connect(
            lambda item, _col: self.live.show_endpoint(item.data(0, Qt.ItemDataRole.UserRole)))
        self.details = QLabel()
        self.details.setObjectName("hint")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.details.setContentsMargins(8, 8, 8, 8)
        self.details.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        side = QSplitter(Qt.Orientation.Vertical)
        side.addWidget(self.endpoint_list)
        side.addWidget(self.details)
        side.setSizes([300, 200])
        dock = self.add_dock("Endpoints", side, Qt.DockWidgetArea.LeftDockWidgetArea)
        dock.setMinimumWidth(440)
        self.live = LiveView(self.theme, self.history)
        self.live.point_clicked.connect(self._on_live_point_clicked)
        self.bridge.batch_committed.connect(self.live.ingest)
        self.panels = self.live.panels  # the same dict: endpoint -> EndpointPanel
        self.live.set_panel_height(self.settings.panel_height(DEFAULT_PANEL_HEIGHT_PX))
        self.set_percentile_window(self.settings.percentile_window(PERCENTILE_WINDOW_S))
        self.setCentralWidget(self.live)
        self.status = StatusBarWidget(self.theme)
        self.setStatusBar(self.status)
        self.workbench = Workbench(self)  # incidents, replay, versions, drift docks
        self.reattacher = Reattacher(self, user_errors(), self._on_reattached)

        a = self.actions
        a.open.triggered.connect(self._on_open_triggered)
        a.save_as.triggered.connect(self._on_save_as_triggered)
        a.quit.triggered.connect(self.close)
        a.attach.triggered.connect(self.show_attach_dialog)
        a.reattach.triggered.connect(lambda: self._for_current(self.show_reattach_dialog))
        a.detach.triggered.connect(lambda: self._for_current(self.detach))
        a.pause_probe.triggered.connect(lambda on: self._for_current(
            lambda e: self.pause_probe(e, on)))
        a.freeze.toggled.connect(self.set_live_paused)
        a.taller.triggered.connect(lambda: self.step_panel_height(1))
        a.shorter.triggered.connect(lambda: self.step_panel_height(-1))
        a.default_height.triggered.connect(lambda: self.step_panel_height(0))
        a.overlay.toggled.connect(self.show_overlay)
        self.live.overlay_closed.connect(lambda: self.show_overlay(False))
        for seconds, action in a.percentile_windows.items():
            action.triggered.connect(lambda _=False, w=seconds: self.set_percentile_window(w))
        a.dark.triggered.connect(lambda: self.set_theme("dark"))
        a.light.triggered.connect(lambda: self.set_theme("light"))
        (a.dark if self.theme.name == "dark" else a.light).setChecked(True)
        a.window_box.setCurrentText(self.settings.time_window())
        a.window_box.currentTextChanged.connect(self.set_time_window)
        a.retint(self.theme)
        self.endpoint_list.addActions([a.reattach, a.detach, a.pause_probe])
        self._fill_recent_menu(self.settings.recent())

        self.lag_meter = EventLoopLagMeter(self)
        self._status_timer = QTimer(self, interval=STATUS_INTERVAL_MS)
        self._status_timer.timeout.connect(self._on_status_timer_timeout)
        try:
            self.open_workspace(db_path)
        except BaseException:
            self.workbench.shutdown()  # no thread may outlive a window that failed to open
            self.history.stop()
            raise
        if (geometry := self.settings.geometry()) is not None:
            self.restoreGeometry(geometry)
        if (state := self.settings.window_state()) is not None:
            self.restoreState(state)
        self.lag_meter.start()
        self.live.frame_timer.start()
        self._status_timer.start()
        # The box already shows the saved window, or "all" for a recorded workspace, which
        # is this workspace's view and not the user's setting for the next one.
        self._remember_window = False
        try:
            self.set_time_window(a.window_box.currentText())
        finally:
            self._remember_window = True

    # -- workspace ------------------------------------------------------------------------

    def open_workspace(self, path: Path) -> None:
        """Close the current workspace (stopping its probes) and open another."""
        monitor = Monitor(path)  # raises StoreError before anything is torn down
        self._close_monitor()
        self.live.clear()
        for endpoint in self.endpoint_list.endpoints():
            self.endpoint_list.remove_endpoint(endpoint)
        self.monitor = monitor
        self.db_path = Path(path)
        self.bridge.connect_monitor(monitor)
        self.workbench.open(self.db_path, monitor)
        self.history.set_path(self.db_path)
        self.setWindowTitle(f"ProbeScope — {self._title or self.db_path.name}")
        store = Store(self.db_path)
        try:
            stored = store.endpoints()
        finally:
            store.close()
        self._recorded = {row["uri"]: row for row in stored}
        self._recorded_facts = {}
        for row in stored:  # what earlier sessions recorded: history, no live probe
            panel = self.live.panel(row["uri"], row["kind"] or "")
            panel.set_slo(row.get("slo_ms"))
            panel.set_state("stopped")
            self.endpoint_list.set_endpoint(row["uri"], state="stopped", kind=row["kind"] or "",
                                            version=row.get("model_version") or "",
                                            provider=recorded_provider(row["uri"]))
            self.history.request_facts(row["uri"])  # its counters, read off this thread
        # The live windows go on from the recent past (the longest of them back), as the
        # window showed it before it closed; probes attached again add to it.
        since_ns = time.time_ns() - int(max(TIME_WINDOWS[k] for k in LIVE_WINDOWS) * 1e9)
        self._recent_requests = {self.history.request_recent(row["uri"], since_ns)
                                 for row in stored}
        if not self._title:
            self._fill_recent_menu(self.settings.add_recent(self.db_path))
        reattaching = self.reattacher.start()
        if stored and not reattaching and self.actions.window_box.currentText() in LIVE_WINDOWS:
            # Nothing live yet: show the past, for this workspace only; the window the user
            # chose stays their setting for the next one.
            self._remember_window = False
            try:
                self.actions.window_box.setCurrentText("all")
            finally:
                self._remember_window = True
        self.live.request_history()
        # What the window and this workspace hold stays: out of later full collections.
        self.workbench.collector.freeze_what_is_held()

    def _close_monitor(self) -> None:
        self.workbench.close()  # its monitors listen to the recorder: they stop first
        if self.monitor is not None:
            self.monitor.close()  # stops probes, then the recorder's final flush
            self.bridge.disconnect_monitor()
            self.monitor = None

    def _fill_recent_menu(self, paths: list[str]) -> None:
        menu = self.actions.recent_menu
        menu.clear()
        for p in paths:
            menu.addAction(p, lambda p=p: self._open_recent(Path(p)))
        menu.setEnabled(bool(paths))

    def _open_recent(self, path: Path) -> None:
        """A recent workspace; one deleted since is said and dropped from the list, not
        made again empty at its old path."""
        if not path.exists():
            QMessageBox.warning(self, "Cannot open workspace", f"{path} no longer exists")
            self._fill_recent_menu(self.settings.remove_recent(path))
            return
        self._open_path(path)

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
        target = Path(path) if Path(path).suffix else Path(path).with_suffix(".db")
        problem = None
        if not self.db_path.exists():  # Store() would make a new, empty one to copy
            problem = f"{self.db_path} no longer exists on disk: there is nothing to copy"
        elif target.exists() and target.resolve() == self.db_path.resolve():
            problem = f"{target} is the open workspace; choose another file name"
        if problem is not None:
            QMessageBox.warning(self, "Cannot save workspace", problem)
            return
        try:
            store = Store(self.db_path, readonly=True)
            try:
                store.backup_to(target)
            finally:
                store.close()
            self.statusBar().showMessage(f"saved a copy to {target}", 5000)
        except user_errors() as exc:
            QMessageBox.warning(self, "Cannot save workspace", str(exc))

    # -- endpoints ------------------------------------------------------------------------

    def attach(self, uri: str) -> Probe:
        """Attach and start a probe; raises ProbeError (shown by the caller) on a bad URI.
        Waits for a server's answers: the dialog opens probes off this thread instead."""
        assert self.monitor is not None
        return self.adopt(self.monitor.open(uri))

    def open_probe(self, uri: str) -> Probe:
        """``Monitor.open`` on the current workspace: the slow part of attaching, any thread."""
        monitor = self.monitor
        if monitor is None:
            raise ProbeError("no workspace is open")
        return monitor.open(uri)

    def adopt(self, probe: Probe, *, select: bool = True) -> Probe:
        """Attach an opened probe, start it and give it a panel; remembered, so it is
        attached again when this workspace next opens."""
        assert self.monitor is not None
        self.monitor.adopt(probe)
        self.reattacher.remember(probe)
        info = probe.info()
        panel = self.live.panel(probe.endpoint, info.get("kind", probe.scheme))
        panel.set_slo(getattr(probe, "slo_ms", None))
        self._show_probe(probe)
        if select or not self.endpoint_list.current_endpoint():
            self.endpoint_list.select(probe.endpoint)
        if self.endpoint_list.current_endpoint() == probe.endpoint:
            self.refresh_current()  # selected while it was stopped: Detach and Pause now
        self.workbench.endpoints_changed()
        return probe

    @property
    def remembers_endpoints(self) -> bool:
        """Whether attaching and detaching here are remembered for the next open: not in
        the demo, which starts its own probes on a fresh file each time."""
        return self._title != "demo"

    @property
    def closed(self) -> bool:
        return self._closed

    def _on_reattached(self, attached: int, failures: dict[str, str]) -> None:
        tried = attached + len(failures)
        done = f"attached {attached} of {tried} endpoints again" if failures else \
            f"attached {tried} endpoint{'s' if tried != 1 else ''} again"
        if not failures:
            self.statusBar().showMessage(done, 5000)
            return
        # The list's short name: a whole URI would push the reason out of the status bar.
        first, why = next(iter(failures.items()))
        self.statusBar().showMessage(f"{done}; {short_name(first)}: {why} (select it for "
                                     "details; Ctrl+Shift+R tries again)", 15000)

    def detach(self, endpoint: str) -> None:
        if self.monitor is not None and endpoint in self.monitor.probes:
            self.monitor.detach(endpoint)
        self.reattacher.forget(endpoint)
        self.endpoint_list.set_endpoint(endpoint, state="stopped")
        if endpoint in self.panels:
            self.panels[endpoint].set_state("stopped")
        if self.endpoint_list.current_endpoint() == endpoint:
            self._on_list_current_changed(endpoint)  # nothing left to detach or pause

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
            # An agent's answered pulls are not its model's requests: the list counts those.
            requests=getattr(probe, "model_requests", probe.requests),
            detail=probe.last_error or "")
        panel = self.panels.get(probe.endpoint)
        if panel is not None:
            panel.set_state(state, probe.last_error or "")

    def _show_details(self, endpoint: str) -> None:
        probe = self.monitor.probes.get(endpoint) if self.monitor and endpoint else None
        facts = self._recorded_facts.get(endpoint)
        recorded = recorded_rows(facts, self._recorded[endpoint]) if facts else None
        self.details.setText(details_html(endpoint, self.endpoint_list.state(endpoint), probe,
                                          self.reattacher.failures.get(endpoint), recorded)
                             if endpoint else "")

    def _on_history_recent_ready(self, rid: int, endpoint: str, series: dict,
                                 failures: tuple) -> None:
        if rid in self._recent_requests:  # not one of a workspace since closed
            self._recent_requests.discard(rid)
            self.live.prefill(endpoint, series, failures)

    def _on_history_facts_ready(self, endpoint: str, facts: RecordedFacts) -> None:
        row = self._recorded.get(endpoint)
        if row is None:
            return  # of a workspace since closed
        self._recorded_facts[endpoint] = facts
        if self.monitor is None or endpoint not in self.monitor.probes:
            # A live probe counts its own (from its start); until then, what was recorded.
            self.endpoint_list.set_endpoint(
                endpoint, state=self.endpoint_list.state(endpoint) or "stopped",
                kind=row["kind"] or "", version=row.get("model_version") or "",
                provider=recorded_provider(endpoint), requests=facts.count,
                detail=(f"not attached again: {why}"
                        if (why := self.reattacher.failures.get(endpoint)) else ""))
        if self.endpoint_list.current_endpoint() == endpoint:
            self._show_details(endpoint)

    def add_dock(self, title: str, widget: QWidget,
                 area: Qt.DockWidgetArea = Qt.DockWidgetArea.BottomDockWidgetArea
                 ) -> QDockWidget:
        """Dock a panel (replay, incidents, ...); its place is remembered with the layout."""
        dock = QDockWidget(title, self)
        dock.setObjectName(f"{title.lower().replace(' ', '_')}Dock")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        self.actions.view_menu.addAction(dock.toggleViewAction())
        return dock

    def show_time_range(self, start_s: float, end_s: float) -> None:
        """Freeze the plots on a past stretch (an incident's window); Space resumes live."""
        self.live.show_range(start_s, end_s)
        self.status.set_paused(True)
        if not self.actions.freeze.isChecked():
            self.actions.freeze.blockSignals(True)
            self.actions.freeze.setChecked(True)
            self.actions.freeze.blockSignals(False)

    def show_attach_dialog(self, uri: str = "") -> AttachDialog:
        dialog = AttachDialog(schemes(), self.open_probe, self.adopt, user_errors(), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        if uri:
            dialog.set_uri(uri)
        dialog.open()
        return dialog

    def show_reattach_dialog(self, endpoint: str) -> AttachDialog | None:
        """The attach dialog filled in with how a recorded endpoint was attached: the user
        sees (and may change) where it connects before it does."""
        if not self._can_reattach(endpoint):
            return None
        return self.show_attach_dialog(self.reattacher.uri_for(endpoint))

    def _can_reattach(self, endpoint: str) -> bool:
        live = self.monitor is not None and endpoint in self.monitor.probes
        return (bool(endpoint) and not live and endpoint not in self.reattacher.pending
                and endpoint.partition(":")[0] in schemes())

    def refresh_current(self) -> None:
        """Actions and details follow a change to the selected endpoint's state."""
        self._on_list_current_changed(self.endpoint_list.current_endpoint())

    def _on_list_current_changed(self, endpoint: str) -> None:
        probe = self.monitor.probes.get(endpoint) if self.monitor and endpoint else None
        self.actions.reattach.setEnabled(self._can_reattach(endpoint))
        self.actions.detach.setEnabled(probe is not None)
        self.actions.pause_probe.setEnabled(probe is not None)
        self.actions.pause_probe.setChecked(bool(probe and probe.paused))
        self.live.show_endpoint(endpoint)
        self._show_details(endpoint)

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

    # -- time ------------------------------------------------------------------------------

    @property
    def frames(self) -> int:
        return self.live.frames

    def set_time_window(self, key: str) -> None:
        if key not in TIME_WINDOWS:
            return
        if self.actions.window_box.currentText() != key:
            self.actions.window_box.setCurrentText(key)  # comes back here through the signal
            return
        if self._remember_window:
            self.settings.set_time_window(key)
        self.live.set_time_window(key)

    def step_panel_height(self, steps: int) -> None:
        """Taller (+1), shorter (-1) or default (0) endpoint panels; kept for next time."""
        px = self.live.step_panel_height(steps)
        self.settings.set_panel_height(px)
        self.statusBar().showMessage(f"panels {px} px tall", 3000)

    def show_overlay(self, shown: bool) -> None:
        """View > Overlay plot: one plot of a figure of several endpoints, above the panels."""
        self.live.show_overlay(shown)
        if self.actions.overlay.isChecked() != shown:
            self.actions.overlay.setChecked(shown)

    def set_percentile_window(self, seconds: float) -> None:
        """The live p50/p95/p99 over ``seconds`` (View > Percentile window); kept."""
        seconds = self.live.set_percentile_window(seconds)
        self.settings.set_percentile_window(seconds)
        self.actions.percentile_windows[seconds].setChecked(True)

    @property
    def live_paused(self) -> bool:
        return self.live.paused

    def set_live_paused(self, paused: bool) -> None:
        self.live.set_paused(paused)
        self.status.set_paused(paused)
        if self.actions.freeze.isChecked() != paused:
            self.actions.freeze.setChecked(paused)

    def _on_live_point_clicked(self, endpoint: str, t_s: float, failed: bool) -> None:
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
        seen = self.live.samples_seen
        rate = (seen - n0) / max(1e-6, now - t0)
        self._rate_mark = (now, seen)
        stats = self.monitor.stats() if self.monitor else None
        dropped = stats.dropped if stats else 0
        size = 0
        for end in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):  # gone between two looks: counted as gone
                size += Path(f"{self.db_path}{end}").stat().st_size
        self.status.show_figures(rate, dropped, size, self.lag_meter.worst_ms())
        self.status.show_problem(self._workspace_problem(stats))
        if self.monitor is not None:
            for probe in self.monitor.probes.values():
                self._show_probe(probe)
        self._show_details(self.endpoint_list.current_endpoint())

    def _workspace_problem(self, stats) -> str | None:
        """What keeps recording from reaching the workspace file, for the status bar."""
        if self.db_path is not None and not self.db_path.exists():
            return (f"{self.db_path.name} was deleted: what is recorded now is lost when "
                    "the workspace closes")
        if stats is not None and stats.last_error:
            return f"not recording: {stats.last_error} ({stats.backlog:,} items waiting)"
        return None

    # -- look and lifetime ----------------------------------------------------------------

    def set_theme(self, name: str) -> None:
        self.theme = theme_named(name)
        self.settings.set_theme(self.theme.name)
        # Restyling every widget takes a few hundred milliseconds: say so with the cursor.
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            apply_app_theme(QApplication.instance(), self.theme)
            for widget in (self.endpoint_list, self.status, self.live):
                widget.apply_theme(self.theme)
            self.workbench.apply_theme(self.theme)
            self.actions.retint(self.theme)
        finally:
            QApplication.restoreOverrideCursor()
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
        self.live.stop()
        self._status_timer.stop()
        self.lag_meter.stop()
        self._close_monitor()
        if self.demo_server is not None:  # after the probes that talk to it
            self.demo_server.close()
            self.demo_server = None
        self.workbench.shutdown()
        self.history.stop()


def recorded_provider(uri: str) -> str:
    """The provider an endpoint recorded earlier was probed with, as its URI says (a live
    probe reports its own): onnxruntime's provider for a local model, else nothing."""
    try:
        parsed = EndpointUri.parse(uri)
    except UriError:
        return ""
    return (parsed.param("provider", "cpu") or "cpu") if parsed.scheme == "onnx" else ""
