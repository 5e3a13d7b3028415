"""Model versions and their handover contracts: the registry as a table, and a versions x
targets table where each cell is pass/fail with the measured figures. Thread: GUI; registering
and contract checks run on its own worker pool (each check spawns a measuring process).

Runs alone for preview: ``VersionsPanel(db_path, seed_versions=[...]).show()``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.contract import (
    LATENCY_RUNS,
    ContractError,
    ContractReport,
    ModelChanged,
    ModelUnreadable,
    NoContract,
    check_registered,
)
from app.core.contract_agent import shown_target
from app.core.store import Store
from app.core.versions import (
    CHANGED as FILE_CHANGED,
)
from app.core.versions import (
    KIND_ONNX,
    ModelVersion,
    free_name,
    register,
    registered,
    registered_with_state,
    remote_version,
    unregister,
)
from app.core.versions import (
    MISSING as FILE_MISSING,
)
from app.gui.contract_cells import (
    CELL_COLORS,
    CHANGED,
    CONTRACT_ERROR,
    EARLIER_ROLE,
    NO_CONTRACT,
    PROBLEM_TEXT,
    UNREADABLE,
    cell_item,
    cell_text,
    cell_tooltip,
    column_title,
    figure,
    header_item,
    mark_if_earlier,
    problem_kind,
)
from app.gui.jobs import Job, JobRunner

# The cell vocabulary moved to contract_cells; still importable from here, as before.
__all__ = ["CELL_COLORS", "CHANGED", "CONTRACT_ERROR", "EARLIER_ROLE", "NO_CONTRACT",
           "PROBLEM_TEXT", "UNREADABLE", "VERSION_COLUMNS", "ContractProblem", "VersionsPanel",
           "cell_text", "cell_tooltip", "column_title", "figure", "problem_kind",
           "why_no_report"]

log = logging.getLogger(__name__)

VERSION_COLUMNS = ("name", "version", "kind", "parameters", "opset", "producer", "size",
                   "sha256", "signature / location")


class ContractProblem(str):
    """Why a version has no contract report: the reason, as a plain ``str`` (what
    ``contracts_checked`` has always carried), with ``kind`` (NO_CONTRACT, CONTRACT_ERROR,
    UNREADABLE or CHANGED) saying whether that is a choice or a mistake."""

    kind: str

    def __new__(cls, reason: str, kind: str) -> ContractProblem:
        problem = super().__new__(cls, reason)
        problem.kind = kind
        return problem


def why_no_report(error: ContractError) -> ContractProblem:
    """Sort a failed check: no contract beside the model (a choice), or a model file or
    contract that cannot be used (a mistake), by the kind of error check_registered raised."""
    kind = (UNREADABLE if isinstance(error, ModelUnreadable)
            else CHANGED if isinstance(error, ModelChanged)
            else NO_CONTRACT if isinstance(error, NoContract) else CONTRACT_ERROR)
    return ContractProblem(str(error), kind)


class VersionsPanel(QWidget):
    versions_changed = Signal()
    contracts_checked = Signal(object)  # {version name: ContractReport | str (why none)}
    version_checked = Signal(str)  # one version's report is in the table (its name)
    # (check number, version name, ContractReport | str): emitted on the worker, queued here.
    _report_arrived = Signal(int, str, object)
    error_occurred = Signal(str)  # one line for the status bar

    def __init__(self, db_path: str | Path, parent: QWidget | None = None, *,
                 targets: Sequence[str] = ("cpu", "cuda"),
                 seed_versions: Sequence[str | Path] = (), runs: int = LATENCY_RUNS) -> None:
        super().__init__(parent)
        self.db_path = Path(db_path)
        self.runs = runs
        # Two: a registration must not queue behind a contract check of several minutes.
        self.runner = JobRunner(self, max_threads=2)
        self._job: Job | None = None
        self.reports: dict[str, ContractReport | str] = {}
        self._checked_sha: dict[str, str | None] = {}  # the file each report measured
        # Which check each cell's result came from ((name, target), target None for a
        # version's problem), and when each check started: a cell from a check before the
        # latest is shown dimmed, with that time, so a cancelled check's table never passes
        # off an older verdict as this one's.
        self._check_number = 0
        self._check_times: dict[int, datetime] = {}
        self._cell_check: dict[tuple[str, str | None], int] = {}
        self._checked_sha_asked: dict[str, str | None] = {}  # the running check's files
        self._report_arrived.connect(self._on_report_arrived)
        self.versions: list[ModelVersion] = []

        self.table = QTableWidget(0, len(VERSION_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(VERSION_COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.contract_table = QTableWidget(0, 0)
        self.contract_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.contract_table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.Stretch)
        self.targets_edit = QLineEdit(",".join(targets))
        self.targets_edit.setToolTip("cpu, cuda, … or agent+http://HOST:PORT, comma-separated")
        self.add_button = QPushButton("Add ONNX…")
        self.add_button.clicked.connect(self._on_add_button_clicked)
        self.add_endpoint_button = QPushButton("Add endpoint…")
        self.add_endpoint_button.setToolTip("register a model on a server, e.g. "
                                            "v2+http://HOST:8000/models/NAME/versions/2 or "
                                            "tfserving+http://HOST:8501/NAME")
        self.add_endpoint_button.clicked.connect(self._on_add_endpoint_clicked)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Unregister the selected versions (Delete); the files "
                                      "stay and saved replays keep their results")
        self.remove_button.clicked.connect(self.remove_selected)
        # Set after construction: PySide6 6.11 ignores context= in the constructor, and a
        # window-wide Delete collides with the Replay panel's (neither fires).
        delete = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.table,
                           self.remove_selected)
        delete.setContext(Qt.ShortcutContext.WidgetShortcut)
        self.check_button = QPushButton("Check contracts")
        self.check_button.clicked.connect(self.check_contracts)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("stop after the version being measured")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_check)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = QLabel("")
        bar = QHBoxLayout()
        for w in (self.add_button, self.add_endpoint_button, self.remove_button,
                  QLabel("targets:"), self.targets_edit, self.check_button,
                  self.cancel_button, self.progress):
            bar.addWidget(w)
        bar.setStretch(4, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.contract_table)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(split, 1)
        layout.addWidget(self.status)
        if seed_versions:
            store = Store(self.db_path)
            try:
                if not registered(store):
                    for v in seed_versions:
                        register(store, str(v))
            finally:
                store.close()
        self.refresh()

    def targets(self) -> list[str]:
        return [t.strip() for t in self.targets_edit.text().split(",") if t.strip()]

    def refresh(self) -> None:
        store = Store(self.db_path)
        try:
            # Sizes and times only, on this thread: a file touched since with the same size
            # is hashed by the contract check, on its worker, which says so there.
            with_state = registered_with_state(store, hash_when_unsure=False)
        finally:
            store.close()
        self.versions = [v for v, _ in with_state]
        states = [state for _, state in with_state]
        # A report measured another file than the one now under its name (re-registered,
        # replaced): it says nothing about this one.
        now = {v.name: v.sha256 for v in self.versions}
        for name in list(self.reports):
            if name not in now or now[name] != self._checked_sha.get(name):
                self._forget(name)
        self.table.setRowCount(len(self.versions))
        for r, v in enumerate(self.versions):
            cells = (v.name, v.version or "", v.kind, "" if v.parameters is None else
                     f"{v.parameters:,}", "" if v.opset is None else str(v.opset),
                     v.producer or "", "" if v.size_bytes is None else f"{v.size_bytes:,} B",
                     (v.sha256 or "")[:12], v.signature() or v.location)
            state = {FILE_CHANGED: "changed since registered: register it again",
                     FILE_MISSING: "file missing"}.get(states[r] or "")
            for c, text in enumerate(cells):
                item = QTableWidgetItem(f"⚠ {text} [{state}]" if state and c == 0 else text)
                item.setToolTip(f"{v.location}: {state}" if state else
                                v.sha256 if c == 7 and v.sha256 else v.location)
                if state and c == 0:
                    bold = item.font()
                    bold.setBold(True)
                    item.setFont(bold)
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        self._fill_contract_table()

    def _forget(self, name: str) -> None:
        self.reports.pop(name, None)
        self._checked_sha.pop(name, None)
        for key in [k for k in self._cell_check if k[0] == name]:
            self._cell_check.pop(key)

    def _fill_contract_table(self) -> None:
        # Columns by the target as a report shows it (an agent's without credentials).
        targets = list(dict.fromkeys(shown_target(t) for t in self.targets()))
        for report in self.reports.values():  # results stay in sight when the field changes
            if not isinstance(report, str):
                targets += [t.target for t in report.targets if t.target not in targets]
        self.contract_table.clear()
        self.contract_table.setRowCount(len(self.versions))
        self.contract_table.setColumnCount(len(targets))
        for c, target in enumerate(targets):
            self.contract_table.setHorizontalHeaderItem(c, header_item(target))
        self.contract_table.setVerticalHeaderLabels([v.name for v in self.versions])
        for r, v in enumerate(self.versions):
            report = self.reports.get(v.name)
            for c, target in enumerate(targets):
                item = cell_item(v, report, target)
                if report is not None and v.kind == KIND_ONNX and item.text() != "not checked":
                    mark_if_earlier(item, v.name, None if isinstance(report, str) else target,
                                    cell_check=self._cell_check,
                                    check_number=self._check_number,
                                    check_times=self._check_times)
                self.contract_table.setItem(r, c, item)

    def from_earlier_check(self, version: str, target: str) -> bool:
        """Whether the cell of ``version`` on ``target`` shows a result of a check before the
        latest (dimmed)."""
        report = self.reports.get(version)
        key = (version, None if isinstance(report, str) else target)
        number = self._cell_check.get(key)
        return number is not None and number < self._check_number

    def cell_status(self, version: str, target: str) -> str | None:
        """The verdict shown for one version on one target (None when not checked)."""
        report = self.reports.get(version)
        if report is None or isinstance(report, str):
            return None
        return next((t.status for t in report.targets if t.target == target), None)

    def problem(self, version: str) -> str | None:
        """Why ``version`` has no contract report: NO_CONTRACT, CONTRACT_ERROR, UNREADABLE or
        CHANGED (None when it has one, or was not checked)."""
        report = self.reports.get(version)
        return problem_kind(report) if isinstance(report, str) else None

    def add_version(self, location: str | Path) -> Job:
        """Register an ONNX file (named by its stem, or stem@folder when another file has
        that name) or a server's model (``v2+http://HOST:PORT/models/NAME[/versions/V]``).
        On the worker: describing a file reads and hashes all of it."""
        text = str(location).strip()

        def add(store: Store) -> str:
            taken = {v.name: v.location for v in registered(store)}
            if "://" in text:  # named from its URI: NAME@V, or NAME@V@HOST:PORT when taken
                remote = remote_version(text)
                natural, where = remote.name, remote.location
            else:
                natural, where = Path(text).stem, str(Path(text).resolve())
            name = free_name(natural, where, taken)
            added = register(store, text, name)
            if name != natural:
                return f"registered as {added.name}: {natural} is another model's name"
            return f"registered {added.name}"

        return self._change_registry(add)

    def _change_registry(self, change: Callable[[Store], str]) -> Job:
        """Apply ``change`` to the registry on the worker; then the table is read again and
        ``change``'s line shown, or its error."""
        path = self.db_path

        def work(progress, cancelled) -> str:
            store = Store(path)
            try:
                return change(store)
            finally:
                store.close()

        job = Job(work)
        job.signals.finished.connect(self._on_registry_changed)
        job.signals.failed.connect(self._on_registry_failed)
        return self.runner.start(job)

    def _on_registry_changed(self, line: str) -> None:
        self.refresh()
        self.status.setText(line)
        self.versions_changed.emit()

    def _on_registry_failed(self, message: str) -> None:
        self.status.setText(message)
        self.error_occurred.emit(message)

    def _on_add_endpoint_clicked(self) -> None:
        uri, ok = QInputDialog.getText(
            self, "Register a model on a server",
            "Endpoint URI (v2+http://HOST:PORT/models/NAME or tfserving+http://HOST:8501/NAME):",
            text="v2+http://127.0.0.1:8000/models/NAME/versions/1")
        if ok and uri.strip():
            self.add_version(uri)

    def selected_names(self) -> list[str]:
        rows = sorted(i.row() for i in self.table.selectionModel().selectedRows())
        return [self.versions[r].name for r in rows if r < len(self.versions)]

    def remove_selected(self) -> None:
        names = self.selected_names()
        if not names:
            self.status.setText("select the versions to remove first")
            return
        for name in names:
            self._forget(name)

        def remove(store: Store) -> str:
            unregister(store, names)
            return (f"removed {', '.join(names)}; the files stay, and saved replays keep "
                    "their results")

        self._change_registry(remove)

    def _on_add_button_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Register a model version", "",
                                              "ONNX models (*.onnx)")
        if path:
            self.add_version(path)

    def busy(self) -> bool:
        return self._job is not None

    def check_contracts(self) -> Job | None:
        """Check every registered ONNX version against its contract on each target."""
        if self._job is not None:
            return None
        versions = [v for v in self.versions if v.kind == KIND_ONNX]
        targets, runs = self.targets(), self.runs
        if not targets:
            self._on_registry_failed("give at least one target to check on: cpu, cuda, … or "
                                     "agent+http://HOST:PORT")
            return None
        if not versions:
            self._on_registry_failed("no ONNX version registered to check; Add ONNX… first")
            return None
        checked_sha = {v.name: v.sha256 for v in versions}
        self._check_number += 1
        number = self._check_number
        self._check_times[number] = datetime.now()
        self._checked_sha_asked = checked_sha
        arrived = self._report_arrived

        def work(progress, cancelled) -> dict[str, ContractReport | str]:
            out: dict[str, ContractReport | str] = {}
            for k, v in enumerate(versions):
                if cancelled():
                    break
                try:
                    # Hashes the file first (on this worker: a large model takes seconds):
                    # a file changed since registration gets no verdict under its name.
                    out[v.name] = check_registered(v, targets, runs=runs)
                except ContractError as exc:
                    out[v.name] = why_no_report(exc)
                # Shown as it comes: an agent's check can take minutes per version.
                arrived.emit(number, v.name, out[v.name])
                progress((k + 1) / max(1, len(versions)))
            return out

        job = Job(work)
        job.signals.progressed.connect(lambda f: self.progress.setValue(int(f * 1000)))
        job.signals.finished.connect(lambda reports: self._on_check_finished(
            reports, checked_sha, len(versions)))
        job.signals.failed.connect(self._on_check_failed)
        self._job = job
        self.check_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText(f"checking {len(versions)} versions on {', '.join(targets)}…")
        self._fill_contract_table()  # this check's columns now; older results dimmed
        self.runner.start(job)
        return job

    def _on_report_arrived(self, number: int, name: str,
                           report: ContractReport | str) -> None:
        if number != self._check_number:
            return  # a check before the latest (cannot happen while one runs at a time)
        if self._take_report(name, report, self._checked_sha_asked.get(name), number):
            self._fill_contract_table()
            self.version_checked.emit(name)

    def _take_report(self, name: str, report: ContractReport | str, sha: str | None,
                     number: int) -> bool:
        """Put one version's report in ``reports``; False when the version was removed or
        replaced while it was being measured (the report says nothing about it now)."""
        current = {v.name: v.sha256 for v in self.versions}
        if name not in current or current[name] != sha:
            return False
        old = self.reports.get(name)
        measured = () if isinstance(report, str) else tuple(t.target for t in report.targets)
        if (isinstance(report, ContractReport) and isinstance(old, ContractReport)
                and self._checked_sha.get(name) == sha):
            # Checked again on some targets: the others' results stand, as of their check.
            report = dataclasses.replace(report, targets=tuple(
                [t for t in old.targets if t.target not in measured] + list(report.targets)))
            self._cell_check.pop((name, None), None)
        else:
            for key in [k for k in self._cell_check if k[0] == name]:
                self._cell_check.pop(key)
        self.reports[name] = report
        self._checked_sha[name] = sha
        for target in measured or (None,):
            self._cell_check[(name, target)] = number
        return True

    def cancel_check(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.cancel_button.setEnabled(False)
            self.status.setText("cancelling after the version being measured…")

    def _on_check_finished(self, reports: dict[str, ContractReport | str],
                           checked_sha: dict[str, str | None] | None = None,
                           asked: int | None = None) -> None:
        cancelled = self._job is not None and self._job.is_cancelled()
        if asked is not None and len(reports) >= asked:
            cancelled = False  # Cancel came during the last version: every result is here
        self._job = None
        self.check_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        # Each report was put in the table as it arrived (``_on_report_arrived``, queued
        # before this); nothing is merged twice.
        self._fill_contract_table()
        if not cancelled:  # a cancelled check leaves the bar where it stopped
            self.progress.setValue(1000)
        earlier = sorted({name for (name, _), n in self._cell_check.items()
                          if n < self._check_number and name in self.reports})
        self.status.setText(
            self._check_summary(reports) + ("; cancelled before the rest" if cancelled else "")
            + (f"; dimmed cells are from an earlier check ({', '.join(earlier)})"
               if earlier else ""))
        self.contracts_checked.emit(reports)

    @staticmethod
    def _check_summary(reports: dict[str, ContractReport | str]) -> str:
        """``checked 2 of 4 versions; 2 could not be checked: wine-v2 (contract error), …``:
        a version whose contract or file is broken is not one that went well."""
        broken = {name: problem_kind(r) for name, r in reports.items()
                  if isinstance(r, str) and problem_kind(r) != NO_CONTRACT}
        bare = sum(isinstance(r, str) and problem_kind(r) == NO_CONTRACT
                   for r in reports.values())
        measured = len(reports) - bare - len(broken)
        text = (f"checked {measured} of {len(reports)} versions" if measured < len(reports)
                else f"checked {len(reports)} version{'s' if len(reports) != 1 else ''}")
        if bare:
            text += f"; {bare} {'has' if bare == 1 else 'have'} no contract"
        if broken:
            names = ", ".join(f"{name} ({PROBLEM_TEXT[kind]})" for name, kind in broken.items())
            text += (f"; {len(broken)} could not be checked: {names} (the cell's tooltip "
                     "says why)")
        # A limit no column held the version to is not one it met: said, as the CLI does.
        unchecked = sorted({key for r in reports.values() if isinstance(r, ContractReport)
                            for key in r.not_checked})
        if unchecked:
            text += (f"; latency limits not checked: {', '.join(unchecked)} (no such "
                     "target among the columns)")
        return text

    def _on_check_failed(self, message: str) -> None:
        self._job = None
        self.check_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.status.setText(message)
        self.error_occurred.emit(message)

    def shutdown(self) -> None:
        self.runner.shutdown(timeout_ms=60_000)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)
