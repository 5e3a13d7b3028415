"""The drift panel's full-report box: runs Evidently's report of one endpoint's window on a
JobRunner worker with progress and Cancel, shows its per-column results and opens its HTML;
plus the small feature tables both share. Thread: GUI only; the report runs on the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.drift_history import severity
from app.core.drift_report import DriftCancelled
from app.core.drift_window import EndpointDrift, endpoint_report
from app.gui.jobs import Job, JobRunner

TABLE_COLUMNS = ("Feature", "Method", "Score", "Threshold", "Drifted")
REPORT_WINDOWS_S = (("last 1 min", 60.0), ("last 5 min", 300.0), ("last 15 min", 900.0),
                    ("last hour", 3600.0), ("last day", 86400.0))
DRIFTED_COLOR = QColor("#e0663b")
CANCELLED_MESSAGE = str(DriftCancelled("drift report cancelled"))

Row = tuple[str, str | None, float | None, float | None, bool]  # feature, method, score, ...


def _number(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{value:.4g}"


def make_feature_table() -> QTableWidget:
    table = QTableWidget(0, len(TABLE_COLUMNS))
    table.setHorizontalHeaderLabels(list(TABLE_COLUMNS))
    table.verticalHeader().hide()
    table.verticalHeader().setDefaultSectionSize(22)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    return table


def fill_feature_table(table: QTableWidget, rows: Sequence[Row]) -> None:
    """Show ``rows``, reusing the items already there and changing only what differs (a
    refresh of the same endpoint changes a few scores), then size the columns once: under
    ResizeToContents each new item made the header measure its column again, 30 ms per fill
    on the GUI thread, every refresh."""
    header = table.horizontalHeader()
    modes = [header.sectionResizeMode(j) for j in range(table.columnCount())]
    header.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    try:
        table.setRowCount(len(rows))
        for i, (feature, method, score, threshold, drifted) in enumerate(rows):
            cells = (feature, method or "not tested", _number(score), _number(threshold),
                     "yes" if drifted else "no")
            colour = DRIFTED_COLOR if drifted else None
            for j, text in enumerate(cells):
                item = table.item(i, j)
                if item is None:
                    item = QTableWidgetItem(text)
                    item.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
                    table.setItem(i, j, item)
                elif item.text() != text:
                    item.setText(text)
                if item.data(Qt.ItemDataRole.ForegroundRole) != colour:
                    item.setData(Qt.ItemDataRole.ForegroundRole, colour)
    finally:
        # Back to the modes it had: one delayed pass measures each column's contents.
        for j, mode in enumerate(modes):
            header.setSectionResizeMode(j, mode)


class DriftReportBox(QWidget):
    report_finished = Signal(object)  # EndpointDrift
    error_occurred = Signal(str)  # one line; a cancelled report is not an error

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = JobRunner(self)
        self._job: Job | None = None
        self.last_report: EndpointDrift | None = None
        self.window_box = QComboBox()
        for text, seconds in REPORT_WINDOWS_S:
            self.window_box.addItem(text, seconds)
        self.window_box.setCurrentIndex(1)
        self.window_box.setToolTip("Captures up to the endpoint's last one")
        self.run_button = QPushButton("Full report (Evidently)")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.open_button = QPushButton("Open HTML")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self.open_html)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(8)
        self.label = QLabel("Full report: not run")
        self.label.setWordWrap(True)
        self.table = make_feature_table()
        bar = QHBoxLayout()
        for w in (self.window_box, self.run_button, self.cancel_button, self.open_button):
            bar.addWidget(w)
        bar.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.progress)
        layout.addWidget(self.label)
        layout.addWidget(self.table, 1)

    def busy(self) -> bool:
        return self._job is not None

    def reset(self) -> None:
        """Forget the shown report (another endpoint was chosen)."""
        self.last_report = None
        self.open_button.setEnabled(False)
        self.table.setRowCount(0)
        if self._job is None:
            self.label.setText("Full report: not run")
            self.progress.setValue(0)  # a finished report's full bar would say one ran

    def run(self, db_path: str | Path, endpoint: str) -> Job | None:
        """Start the report of ``endpoint``'s chosen window; None while one is running."""
        if self._job is not None:
            return None
        window_s = float(self.window_box.currentData())

        def work(progress: Callable[[float], None], cancelled: Callable[[], bool]
                 ) -> EndpointDrift:
            return endpoint_report(db_path, endpoint, window_s, progress=progress,
                                   cancelled=cancelled)

        job = Job(work)
        job.signals.progressed.connect(self._on_job_progressed)
        job.signals.finished.connect(self._on_job_finished)
        job.signals.failed.connect(self._on_job_failed)
        self._job = job
        self.progress.setValue(0)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.label.setText(f"Full report of {endpoint}: running…")
        self.runner.start(job)
        return job

    def cancel(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.label.setText("Full report: cancelling…")

    def open_html(self) -> None:
        path = self.last_report.html_path if self.last_report else None
        if path is not None and path.exists():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))

    def shutdown(self) -> None:
        self.runner.shutdown()

    def _on_job_progressed(self, fraction: float) -> None:
        self.progress.setValue(int(fraction * 1000))

    def _on_job_finished(self, result: EndpointDrift) -> None:
        self._idle()
        self.last_report = result
        tested = result.result.tested
        drifted = sum(c.drifted for c in tested)
        self.label.setText(
            f"Full report (Evidently) of {result.window.endpoint}: {drifted} of {len(tested)} "
            f"columns drifted (share {result.result.share_drifted:.2f}); "
            f"{result.result.rows_current} rows against {result.result.rows_reference}")
        columns = sorted(result.result.columns, key=lambda c: (
            np.nan_to_num(-severity(c.method, c.score, c.threshold), nan=np.inf), c.name))
        fill_feature_table(self.table, [(c.name, c.method, c.score, c.threshold, c.drifted)
                                        for c in columns])
        self.open_button.setEnabled(result.html_path is not None)
        self.report_finished.emit(result)

    def _on_job_failed(self, message: str) -> None:
        cancelled = self._job is not None and self._job.is_cancelled()
        self._idle()
        if cancelled or message == CANCELLED_MESSAGE:
            self.label.setText("Full report: cancelled")
            return
        self.label.setText(f"Full report failed: {message}")
        self.error_occurred.emit(message)

    def _idle(self) -> None:
        self._job = None
        self.progress.setValue(self.progress.maximum())
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
