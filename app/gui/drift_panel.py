"""The drift panel: an endpoint's features x time severity map, its features sorted by drift,
reference vs current distributions of the selected one, the full Evidently report on a worker,
and the endpoint's reference. Thread: GUI only; the report runs on a JobRunner thread.

The panel reads the workspace itself on short-lived read-only connections (history queries
take milliseconds), so it runs alone for preview: ``DriftPanel(db_path).show()``. The window
hands the live ``DriftMonitor`` to ``follow`` so the panel refreshes on each evaluation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.drift import DriftError
from app.core.drift_history import (
    drift_matrix,
    feature_distribution,
    latest_table,
    severity,
    share_series,
)
from app.core.drift_monitor import DriftMonitor, DriftUpdate
from app.core.drift_report import DriftCancelled
from app.core.drift_stats import Kind
from app.core.drift_window import EndpointDrift, endpoint_report
from app.core.references import (
    Reference,
    demo_reference,
    file_reference,
    get_reference,
    set_reference,
)
from app.core.store import Store, StoreError
from app.gui.jobs import Job, JobRunner
from widgets.drift_plots import DistributionPlotWidget, DriftHeatMapWidget, DriftShareWidget
from widgets.theme import DARK, Theme

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("Feature", "Method", "Score", "Threshold", "Drifted")
REPORT_WINDOWS_S = (("last 1 min", 60.0), ("last 5 min", 300.0), ("last 15 min", 900.0),
                    ("last hour", 3600.0), ("last day", 86400.0))
DRIFTED_COLOR = QColor("#e0663b")


def _number(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{value:.4g}"


def _fill_table(table: QTableWidget, rows: list[tuple[str, str | None, float | None,
                                                        float | None, bool]]) -> None:
    table.setRowCount(len(rows))
    for i, (feature, method, score, threshold, drifted) in enumerate(rows):
        cells = (feature, method or "not tested", _number(score), _number(threshold),
                 "yes" if drifted else "no")
        for j, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
            if drifted:
                item.setForeground(DRIFTED_COLOR)
            table.setItem(i, j, item)


def _make_table() -> QTableWidget:
    table = QTableWidget(0, len(TABLE_COLUMNS))
    table.setHorizontalHeaderLabels(list(TABLE_COLUMNS))
    table.verticalHeader().hide()
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    table.verticalHeader().setDefaultSectionSize(22)
    return table


def read_share_series(db_path: str | Path, endpoint: str, start_ns: int | None = None,
                      end_ns: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ts_ns, share drifted) of an endpoint's live evaluations; empty when there are none."""
    store = Store(db_path, readonly=True)
    try:
        return share_series(store, endpoint, start_ns, end_ns)
    finally:
        store.close()


class _Relay:
    """What the drift monitor calls on its thread: forwards to a signal until released, so a
    closed panel is never touched (the monitor has no unsubscribe)."""

    def __init__(self, emit: Callable[[object], None]) -> None:
        self._emit: Callable[[object], None] | None = emit
        self._lock = threading.Lock()

    def __call__(self, update: DriftUpdate) -> None:
        with self._lock:
            if self._emit is not None:
                self._emit(update)

    def release(self) -> None:
        with self._lock:
            self._emit = None


class DriftPanel(QWidget):
    feature_selected = Signal(str)
    error_occurred = Signal(str)  # a line for the status bar
    report_finished = Signal(object)  # EndpointDrift of a finished full report
    refreshed = Signal()  # after each refresh, for whoever waits on it
    _update_arrived = Signal(object)  # emitted on the drift thread; queued to this one

    def __init__(self, db_path: str | Path | None = None, parent: QWidget | None = None, *,
                 theme: Theme = DARK) -> None:
        super().__init__(parent)
        self.db_path = Path(db_path) if db_path else None
        self.runner = JobRunner(self)
        self._job: Job | None = None
        self._relays: list[_Relay] = []
        self.last_report: EndpointDrift | None = None

        self.endpoint_box = QComboBox()
        self.endpoint_box.setMinimumContentsLength(30)
        self.endpoint_box.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.endpoint_box.currentIndexChanged.connect(self._on_endpoint_box_changed)
        self.reference_button = QToolButton()
        self.reference_button.setText("Reference…")
        self.reference_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.reference_button)
        menu.addAction("Data file (CSV/Parquet)…", self._on_reference_file_chosen)
        menu.addAction("The demo's reference", self.use_demo_reference)
        self.reference_button.setMenu(menu)
        self.reference_label = QLabel("")
        self.reference_label.setStyleSheet(f"color: {theme.muted}")
        top = QHBoxLayout()
        top.addWidget(QLabel("Endpoint"))
        top.addWidget(self.endpoint_box, 1)
        top.addWidget(self.reference_button)
        top.addWidget(self.reference_label, 1)

        self.heatmap = DriftHeatMapWidget(theme)
        self.table = _make_table()
        self.table.itemSelectionChanged.connect(self._on_table_selection_changed)
        self.distribution = DistributionPlotWidget(theme)
        self.distribution.clear_distribution("Select a feature to compare its distributions")

        self.report_window = QComboBox()
        for text, seconds in REPORT_WINDOWS_S:
            self.report_window.addItem(text, seconds)
        self.report_window.setCurrentIndex(1)
        self.report_button = QPushButton("Full report (Evidently)")
        self.report_button.clicked.connect(self.run_report)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_report)
        self.open_button = QPushButton("Open HTML")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self.open_html)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(8)
        self.report_label = QLabel("Full report: not run")
        self.report_label.setWordWrap(True)
        self.report_table = _make_table()
        report_bar = QHBoxLayout()
        for w in (self.report_window, self.report_button, self.cancel_button, self.open_button):
            report_bar.addWidget(w)
        report_bar.addStretch(1)
        report = QWidget()
        rl = QVBoxLayout(report)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addLayout(report_bar)
        rl.addWidget(self.progress)
        rl.addWidget(self.report_label)
        rl.addWidget(self.report_table, 1)

        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.distribution)
        right.addWidget(report)
        right.setSizes([330, 300])
        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(self.table)
        lower.addWidget(right)
        lower.setSizes([420, 580])
        main = QSplitter(Qt.Orientation.Vertical)
        main.addWidget(self.heatmap)
        main.addWidget(lower)
        main.setSizes([300, 500])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(main, 1)

        self._update_arrived.connect(self._on_update_arrived, Qt.ConnectionType.QueuedConnection)
        self._rows: list[str] = []  # table row -> feature
        if self.db_path is not None:
            self.reload_endpoints()

    # -- public ---------------------------------------------------------------------------

    def endpoint(self) -> str | None:
        return self.endpoint_box.currentData() or None

    def set_endpoint(self, endpoint: str) -> None:
        """Show ``endpoint`` (added to the selector if it is new) and refresh."""
        index = self.endpoint_box.findData(endpoint)
        if index < 0:
            self.endpoint_box.addItem(endpoint, endpoint)
            index = self.endpoint_box.count() - 1
        if index == self.endpoint_box.currentIndex():
            self.refresh()
        else:
            self.endpoint_box.setCurrentIndex(index)  # refreshes through the handler

    def reload_endpoints(self) -> None:
        """Re-read the workspace's endpoints, keeping the current one; the first one with
        drift history is shown when none is."""
        endpoints, with_history = self._read(lambda s: (
            [e["uri"] for e in s.endpoints()],
            [e["uri"] for e in s.endpoints() if s.drift_evaluations(e["uri"])]))
        current = self.endpoint()
        self.endpoint_box.blockSignals(True)
        self.endpoint_box.clear()
        for uri in endpoints or []:
            self.endpoint_box.addItem(uri, uri)
        self.endpoint_box.blockSignals(False)
        choice = current if current in (endpoints or []) else next(
            iter(with_history or endpoints or []), None)
        if choice is not None:
            self.set_endpoint(choice)
        else:
            self.refresh()

    def refresh(self) -> None:
        """Re-read the current endpoint's drift history, table and reference."""
        endpoint = self.endpoint()
        if endpoint is None or self.db_path is None:
            self.heatmap.set_matrix(np.empty(0, dtype=np.int64), (), np.empty((0, 0)))
            self._set_table([])
            self.refreshed.emit()
            return
        got = self._read(lambda s: (drift_matrix(s, endpoint), latest_table(s, endpoint),
                                    get_reference(s, endpoint)))
        if got is None:
            return
        matrix, table, reference = got
        self.heatmap.set_matrix(matrix.ts_ns, matrix.features, matrix.severity)
        self._set_table(table)
        self._show_reference(reference)
        self.refreshed.emit()

    def follow(self, monitor: DriftMonitor) -> None:
        """Refresh whenever ``monitor`` saves an evaluation of the shown endpoint. The monitor
        calls back on its own thread; the signal crosses into the GUI thread queued."""
        relay = _Relay(self._update_arrived.emit)
        self._relays.append(relay)
        # Also released if the panel is deleted without shutdown (its parent closed).
        self.destroyed.connect(relay.release)
        monitor.subscribe(relay)

    def select_feature(self, feature: str) -> bool:
        if feature not in self._rows:
            return False
        self.table.selectRow(self._rows.index(feature))
        return True

    def selected_feature(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self._rows[rows[0].row()] if rows else None

    def set_reference_file(self, path: str | Path) -> bool:
        """Make a CSV/Parquet file the endpoint's reference; False (and an error line) if not."""
        try:
            reference = file_reference(path)
        except DriftError as exc:
            self.error_occurred.emit(str(exc))
            return False
        return self._set_reference(reference)

    def use_demo_reference(self) -> bool:
        return self._set_reference(demo_reference())

    def busy(self) -> bool:
        return self._job is not None

    def run_report(self) -> Job | None:
        """Run Evidently's full report on the current endpoint's window, on the worker."""
        endpoint, db = self.endpoint(), self.db_path
        if self._job is not None or endpoint is None or db is None:
            return None
        window_s = float(self.report_window.currentData())

        def work(progress: Callable[[float], None], cancelled: Callable[[], bool]
                 ) -> EndpointDrift:
            return endpoint_report(db, endpoint, window_s, progress=progress,
                                   cancelled=cancelled)

        job = Job(work)
        job.signals.progressed.connect(self._on_job_progressed)
        job.signals.finished.connect(self._on_job_finished)
        job.signals.failed.connect(self._on_job_failed)
        self._job = job
        self.progress.setValue(0)
        self.report_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.report_label.setText(f"Full report of {endpoint}: running…")
        self.runner.start(job)
        return job

    def cancel_report(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.report_label.setText("Full report: cancelling…")

    def open_html(self) -> None:
        path = self.last_report.html_path if self.last_report else None
        if path is not None and path.exists():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))

    def shutdown(self) -> None:
        """Stop following monitors, cancel and wait for the report; call before closing."""
        for relay in self._relays:
            relay.release()
        self._relays = []
        self.runner.shutdown()

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    # -- handlers -------------------------------------------------------------------------

    def _on_endpoint_box_changed(self, _index: int) -> None:
        self.open_button.setEnabled(False)
        self.last_report = None
        self.report_table.setRowCount(0)
        self.report_label.setText("Full report: not run")
        self.refresh()

    def _on_update_arrived(self, update: DriftUpdate) -> None:
        if self.endpoint_box.findData(update.endpoint) < 0:
            self.endpoint_box.addItem(update.endpoint, update.endpoint)
        if self.endpoint() is None:
            self.set_endpoint(update.endpoint)
        elif update.endpoint == self.endpoint():
            self.refresh()

    def _on_table_selection_changed(self) -> None:
        feature = self.selected_feature()
        if feature is None:
            return
        self._show_distribution(feature)
        self.feature_selected.emit(feature)

    def _on_reference_file_chosen(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Drift reference", "", "Data files (*.csv *.parquet *.pq);;All files (*)")
        if path:
            self.set_reference_file(path)

    def _on_job_progressed(self, fraction: float) -> None:
        self.progress.setValue(int(fraction * 1000))

    def _on_job_finished(self, result: EndpointDrift) -> None:
        self._idle()
        self.last_report = result
        tested = result.result.tested
        drifted = sum(c.drifted for c in tested)
        self.report_label.setText(
            f"Full report (Evidently) of {result.window.endpoint}: {drifted} of {len(tested)} "
            f"columns drifted (share {result.result.share_drifted:.2f}); "
            f"{result.result.rows_current} rows against {result.result.rows_reference}")
        columns = sorted(result.result.columns, key=lambda c: (
            np.nan_to_num(-severity(c.method, c.score, c.threshold), nan=np.inf), c.name))
        _fill_table(self.report_table, [(c.name, c.method, c.score, c.threshold, c.drifted)
                                        for c in columns])
        self.open_button.setEnabled(result.html_path is not None)
        self.report_finished.emit(result)

    def _on_job_failed(self, message: str) -> None:
        cancelled = self._job is not None and self._job.is_cancelled()
        self._idle()
        if cancelled or message == str(DriftCancelled("drift report cancelled")):
            self.report_label.setText("Full report: cancelled")
            return
        self.report_label.setText(f"Full report failed: {message}")
        self.error_occurred.emit(message)

    # -- internals ------------------------------------------------------------------------

    def _idle(self) -> None:
        self._job = None
        self.progress.setValue(self.progress.maximum())
        self.report_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _read(self, query: Callable[[Store], object]):
        """``query`` on a short-lived read-only connection; None (and an error line) if the
        workspace cannot be read."""
        if self.db_path is None or not self.db_path.exists():
            return None
        try:
            store = Store(self.db_path, readonly=True)
            try:
                return query(store)
            finally:
                store.close()
        except (StoreError, DriftError) as exc:
            self.error_occurred.emit(str(exc))
            return None

    def _set_reference(self, reference: Reference) -> bool:
        endpoint = self.endpoint()
        if endpoint is None or self.db_path is None:
            self.error_occurred.emit("choose an endpoint before setting its reference")
            return False
        try:
            store = Store(self.db_path)
            try:
                set_reference(store, endpoint, reference)
            finally:
                store.close()
        except (StoreError, DriftError) as exc:
            self.error_occurred.emit(str(exc))
            return False
        self.refresh()
        return True

    def _show_reference(self, reference: Reference | None) -> None:
        self.reference_label.setText(
            f"against {reference.describe()}" if reference else "no reference: choose one")

    def _set_table(self, table: list) -> None:
        previous = self.selected_feature()
        self._rows = [r.feature for r in table]
        self.table.blockSignals(True)
        _fill_table(self.table, [(r.feature, r.method, r.score, r.threshold, r.drifted)
                                 for r in table])
        self.table.blockSignals(False)
        # Keep the user's feature; otherwise show the most drifted one.
        feature = previous if previous in self._rows else next(iter(self._rows), None)
        if feature is not None:
            self.table.blockSignals(True)
            self.table.selectRow(self._rows.index(feature))
            self.table.blockSignals(False)
            self._show_distribution(feature)
        else:
            self.distribution.clear_distribution("No drift evaluated yet")

    def _show_distribution(self, feature: str) -> None:
        endpoint = self.endpoint()
        if endpoint is None:
            return
        dist = self._read(lambda s: feature_distribution(s, endpoint, feature))
        if dist is None:
            self.distribution.clear_distribution(f"{feature}: not in the reference")
        elif dist.kind is Kind.NUMERICAL and dist.edges is not None:
            self.distribution.set_numerical(feature, dist.edges, dist.reference, dist.current)
        else:
            self.distribution.set_categorical(feature, dist.categories or (), dist.reference,
                                              dist.current)


__all__ = ["DriftPanel", "DriftShareWidget", "read_share_series"]
