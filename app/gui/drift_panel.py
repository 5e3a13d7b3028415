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
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSizePolicy,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.drift import DriftError
from app.core.drift_history import (
    drift_matrix,
    evaluation_text,
    latest_evaluation,
)
from app.core.drift_monitor import DriftMonitor, DriftUpdate
from app.core.drift_stats import Kind
from app.core.references import (
    Reference,
    demo_reference,
    file_reference,
    get_reference,
    set_reference,
)
from app.core.store import Store, StoreError
from app.gui.drift_reads import (
    ReferenceFrames,
    ShownDistribution,
    read_distribution,
    read_share_series,
)
from app.gui.drift_report_box import DriftReportBox, fill_feature_table, make_feature_table
from app.gui.jobs import Job, JobRunner
from widgets.drift_plots import DistributionPlotWidget, DriftHeatMapWidget, DriftShareWidget
from widgets.theme import DARK, Theme

log = logging.getLogger(__name__)

# The suffixes references.read_table reads; the file dialog offers exactly these.
REFERENCE_FILE_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl", ".ndjson", ".npy")
REFERENCE_FILE_FILTER = ("Data files (" + " ".join(f"*{s}" for s in REFERENCE_FILE_SUFFIXES)
                         + ");;All files (*)")
# How much history the heat map shows, back from the endpoint's last capture: a day of
# evaluations every 5 s is 17,000 columns and takes a second to read; an hour takes 30 ms.
HISTORY_SPANS_S = (("last 15 min", 900.0), ("last hour", 3600.0), ("last 6 hours", 21600.0),
                   ("last day", 86400.0), ("all", None))
# Shares of the panel's height for the heat map: at least the first, more up to the second
# where that names every row; the rest goes to the table and distributions below it.
HEAT_MAP_SHARES = (0.4, 0.55)


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


class _ResizedSplitter(QSplitter):
    """A splitter that says when it was resized, so its owner can share out the height."""

    resized = Signal()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.resized.emit()


class DriftPanel(QWidget):
    feature_selected = Signal(str)
    error_occurred = Signal(str)  # a line for the status bar
    report_finished = Signal(object)  # EndpointDrift of a finished full report
    refreshed = Signal()  # after each refresh, for whoever waits on it
    distribution_shown = Signal(str)  # the feature whose distributions are now drawn
    drift_evaluated = Signal(str, float, float)  # endpoint, epoch seconds, share drifted
    _update_arrived = Signal(object)  # emitted on the drift thread; queued to this one

    def __init__(self, db_path: str | Path | None = None, parent: QWidget | None = None, *,
                 theme: Theme = DARK) -> None:
        super().__init__(parent)
        self.db_path = Path(db_path) if db_path else None
        self._relays: list[_Relay] = []
        self.queries = JobRunner(self)  # history reads; the report has its own worker
        self._query: Job | None = None
        self._refresh_again = False
        # Distributions are read on the same worker, one at a time: the feature being read
        # and the one asked for since (a user stepping through rows skips to the last).
        self._distribution_job: Job | None = None
        self._distribution_wanted: tuple[str, str] | None = None
        self._reference_frames = ReferenceFrames()

        self.endpoint_box = QComboBox()
        self.endpoint_box.setMinimumContentsLength(30)
        self.endpoint_box.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.endpoint_box.currentIndexChanged.connect(self._on_endpoint_box_changed)
        self.reference_button = QToolButton()
        self.reference_button.setText("Reference…")
        self.reference_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.reference_button)
        menu.addAction("Data file (CSV, Parquet, JSON lines, .npy)…",
                       self._on_reference_file_chosen)
        menu.addAction("The demo's reference", self.use_demo_reference)
        self.reference_button.setMenu(menu)
        self.reference_label = QLabel("")
        self.reference_label.setStyleSheet(f"color: {theme.muted}")
        # A long line is cut at the panel's edge (the tooltip has it whole), never widening it.
        self.reference_label.setSizePolicy(QSizePolicy.Policy.Ignored,
                                           QSizePolicy.Policy.Preferred)
        self.span_box = QComboBox()
        for text, seconds in HISTORY_SPANS_S:
            self.span_box.addItem(text, seconds)
        self.span_box.setCurrentIndex(1)
        self.span_box.currentIndexChanged.connect(self.refresh)
        top = QHBoxLayout()
        top.addWidget(QLabel("Endpoint"))
        top.addWidget(self.endpoint_box, 1)
        top.addWidget(self.span_box)
        top.addWidget(self.reference_button)
        top.addWidget(self.reference_label, 1)

        self.heatmap = DriftHeatMapWidget(theme)
        self.heatmap.feature_clicked.connect(self.select_feature)
        self.table = make_feature_table()
        self.table.itemSelectionChanged.connect(self._on_table_selection_changed)
        self.distribution = DistributionPlotWidget(theme)
        self.distribution.clear_distribution("Select a feature to compare its distributions")

        self.report = DriftReportBox()
        self.report.run_button.clicked.connect(self.run_report)
        self.report.report_finished.connect(self.report_finished)
        self.report.error_occurred.connect(self.error_occurred)

        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.distribution)
        right.addWidget(self.report)
        right.setSizes([330, 300])
        # Which rows the table judged: the last N captured rows (seconds on a busy endpoint),
        # unlike the Full report's time span, so their shares can differ.
        self.evaluated_label = QLabel("")
        self.evaluated_label.setStyleSheet(f"color: {theme.muted}")
        self.evaluated_label.setWordWrap(True)
        table_side = QWidget()
        table_column = QVBoxLayout(table_side)
        table_column.setContentsMargins(0, 0, 0, 0)
        table_column.addWidget(self.evaluated_label)
        table_column.addWidget(self.table, 1)
        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(table_side)
        lower.addWidget(right)
        lower.setSizes([420, 580])
        # A taller dock grows the heat map first, until each row is a line tall and named
        # (a plain splitter gave nearly all of it to the table, the map stayed at its
        # minimum with half its rows unnamed); once the user drags the handle, theirs.
        self.splitter = _ResizedSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.heatmap)
        self.splitter.addWidget(lower)
        self.splitter.setSizes([300, 500])
        self.splitter.resized.connect(self._share_height)
        self.splitter.splitterMoved.connect(self._on_splitter_moved)
        self._user_sized = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.splitter, 1)

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
        drift reference is shown when none is."""
        endpoints, with_history = self._read(lambda s: (
            [e["uri"] for e in s.endpoints()],
            [e["uri"] for e in s.endpoints() if s.drift_reference(e["uri"]) is not None]))
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
        """Re-read the current endpoint's drift history, table and reference on a worker (a
        day of history takes most of a second); ``refreshed`` is emitted once shown."""
        endpoint = self.endpoint()
        if endpoint is None or self.db_path is None:
            self.heatmap.set_matrix(np.empty(0, dtype=np.int64), (), np.empty((0, 0)))
            self._set_table([])
            self.evaluated_label.clear()
            self.refreshed.emit()
            return
        if self._query is not None:
            self._refresh_again = True  # the answer in flight is stale: ask again after it
            return
        db, span_s = self.db_path, self.span_box.currentData()
        previous, frames = self.selected_feature(), self._reference_frames

        def work(_progress: Callable[[float], None], _cancelled: Callable[[], bool]) -> tuple:
            store = Store(db, readonly=True)  # a Store belongs to the thread that opened it
            try:
                last = store.capture_span(endpoint) if span_s is not None else None
                start_ns = last[1] - int(span_s * 1e9) if last else None
                evaluation, table = latest_evaluation(store, endpoint)
                # The distribution _set_table will show, read here and not on the GUI thread
                # (the reference and 500 decoded captures: tens of ms every refresh).
                features = [r.feature for r in table]
                feature = previous if previous in features else next(iter(features), None)
                shown = (read_distribution(store, endpoint, feature, frames) if feature
                         else None)
                return endpoint, (drift_matrix(store, endpoint, start_ns), table,
                                  get_reference(store, endpoint),
                                  evaluation_text(evaluation, table), shown)
            finally:
                store.close()

        self._query = Job(work)
        self._query.signals.finished.connect(self._on_query_finished)
        self._query.signals.failed.connect(self._on_query_failed)
        self.queries.start(self._query)

    def refreshing(self) -> bool:
        return self._query is not None

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
        """Make a CSV/Parquet/JSON-lines file the endpoint's reference; False (and an error
        line) if not."""
        try:
            reference = file_reference(path)
        except DriftError as exc:
            self.error_occurred.emit(str(exc))
            return False
        return self._set_reference(reference)

    def use_demo_reference(self) -> bool:
        return self._set_reference(demo_reference())

    def busy(self) -> bool:
        return self.report.busy()

    def run_report(self) -> Job | None:
        """Run Evidently's full report on the current endpoint's window, on the worker."""
        endpoint = self.endpoint()
        if endpoint is None or self.db_path is None:
            return None
        return self.report.run(self.db_path, endpoint)

    def cancel_report(self) -> None:
        self.report.cancel()

    def shutdown(self) -> None:
        """Stop following monitors, cancel and wait for the report; call before closing."""
        for relay in self._relays:
            relay.release()
        self._relays = []
        self.report.shutdown()
        self.queries.shutdown()

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    # -- handlers -------------------------------------------------------------------------

    def _on_endpoint_box_changed(self, _index: int) -> None:
        self.report.reset()
        self.refresh()

    def _on_query_finished(self, answer: tuple) -> None:
        self._query = None
        endpoint, (matrix, table, reference, evaluated, shown) = answer
        if self._refresh_again or endpoint != self.endpoint():
            self._refresh_again = False
            self.refresh()
            return
        self.heatmap.set_matrix(matrix.ts_ns, matrix.features, matrix.severity)
        self._share_height()  # another endpoint may have another number of rows
        self._set_table(table, shown)
        self._show_reference(reference, evaluated)
        self.refreshed.emit()

    def _on_query_failed(self, message: str) -> None:
        self._query = None
        self._refresh_again = False
        self.error_occurred.emit(message)

    def _on_update_arrived(self, update: DriftUpdate) -> None:
        self.drift_evaluated.emit(update.endpoint, update.ts_ns / 1e9,
                                  update.result.share_drifted)
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
        self._request_distribution(feature)
        self.feature_selected.emit(feature)

    def _on_distribution_finished(self, shown: ShownDistribution) -> None:
        self._distribution_job = None
        wanted, self._distribution_wanted = self._distribution_wanted, None
        if (shown.endpoint, shown.feature) == (self.endpoint(), self.selected_feature()):
            self._show_distribution(shown)
        if wanted is not None and wanted != (shown.endpoint, shown.feature):
            self._request_distribution(wanted[1])

    def _on_distribution_failed(self, message: str) -> None:
        self._distribution_job = None
        self._distribution_wanted = None
        self.error_occurred.emit(message)

    def _on_splitter_moved(self, _pos: int, _index: int) -> None:
        self._user_sized = True

    def _on_reference_file_chosen(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Drift reference", "", REFERENCE_FILE_FILTER)
        if path:
            self.set_reference_file(path)

    # -- internals ------------------------------------------------------------------------

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

    def _share_height(self) -> None:
        """The heat map's height: what names every row, within ``HEAT_MAP_SHARES`` of the
        splitter, never below its minimum or squeezing what is below under its own."""
        if self._user_sized:
            return
        sizes = self.splitter.sizes()
        total = sum(sizes)
        if total <= 0:  # not laid out yet
            return
        below = self.splitter.widget(1).minimumSizeHint().height()
        least, most = (int(total * share) for share in HEAT_MAP_SHARES)
        heat = min(max(self.heatmap.height_to_name_every_row(), least), most)
        heat = max(self.heatmap.minimumHeight(), min(heat, total - below))
        if sizes[0] != heat:
            self.splitter.setSizes([heat, total - heat])

    def _set_reference(self, reference: Reference) -> bool:
        endpoint = self.endpoint()
        if endpoint is None or self.db_path is None:
            self.error_occurred.emit("choose an endpoint before setting its reference")
            return False
        try:
            store = Store(self.db_path)
            try:
                reference = set_reference(store, endpoint, reference)
            finally:
                store.close()
        except (StoreError, DriftError) as exc:
            self.error_occurred.emit(str(exc))
            return False
        self._show_reference(reference)
        self.refresh()  # the distributions are now against the new reference
        return True

    def _show_reference(self, reference: Reference | None, evaluated: str | None = None
                        ) -> None:
        """The reference, and (``evaluated``, when given) which rows the table judged."""
        text = f"against {reference.describe()}" if reference else "no reference: choose one"
        self.reference_label.setText(text)
        self.reference_label.setToolTip(text)
        if evaluated is not None:
            self.evaluated_label.setText(evaluated)
            self.evaluated_label.setVisible(bool(evaluated))

    def _set_table(self, table: list, shown: ShownDistribution | None = None) -> None:
        """Show ``table`` and select the user's feature, else the most drifted one. Its
        distribution is ``shown`` when the refresh read it, else it is asked for."""
        previous = self.selected_feature()
        self._rows = [r.feature for r in table]
        self.table.blockSignals(True)
        fill_feature_table(self.table, [(r.feature, r.method, r.score, r.threshold,
                                         r.drifted) for r in table])
        self.table.blockSignals(False)
        feature = previous if previous in self._rows else next(iter(self._rows), None)
        if feature is None:
            self.distribution.clear_distribution("No drift evaluated yet")
            return
        if self.selected_feature() != feature:
            self.table.blockSignals(True)
            self.table.selectRow(self._rows.index(feature))
            self.table.blockSignals(False)
        if shown is not None and (shown.endpoint, shown.feature) == (self.endpoint(), feature):
            self._show_distribution(shown)
        else:  # the user picked another feature while the refresh was being read
            self._request_distribution(feature)

    def _request_distribution(self, feature: str) -> None:
        """Read ``feature``'s distribution on the worker; the one drawn stays until it is
        in (a read on this thread froze the window for tens of ms per click)."""
        endpoint = self.endpoint()
        if endpoint is None or self.db_path is None:
            return
        if self._distribution_job is not None:
            self._distribution_wanted = (endpoint, feature)  # asked for when this one lands
            return
        db, frames = self.db_path, self._reference_frames

        def work(_progress: Callable[[float], None], _cancelled: Callable[[], bool]
                 ) -> ShownDistribution:
            store = Store(db, readonly=True)
            try:
                return read_distribution(store, endpoint, feature, frames)
            finally:
                store.close()

        self._distribution_job = Job(work)
        self._distribution_job.signals.finished.connect(self._on_distribution_finished)
        self._distribution_job.signals.failed.connect(self._on_distribution_failed)
        self.queries.start(self._distribution_job)

    def _show_distribution(self, shown: ShownDistribution) -> None:
        feature, comparison = shown.feature, shown.comparison
        dist = comparison.distribution if comparison is not None else None
        if comparison is None:  # the workspace could not be read: the error line says why
            self.error_occurred.emit(shown.error or f"cannot read {self.db_path}")
            self.distribution.clear_distribution(f"{feature}: could not read the workspace")
        elif dist is None:
            self.distribution.clear_distribution(comparison.title)
        elif dist.kind is Kind.NUMERICAL and dist.edges is not None:
            self.distribution.set_numerical(feature, dist.edges, dist.reference, dist.current,
                                            comparison.title)
        else:
            self.distribution.set_categorical(feature, dist.categories or (), dist.reference,
                                              dist.current, comparison.title)
        self.distribution_shown.emit(feature)


__all__ = ["DriftPanel", "DriftShareWidget", "read_share_series"]
