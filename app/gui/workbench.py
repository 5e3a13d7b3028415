"""The docked panels beside the live plots (incidents, replay, versions and contracts, drift),
the live incident and drift monitors that feed them, and the incident-report export.
Thread: GUI; the monitors run their own threads and a report is written on a JobRunner worker.

One ``Workbench`` per window. ``open`` builds the panels and starts the monitors for a
workspace; ``close`` stops them before the window's Monitor closes (the monitors are recorder
listeners, so they go first and nothing reads a workspace that is being shut).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QFrame,
    QMessageBox,
    QProgressDialog,
    QScrollArea,
    QWidget,
)

from app.core.drift_monitor import DriftMonitor
from app.core.incidents import IncidentError, IncidentMonitor, Status, find_incident
from app.core.store import Store, StoreError
from app.core.versions import seed
from app.gui.drift_panel import DriftPanel
from app.gui.gui_gc import GuiThreadCollector
from app.gui.incidents_panel import IncidentsPanel
from app.gui.jobs import Job, JobRunner
from app.gui.replay_panel import ReplayPanel
from app.gui.versions_panel import VersionsPanel
from app.report import write_report
from widgets.incident_marks import IncidentSpan
from widgets.theme import Theme

if TYPE_CHECKING:
    from app.core.monitor import Monitor
    from app.gui.main_window import MainWindow

log = logging.getLogger(__name__)

NS = 1_000_000_000
DOCK_HEIGHT_PX = 330  # the tabbed panels' first height: the live plots keep most of the room
WORK_DOCK_HEIGHT_PX = 480  # replay and versions, first raised: enough rows to work in
WORK_DOCKS = ("Replay", "Versions")
INCIDENT_CLOCK_MS = 2000  # how often an open incident's band is stretched to now


def incident_spans(rows: Sequence[dict], now_s: float,
                   quiet_until_s: Mapping[str, float] | None = None
                   ) -> dict[str, list[IncidentSpan]]:
    """Incident rows (``Store.incidents``) as time spans per endpoint URI: from opening to
    clearing; one not cleared runs to ``now_s`` (to when it was resolved, if a person
    resolved it first). ``quiet_until_s``: endpoints no probe is watching now, with their
    newest sample; their open incidents run to it, as in the PDF report, since nothing
    judges them past it (a workspace reopened hours later shaded them to now)."""
    quiet = quiet_until_s or {}
    out: dict[str, list[IncidentSpan]] = {}
    for row in rows:
        cleared, resolved = row.get("cleared_ns"), row.get("status") == Status.RESOLVED
        open_ = cleared is None and not resolved
        end_s = (cleared / NS if cleared is not None
                 else (row.get("resolved_ns") or row.get("updated_ns") or row["opened_ns"]) / NS
                 if resolved else max(row["opened_ns"] / NS, quiet.get(row["endpoint"], now_s)))
        out.setdefault(row["endpoint"], []).append(IncidentSpan(
            int(row["id"]), row["opened_ns"] / NS, end_s, str(row["rule"]), open_))
    return out


class Workbench(QObject):
    report_exported = Signal(str)  # the PDF's path
    report_failed = Signal(str)  # the line shown to the user

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.runner = JobRunner(self)
        self.docks: dict[str, QDockWidget] = {}
        self.incidents: IncidentsPanel | None = None
        self.replay: ReplayPanel | None = None
        self.versions: VersionsPanel | None = None
        self.drift: DriftPanel | None = None
        self.incident_monitor: IncidentMonitor | None = None
        self.drift_monitor: DriftMonitor | None = None
        self.db_path: Path | None = None
        self.export_job: Job | None = None
        self.progress_dialog: QProgressDialog | None = None
        self.message_box: QMessageBox | None = None  # the last one shown (tests read it)
        self.collector = GuiThreadCollector(self)
        self.collector.start()
        self._incident_rows: list[dict] = []
        self._grown: set[str] = set()
        self._incident_clock = QTimer(self, interval=INCIDENT_CLOCK_MS)
        self._incident_clock.timeout.connect(self._shade_incidents)
        window.actions.export_report.triggered.connect(self.export_triggered)

    # -- workspace ------------------------------------------------------------------------

    def open(self, db_path: Path, monitor: Monitor) -> None:
        """Panels and monitors for the workspace that ``monitor`` records into."""
        self.close()
        self.db_path = Path(db_path)
        probes = monitor.probes
        self.incident_monitor = IncidentMonitor(
            db_path, states=lambda: {e: str(p.state) for e, p in list(probes.items())})
        self.drift_monitor = DriftMonitor(db_path)
        monitor.subscribe(self.incident_monitor)
        monitor.subscribe(self.drift_monitor)
        self.incident_monitor.start()
        self.drift_monitor.start()

        self.incidents = IncidentsPanel(db_path)
        self.incidents.follow(self.incident_monitor)
        self.incidents.incident_selected.connect(self._on_incidents_incident_selected)
        self.incidents.export_requested.connect(self._on_incidents_export_requested)
        self.incidents.error_occurred.connect(self._show_status)
        self.incidents.incident_changed.connect(self._on_incidents_incident_changed)
        self.incidents.incidents_loaded.connect(self._on_incidents_incidents_loaded)
        self._on_incidents_incidents_loaded(self.incidents.model.rows)  # loaded when made
        self.replay = ReplayPanel(db_path)
        self.replay.replay_failed.connect(self._show_status)
        self.versions = VersionsPanel(db_path)
        self.versions.error_occurred.connect(self._show_status)
        self.versions.versions_changed.connect(lambda: self.replay and
                                               self.replay.refresh_versions())
        self.drift = self._new_drift_panel(self.window.theme)
        first_time = not self.docks
        self._place("Incidents", self.incidents)
        self._place("Drift", self.drift)
        self._place("Replay", self.replay)
        self._place("Versions", self.versions)
        if first_time:
            self._first_layout()

    def _new_drift_panel(self, theme: Theme) -> DriftPanel:
        assert self.db_path is not None and self.drift_monitor is not None
        panel = DriftPanel(self.db_path, theme=theme)
        panel.follow(self.drift_monitor)
        panel.error_occurred.connect(self._show_status)
        panel.drift_evaluated.connect(self.window.live.add_drift_share)
        return panel

    def apply_theme(self, theme: Theme) -> None:
        """The drift panel's plots take their colours when made: a new panel replaces it."""
        if self.drift is None or self.drift_monitor is None:
            return
        endpoint = self.drift.endpoint()
        self.drift.shutdown()
        self.drift = self._new_drift_panel(theme)
        if endpoint:
            self.drift.set_endpoint(endpoint)
        self._place("Drift", self.drift)

    def _first_layout(self) -> None:
        # The incident list under the endpoint list (both are lists to pick from); drift,
        # replay and versions tabbed under the plots, where they have the width their tables
        # and heat map need. Later sessions restore the layout the user left.
        w, d = self.window, self.docks
        w.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        endpoints = w.findChild(QDockWidget, "endpointsDock")
        if endpoints is not None:
            w.removeDockWidget(d["Incidents"])
            w.splitDockWidget(endpoints, d["Incidents"], Qt.Orientation.Vertical)
            d["Incidents"].show()
        w.tabifyDockWidget(d["Drift"], d["Replay"])
        w.tabifyDockWidget(d["Drift"], d["Versions"])
        w.resizeDocks([d["Drift"]], [DOCK_HEIGHT_PX], Qt.Orientation.Vertical)
        d["Drift"].raise_()

    def _place(self, title: str, panel: QWidget) -> None:
        # In a scroll area: the replay panel's minimum height alone would take half the window
        # from the live plots; scrolled, the tabbed docks can be as short as the user likes.
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(panel)
        dock = self.docks.get(title)
        if dock is None:
            dock = self.docks[title] = self.window.add_dock(title, scroll)
            if title in WORK_DOCKS:
                dock.visibilityChanged.connect(
                    lambda shown, name=title: shown and self._grow_once(name))
        else:
            old = dock.widget()
            dock.setWidget(scroll)
            if old is not None:
                old.deleteLater()

    def _grow_once(self, title: str) -> None:
        """The first time the replay or versions tab is raised, give it rows to work in:
        the tabbed area starts short so the live plots keep the room. A dock the user has
        already made taller, or floated, is left as it is."""
        dock = self.docks[title]
        if title in self._grown or dock.isFloating():
            return
        self._grown.add(title)
        want = min(WORK_DOCK_HEIGHT_PX, int(self.window.height() * 0.55))
        if dock.height() < want:
            self.window.resizeDocks([dock], [want], Qt.Orientation.Vertical)

    def seed_versions(self, locations: Sequence[str | Path]) -> None:
        """Register model versions when the workspace has none yet (the demo's three)."""
        if self.db_path is None:
            return
        store = Store(self.db_path)
        try:
            seed(store, [str(location) for location in locations])
        finally:
            store.close()
        if self.versions is not None:
            self.versions.refresh()
        if self.replay is not None:
            self.replay.refresh_versions()

    def close(self) -> None:
        """Stop report jobs, panel workers and monitors; safe to call twice."""
        self.runner.shutdown()
        self._incident_clock.stop()
        if self.progress_dialog is not None:
            self.progress_dialog.reset()
        for panel in (self.replay, self.versions, self.drift):
            if panel is not None:
                panel.shutdown()
        for mon in (self.incident_monitor, self.drift_monitor):
            if mon is not None:
                mon.close()
        self.incident_monitor = self.drift_monitor = None

    def endpoints_changed(self) -> None:
        """An endpoint was attached: the panels' endpoint pickers list it."""
        if self.replay is not None:
            self.replay.refresh_endpoints()
        if self.drift is not None:
            self.drift.reload_endpoints()

    def shutdown(self) -> None:
        """``close``, and collection back to automatic: the window is going away."""
        self.close()
        self.collector.stop()

    # -- incidents -> plots and replay -----------------------------------------------------

    def _on_incidents_incident_selected(self, start_ns: int, end_ns: int, endpoint: str) -> None:
        if endpoint in self.window.endpoint_list.endpoints():
            self.window.endpoint_list.select(endpoint)
        self.window.show_time_range(start_ns / NS, end_ns / NS)
        if self.replay is not None:
            self.replay.set_time_range(start_ns, end_ns, endpoint)
        if self.drift is not None:
            self.drift.set_endpoint(endpoint)

    def _on_incidents_incidents_loaded(self, rows: list[dict]) -> None:
        self._incident_rows = rows
        self._shade_incidents()

    def _shade_incidents(self) -> None:
        """Incidents as bands on their endpoints' plots; open ones reach to now (the clock
        re-runs this so they keep growing)."""
        rows = self._incident_rows
        monitor = self.window.monitor
        watched = {e for e, p in monitor.probes.items() if p.alive} if monitor else set()
        if self.incidents is not None:
            self.incidents.model.set_watched(watched)
        quiet = {e: newest for e, panel in self.window.live.panels.items()
                 if e not in watched and (newest := panel.series.newest_s()) is not None}
        self.window.live.set_incidents(incident_spans(rows, time.time(), quiet))
        if any(s.open for spans in self.window.live.incidents.values() for s in spans):
            self._incident_clock.start()
        else:
            self._incident_clock.stop()

    def _on_incidents_incident_changed(self, event: object) -> None:
        kind = getattr(event, "kind", "")
        if kind in ("opened", "reopened", "escalated"):
            # The detail is the incident's note, which starts with what happened ("Opened:").
            self._show_status(f"incident #{getattr(event, 'incident_id', '?')}: "
                              f"{getattr(event, 'detail', '') or kind}")

    def _show_status(self, message: str) -> None:
        self.window.statusBar().showMessage(message, 8000)

    # -- report export --------------------------------------------------------------------

    def current_incident_id(self) -> int | None:
        """The incident selected in the panel, else the latest one, else None."""
        row = self.incidents.selected_incident() if self.incidents else None
        if row is not None:
            return int(row["id"])
        if self.db_path is None or not self.db_path.exists():
            return None
        try:
            store = Store(self.db_path, readonly=True)
            try:
                return int(find_incident(store, "latest")["id"])
            finally:
                store.close()
        except (IncidentError, StoreError):
            return None

    def export_triggered(self) -> None:
        incident_id = self.current_incident_id()
        if incident_id is None:
            self._tell("No incident to export", "There is no incident in this workspace yet. "
                       "Incidents open by themselves when a rule trips (latency SLO, error "
                       "burst, drift, memory growth).", QMessageBox.Icon.Information)
            return
        self._on_incidents_export_requested(incident_id)

    def _on_incidents_export_requested(self, incident_id: int) -> None:
        default = Path.home() / f"incident-{incident_id}.pdf"
        path, _ = QFileDialog.getSaveFileName(self.window, "Export incident report",
                                              str(default), "PDF documents (*.pdf)")
        if path:
            self.export_incident(incident_id, Path(path))

    def export_incident(self, incident_id: int, path: str | Path) -> Job | None:
        """Write the report on a worker with a progress dialog; the file dialog's seam."""
        if self.db_path is None:
            return None
        if self.runner.busy():
            self._show_status("a report is already being written")
            return None
        db_path, out = self.db_path, Path(path)
        job = Job(lambda progress, cancelled: write_report(
            db_path, incident_id, out, progress=progress, cancelled=cancelled))
        dialog = QProgressDialog(f"Writing the report of incident #{incident_id}…", "Cancel",
                                 0, 1000, self.window)
        dialog.setWindowTitle("Export incident report")
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        dialog.setMinimumDuration(400)  # a quick report never flashes a dialog
        dialog.setAutoClose(False)
        dialog.setAutoReset(False)
        dialog.canceled.connect(job.cancel)
        job.signals.progressed.connect(lambda f: dialog.setValue(int(f * 1000)))
        job.signals.finished.connect(lambda written: self._on_job_finished(job, written))
        job.signals.failed.connect(lambda message: self._on_job_failed(job, message))
        self.progress_dialog = dialog
        self.export_job = job
        return self.runner.start(job)

    def _close_progress(self) -> None:
        if self.progress_dialog is not None:
            self.progress_dialog.canceled.disconnect()
            self.progress_dialog.reset()
            self.progress_dialog.deleteLater()
            self.progress_dialog = None

    def _on_job_finished(self, job: Job, written: object) -> None:
        self._close_progress()
        self.window.statusBar().showMessage(f"incident report written to {written}", 10_000)
        self.report_exported.emit(str(written))

    def _on_job_failed(self, job: Job, message: str) -> None:
        self._close_progress()
        if job.is_cancelled():
            self._show_status("report export cancelled; no file written")
        else:
            self._tell("Cannot export the report", message, QMessageBox.Icon.Warning)
        self.report_failed.emit(message)

    def _tell(self, title: str, text: str, icon: QMessageBox.Icon) -> None:
        # Window-modal and opened, not exec'd: the event loop (and the live plots) keep running.
        box = QMessageBox(icon, title, text, QMessageBox.StandardButton.Ok, self.window)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        self.message_box = box
