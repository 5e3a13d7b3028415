"""The replay panel: a filterable failure list, a version picker, run with progress and cancel,
a results grid coloured by verdict, a side-by-side view of one case, and saved replays to
reopen. Thread: GUI; selecting cases, replaying, reopening, exporting and reading an added
file run on its own worker pool.

Runs alone for preview: ``ReplayPanel(db_path, versions=[...]).show()``. It opens its own
short-lived Store connections on the worker thread, so it shares nothing with the window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelectionModel, Qt, Signal
from PySide6.QtGui import QCloseEvent, QKeySequence, QResizeEvent, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QCompleter,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.core.domain import CaptureStatus, UriError
from app.core.references import input_names_of
from app.core.replay import (
    Case,
    Criteria,
    ReplayResult,
    Selection,
    replay,
    select_cases,
    with_endpoint_thresholds,
)
from app.core.replay_export import write_cases_csv
from app.core.replay_store import load_replay, save_replay
from app.core.replay_targets import ReplayError, Target, open_target
from app.core.store import Store, StoreError
from app.core.versions import VersionError, inspect_onnx, registered, verify_unchanged
from app.gui.jobs import Job, JobRunner
from app.gui.replay_models import FailureTableModel, ResultTableModel, feature_names
from app.gui.replay_summary import (
    export_failed_html,
    exported_html,
    refusal_html,
    result_html,
)
from app.gui.replay_unopened import Unopened
from app.gui.replay_versions import VersionListWidget
from probes.base import ProbeError
from probes.onnx_local import available_providers
from widgets.case_view import CaseViewWidget
from widgets.flow_layout import FlowLayout

log = logging.getLogger(__name__)

ALL = ""


_PICKED = -1  # the time filter's entry for a range picked on a plot or an incident
_COLUMN_CHARS = 24  # a results column is at most this many average characters wide
_SAVED_WIDE = "#99 9999 cases"  # the saved-replay box is at least this wide
# Widening the grid to its columns after a replay leaves the failure list and the case view
# at least this wide (the case view's image or features beside its bars and answers).
_LIST_MIN_PX = 180
_CASE_MIN_PX = 500


def _one_line_rows(view: QTableView) -> None:
    """Rows one line of text tall (the style's default is ~30 px): in a 430 px dock the
    tables show a third more rows, and three versions' answers fit under the bars."""
    row_px = view.fontMetrics().height() + 6
    header = view.verticalHeader()
    header.setMinimumSectionSize(row_px)
    header.setDefaultSectionSize(row_px)


class ReplayPanel(QWidget):
    failures_loaded = Signal(int)  # failures listed
    replay_finished = Signal(object)  # ReplayResult (``replay_id`` None if not saved)
    replay_failed = Signal(str)  # one line for the status bar
    exported = Signal(object)  # the Path an Export CSV… wrote
    case_selected = Signal(object)  # capture id (int) of the case shown, or None
    busy_changed = Signal(bool)

    def __init__(self, db_path: str | Path, parent: QWidget | None = None, *,
                 versions: Sequence[str | Path] = (), provider: str = "cpu",
                 criteria: Criteria | None = None, batch_size: int | None = None) -> None:
        super().__init__(parent)
        self.db_path = Path(db_path)
        self._initial_provider = provider
        self.criteria = criteria or Criteria()
        self.batch_size = batch_size
        self.runner = JobRunner(self)
        self._job: Job | None = None
        self._controls: list[Case] = []
        self._loaded = False  # whether Load failures has answered once
        # The filters the failure list was loaded with: a replay records these, not whatever
        # the fields say when Replay is pressed.
        self._listed_by: Selection | None = None
        self._cancellable = False  # whether the job running stops when asked
        self.result: ReplayResult | None = None
        self._input_names: dict[str, tuple[str, ...]] = {}  # per endpoint, for the case view
        self._build()
        self.refresh_versions(extra=[str(v) for v in versions])
        self.refresh_endpoints()

    # -- layout ---------------------------------------------------------------------------

    def _build(self) -> None:
        self.endpoint_box = QComboBox()
        # Endpoint URIs are long: the box shrinks to fit a docked panel, its list shows them
        # whole, and the chosen one is in its tooltip.
        self.endpoint_box.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.endpoint_box.setMinimumContentsLength(24)
        self.endpoint_box.currentIndexChanged.connect(
            lambda _: self.endpoint_box.setToolTip(self.endpoint_box.currentData() or ""))
        self.kind_box = QComboBox()
        self.kind_box.addItem("all failures", ALL)
        for s in CaptureStatus:
            if s is not CaptureStatus.OK:
                self.kind_box.addItem(s.value.replace("_", " "), s.value)
        self.label_edit = QLineEdit(placeholderText="label")
        self.label_edit.setMinimumWidth(self.label_edit.fontMetrics().horizontalAdvance(
            "label") + 24)
        self.label_edit.setMaximumWidth(90)
        self.version_edit = QLineEdit(placeholderText="made by version")
        self.version_edit.setMinimumWidth(self.version_edit.fontMetrics().horizontalAdvance(
            "made by version") + 24)
        self.version_edit.setMaximumWidth(160)
        self.version_edit.setToolTip("only captures made by this model version (as the "
                                     "model reported it); suggestions from the endpoints")
        self.window_box = QComboBox()
        for text, seconds in (("any time", 0), ("last 5 min", 300), ("last hour", 3600),
                              ("last day", 86400)):
            self.window_box.addItem(text, seconds)
        self.window_box.setMinimumContentsLength(len("picked range"))
        self._range: tuple[int | None, int | None] = (None, None)
        self.limit_spin = QSpinBox(minimum=1, maximum=100_000, value=1000, prefix="max ")
        self.controls_spin = QSpinBox(minimum=0, maximum=100_000, value=200,
                                      suffix=" controls")
        self.load_button = QPushButton("Load failures")
        self.load_button.clicked.connect(self.load_failures)
        # Rows that wrap: in a window of 1280 px the docked panel is narrower than one row.
        filters = FlowLayout()
        for w in (self.endpoint_box, self.kind_box, self.label_edit, self.version_edit,
                  self.window_box, self.limit_spin, self.controls_spin, self.load_button):
            filters.addWidget(w, 1 if w is self.endpoint_box else 0)

        self.failure_model = FailureTableModel()
        self.failure_view = QTableView()
        self.failure_view.setModel(self.failure_model)
        self.failure_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.failure_view.verticalHeader().setVisible(False)
        _one_line_rows(self.failure_view)
        self.failure_count = QLabel("no failures loaded")
        self.failure_count.setWordWrap(True)  # else its length sets the column's minimum
        self.failure_count.setToolTip("select rows to replay only those")

        self.version_list = VersionListWidget()
        self.add_button = QPushButton("Add ONNX…")
        self.add_button.clicked.connect(self._on_add_button_clicked)
        self.provider_box = QComboBox()
        self.provider_box.setToolTip("onnxruntime provider for the ONNX versions; one that "
                                     "cannot start is reported, never replaced by CPU")
        for name in available_providers():
            self.provider_box.addItem(name, name)
        at = self.provider_box.findData(self._initial_provider)
        self.provider_box.setCurrentIndex(max(0, at))
        self.run_button = QPushButton("Replay")
        self.run_button.clicked.connect(self.run_replay)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.saved_box = QComboBox()
        self.saved_box.setMinimumContentsLength(len(_SAVED_WIDE))  # widened to its entries
        self.saved_box.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.open_button = QPushButton("Open")
        self.open_button.clicked.connect(
            lambda: self.saved_box.currentData() is not None
            and self.open_replay(int(self.saved_box.currentData())))
        self.open_button.setEnabled(False)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setToolTip("every case of the replay shown, one row each, with each "
                                      "version's class, confidence, latency and verdict")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self._on_export_clicked)
        saved = QWidget()  # kept on one line when the row wraps
        saved_row = QHBoxLayout(saved)
        saved_row.setContentsMargins(0, 0, 0, 0)
        for w in (QLabel("saved:"), self.saved_box, self.open_button, self.export_button):
            saved_row.addWidget(w)
        runbar = FlowLayout()
        for w in (self.add_button, self.provider_box, self.run_button, self.cancel_button,
                  self.progress, saved):
            runbar.addWidget(w, 1 if w is self.progress else 0)

        self.result_model = ResultTableModel()
        self.result_view = QTableView()
        self.result_view.setModel(self.result_model)
        self.result_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.result_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.result_view.verticalHeader().setVisible(False)
        _one_line_rows(self.result_view)
        # Fitting columns measures cells row by row: 1,000 rows (Qt's default) took 143 ms
        # of the GUI thread on a 10,000-case replay, 200 rows take 28 ms.
        self.result_view.horizontalHeader().setResizeContentsPrecision(200)
        # A long version name in a capped column (``_on_replay_done``) keeps its start and
        # its end, where names of one model's versions differ ("…_retrained_v17").
        self.result_view.horizontalHeader().setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.result_view.selectionModel().currentRowChanged.connect(
            lambda current, _previous: self.show_case(current.row()))
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.case_view = CaseViewWidget()

        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(self.failure_view, 1)
        lv.addWidget(self.failure_count)
        lv.addWidget(QLabel("Versions (bisect order):"))
        lv.addWidget(self.version_list)
        # Side by side: the panel is docked under the plots, wide and short. The filters and
        # the per-version summary span the width above, so no column is as wide as they are.
        split = QSplitter(Qt.Orientation.Horizontal)
        for column, stretch in ((left, 3), (self.result_view, 5), (self.case_view, 4)):
            split.addWidget(column)
            split.setStretchFactor(split.count() - 1, stretch)
        split.setChildrenCollapsible(False)
        self._split = split
        self._split_sized = False
        # Keys, while the panel has focus: Enter in a filter field lists the failures,
        # Ctrl+Enter replays them, Esc cancels what is running.
        for edit in (self.label_edit, self.version_edit):
            edit.returnPressed.connect(self.load_failures)
        for keys, slot, button in (("Ctrl+Return", self.run_replay, self.run_button),
                                   ("Escape", self.cancel, self.cancel_button)):
            shortcut = QShortcut(QKeySequence(keys), self, slot)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            button.setToolTip(QKeySequence(keys).toString(QKeySequence.SequenceFormat.NativeText))
        self.load_button.setToolTip("Enter in the label or version field")
        delete = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.version_list,
                           self.remove_added_version)
        # After construction: PySide6 6.11 ignores ``context=`` given to the constructor, and
        # a window-wide Delete collides with the Versions panel's, so neither ever fires.
        delete.setContext(Qt.ShortcutContext.WidgetShortcut)
        layout = QVBoxLayout(self)
        layout.addLayout(runbar)
        layout.addLayout(filters)
        layout.addWidget(self.summary)
        layout.addWidget(split, 1)

    # -- versions and endpoints -----------------------------------------------------------

    def _with_store(self, fn: Callable[[Store], Any]) -> Any:
        store = Store(self.db_path)
        try:
            return fn(store)
        finally:
            store.close()

    def refresh_versions(self, extra: Sequence[str] = ()) -> None:
        """Registered versions (registry order) then ``extra`` locations, all checked;
        registered ones removed since are dropped from the list."""
        self.version_list.refresh(self._with_store(registered), extra)

    @property
    def provider(self) -> str:
        return self.provider_box.currentData() or "cpu"

    def checked_versions(self) -> list[tuple[str, str]]:
        """(location, name) of the versions to replay on, in list order."""
        return self.version_list.checked()

    def refresh_endpoints(self) -> None:
        current = self.endpoint_box.currentData()
        endpoints = self._with_store(lambda s: s.endpoints())
        uris = [e["uri"] for e in endpoints]
        made_by = sorted({str(e["model_version"]) for e in endpoints if e["model_version"]})
        completer = QCompleter(made_by, self.version_edit)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.version_edit.setCompleter(completer)
        self.endpoint_box.clear()
        self.endpoint_box.addItem("all endpoints", ALL)
        for uri in uris:
            self.endpoint_box.addItem(uri if len(uri) < 60 else uri[:59] + "…", uri)
        if current:
            self.endpoint_box.setCurrentIndex(max(0, self.endpoint_box.findData(current)))
        saved = self._with_store(lambda s: s.replays())
        self.saved_box.clear()
        for r in saved:
            self.saved_box.addItem(f"#{r['id']} {r['cases']} cases"
                                   f"{' (cancelled)' if r['cancelled'] else ''}", r["id"])
            self.saved_box.setItemData(self.saved_box.count() - 1,
                                       self.saved_box.itemText(self.saved_box.count() - 1),
                                       Qt.ItemDataRole.ToolTipRole)
        # As wide as its longest entry, so "#1 5038 cases (cancelled)" is not cut to "(cance".
        self.saved_box.setMinimumContentsLength(max(
            [len(_SAVED_WIDE)] + [len(self.saved_box.itemText(i))
                                  for i in range(self.saved_box.count())]))
        self.open_button.setEnabled(bool(saved) and not self.busy())

    def remove_added_version(self) -> None:
        """Drop the current version from the list if it was added here (registered ones are
        removed in the Versions panel)."""
        item = self.version_list.currentItem()
        if item is None:
            return
        if self.version_list.is_registered(item):
            self.replay_failed.emit(f"{item.text()} is registered: remove it in the Versions "
                                    "panel, or untick it")
            return
        self.version_list.remove(item)

    def add_version_file(self, path: str | Path) -> Job:
        """Add an ONNX file to the list (not to the registry) once it reads as a model by the
        rule registering uses (``inspect_onnx``), else refuse it with the reason: a corrupt
        file would otherwise be found out only when a replay opens it. On the worker: it
        parses and hashes the whole file. Queued behind a running job, and not one itself,
        so Cancel and the busy state stay the replay's."""
        location = str(path)

        def work(progress, cancelled) -> None:
            inspect_onnx(location)

        job = Job(work)
        job.signals.finished.connect(lambda _: self.refresh_versions(extra=[location]))
        job.signals.failed.connect(lambda message: self._refuse(message, "Cannot add"))
        return self.runner.start(job)

    def _on_add_button_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add a model version", "",
                                              "ONNX models (*.onnx)")
        if path:
            self.add_version_file(path)

    # -- work -----------------------------------------------------------------------------

    def set_time_range(self, start_ns: int | None, end_ns: int | None,
                       endpoint: str | None = None) -> None:
        """Limit the failure list to a time range (e.g. a span picked on a plot or an
        incident's window), optionally of one endpoint; None clears the limit."""
        self._range = (start_ns, end_ns)
        picked = start_ns is not None or end_ns is not None
        at = self.window_box.findData(_PICKED)
        if at >= 0:
            self.window_box.removeItem(at)
        if picked:  # its own entry: "any time" stays there to go back to
            self.window_box.addItem("picked range", _PICKED)
        if endpoint is not None:
            self.refresh_endpoints()
            self.endpoint_box.setCurrentIndex(max(0, self.endpoint_box.findData(endpoint)))
        self.window_box.setCurrentIndex(self.window_box.findData(_PICKED) if picked else 0)

    def selection(self) -> Selection:
        kind = self.kind_box.currentData()
        window_s = self.window_box.currentData()
        start_ns, end_ns = self._range if window_s == _PICKED else (None, None)
        if window_s and window_s != _PICKED:
            start_ns, end_ns = time.time_ns() - int(window_s * 1e9), None
        return Selection(endpoint=self.endpoint_box.currentData() or None,
                         kinds=(kind,) if kind else (), label=self.label_edit.text().strip()
                         or None, model_version=self.version_edit.text().strip() or None,
                         start_ns=start_ns, end_ns=end_ns, limit=self.limit_spin.value(),
                         controls=self.controls_spin.value())

    def busy(self) -> bool:
        return self._job is not None

    def _start(self, fn: Callable, on_done: Callable[[Any], None], *,
               replaying: bool = False,
               on_failed: Callable[[str], None] | None = None) -> Job | None:
        """Run ``fn`` on the worker. Only a replay (``replaying``) checks for Cancel and
        reports progress: for the other jobs Cancel stays off, and the bar keeps showing the
        replay on screen. ``on_failed`` takes the error line (default: "Replay failed")."""
        if self._job is not None:
            return None
        job = Job(fn)
        job.signals.finished.connect(lambda result: self._finish(on_done, result))
        job.signals.failed.connect(lambda message: self._on_job_failed(message, on_failed))
        self._job = job
        self._cancellable = replaying
        if replaying:
            job.signals.progressed.connect(self._on_job_progressed)
            self.progress.setValue(0)
        for w in (self.run_button, self.load_button, self.open_button, self.export_button):
            w.setEnabled(False)
        self.cancel_button.setEnabled(replaying)
        self.busy_changed.emit(True)
        self.runner.start(job)
        return job

    def _idle(self) -> None:
        self._job = None
        self._cancellable = False
        for w in (self.run_button, self.load_button):
            w.setEnabled(True)
        self.open_button.setEnabled(self.saved_box.count() > 0)
        self.export_button.setEnabled(self.result is not None)
        self.cancel_button.setEnabled(False)
        self.busy_changed.emit(False)

    def _finish(self, on_done: Callable[[Any], None], result: Any) -> None:
        self._idle()
        on_done(result)

    def _on_job_progressed(self, fraction: float) -> None:
        self.progress.setValue(int(fraction * 1000))

    def _on_job_failed(self, message: str,
                       on_failed: Callable[[str], None] | None = None) -> None:
        self._idle()
        if on_failed is not None:
            on_failed(message)
        else:
            self._refuse(message, "Replay failed")

    def _refuse(self, message: str, what: str = "Cannot replay") -> None:
        """Say why, in the summary and the status bar; a replay still shown stays, and says
        so, since Export writes it."""
        self.summary.setText(refusal_html(message, what, self.result))
        self.replay_failed.emit(message)

    def load_failures(self) -> None:
        """Select failures and controls with the current filters (on the worker)."""
        selection, path = self.selection(), self.db_path

        def work(progress, cancelled) -> list[Case]:
            store = Store(path)
            try:
                return select_cases(store, selection)
            finally:
                store.close()

        self._start(work, lambda cases: self._on_failures_loaded(cases, selection.limit,
                                                                 selection))

    def _on_failures_loaded(self, cases: list[Case], limit: int | None = None,
                            selection: Selection | None = None) -> None:
        failures = [c for c in cases if not c.control]
        self._controls = [c for c in cases if c.control]
        self._loaded = True
        self._listed_by = selection
        self.failure_model.set_cases(failures)
        self.failure_count.setToolTip("select rows to replay only those")
        if not failures:
            self.failure_count.setText("no failures match these filters")
        else:
            capped = " (the max: newest first, more may match)" if len(failures) == limit \
                else ""
            self.failure_count.setText(f"{len(failures)} failures{capped}, "
                                       f"{len(self._controls)} controls")
        self.failures_loaded.emit(len(failures))

    def run_replay(self) -> Job | None:
        """Replay the selected failures (all listed when none is selected) plus the controls
        on every checked version; the result is saved and shown."""
        if self.busy():  # Ctrl+Enter while something runs: the running job stays in charge
            return None
        rows = sorted({i.row() for i in self.failure_view.selectionModel().selectedRows()})
        failures = self.failure_model.cases
        cases = [failures[r] for r in rows] if rows else list(failures)
        if not cases:
            self._refuse("no failures match these filters" if self._loaded else
                         "no failures loaded; press Load failures first")
            return None
        versions = self.checked_versions()
        if not versions:
            self._refuse("no version checked; tick at least one")
            return None
        cases += self._controls
        path, provider, criteria = self.db_path, self.provider, self.criteria
        # What chose these cases: the filters they were listed with (the fields may have
        # changed since), not the fields as they are now.
        batch, selection = self.batch_size, self._listed_by or self.selection()
        not_saved: list[str] = []  # written by the worker before it reports the result
        model_versions: set[str | None] = set()  # the registry's, read there too
        names: dict[str, tuple[str, ...]] = {}  # each endpoint's input names, read there too

        def work(progress, cancelled) -> ReplayResult:
            targets = []
            store = Store(path)
            try:
                known = {v.name: v for v in registered(store)}
                model_versions.update(v.version for v in known.values())
                # SLOW captures are held to the SLO their endpoint was probed with, and
                # every case to the minimum confidence its endpoint was probed with.
                judged_by = with_endpoint_thresholds(criteria, store)
                names.update(input_names_of(store, {c.capture.endpoint for c in cases}))
            finally:
                store.close()
            try:
                for location, name in versions:
                    try:
                        if name in known and known[name].location == location:
                            verify_unchanged(known[name])
                        target: Target = open_target(location, provider=provider, name=name)
                    except (ReplayError, VersionError, UriError, ProbeError) as exc:
                        # One version that cannot open is that version's "no answer (why)",
                        # not the end of the replay for all the others.
                        target = Unopened(name, location, str(exc))
                    targets.append(target)
                result = replay(cases, targets, criteria=judged_by, batch_size=batch,
                                selection=selection, progress=progress, cancelled=cancelled)
            finally:
                for t in targets:
                    t.close()
            try:
                store = Store(path)
                try:
                    save_replay(store, result)
                finally:
                    store.close()
            except StoreError as exc:  # the replay is done: show it all the same
                not_saved.append(str(exc))
            return result

        asked = [name for _, name in versions]
        return self._start(work, lambda result: self._on_replay_done(
            result, not_saved[0] if not_saved else None, registered_versions=model_versions,
            input_names=names, asked=asked), replaying=True)

    def open_replay(self, replay_id: int) -> Job | None:
        path = self.db_path

        model_versions: set[str | None] = set()  # the registry's, read on the worker
        names: dict[str, tuple[str, ...]] = {}  # each endpoint's input names, read there too

        def work(progress, cancelled) -> ReplayResult:
            store = Store(path)
            try:
                model_versions.update(v.version for v in registered(store))
                result = load_replay(store, replay_id)
                names.update(input_names_of(store, {c.capture.endpoint for c in result.cases}))
                return result
            finally:
                store.close()

        return self._start(work, lambda result: self._on_reopened(
            result, registered_versions=model_versions, input_names=names))

    def _on_reopened(self, result: ReplayResult, **shown: Any) -> None:
        """A saved replay on screen, and its cases as the list: Replay then reruns these
        (the last Load's list and filters would disagree with the grid)."""
        self._on_replay_done(result, reopened=True, **shown)
        failures = [c for c in result.cases if not c.control]
        self._controls = [c for c in result.cases if c.control]
        self._loaded = True
        self._listed_by = result.selection
        self.failure_model.set_cases(failures)
        if result.selection is not None:
            self._show_filters(result.selection)
        # Short: the column is narrow, and every wrapped line is a row of the list less.
        self.failure_count.setText(f"replay #{result.replay_id}'s {len(failures)} failures, "
                                   f"{len(self._controls)} controls")
        self.failure_count.setToolTip("Replay reruns these; Load failures lists afresh; "
                                      "select rows to replay only those")

    def _show_filters(self, selection: Selection) -> None:
        """The filter fields as ``selection`` set them (a saved replay's)."""
        self.endpoint_box.setCurrentIndex(max(0, self.endpoint_box.findData(
            selection.endpoint or ALL)))
        kind = selection.kinds[0] if len(selection.kinds) == 1 else ALL
        self.kind_box.setCurrentIndex(max(0, self.kind_box.findData(kind)))
        self.label_edit.setText(selection.label or "")
        self.version_edit.setText(selection.model_version or "")
        self.limit_spin.setValue(selection.limit)
        self.controls_spin.setValue(selection.controls)
        # Its times as they were: "last hour" then is not "last hour" now.
        self.set_time_range(selection.start_ns, selection.end_ns)

    def cancel(self) -> None:
        """Ask the replay to stop: between batches, or within 50 ms while a server's call
        is under way (a silent server is not waited out). Said at once, and Cancel taken
        away, rather than leave a button that seems to do nothing."""
        if self._job is None or not self._cancellable or self._job.is_cancelled():
            return
        self._job.cancel()
        self.cancel_button.setEnabled(False)
        self.summary.setText("<b>cancelling…</b> (the finished versions are kept)")

    def export_cases(self, path: str | Path) -> Job | None:
        """Write the replay shown as CSV (see ``replay_export``) on the worker: 50,000 cases
        took 0.6 s, a frozen window. ``exported`` brings the path; a refusal is shown, and
        sent as ``replay_failed``. None when there is nothing to export or a job runs."""
        result = self.result
        if result is None:
            return None

        def work(progress, cancelled) -> Path:
            return write_cases_csv(result, path)

        return self._start(work, lambda out: self._on_exported(out, len(result.cases)),
                           on_failed=self._on_export_failed)

    def _on_exported(self, out: Path, cases: int) -> None:
        self.summary.setText(self.summary.text() + exported_html(cases, out))
        self.exported.emit(out)

    def _on_export_failed(self, message: str) -> None:
        self.summary.setText(self.summary.text() + export_failed_html(message))
        self.replay_failed.emit(message)

    def _on_export_clicked(self) -> None:
        rid = self.result.replay_id if self.result is not None else None
        name = f"replay-{rid}.csv" if rid is not None else "replay.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Export the replay's cases", name,
                                              "CSV (*.csv)")
        if path:
            self.export_cases(path)

    def _on_replay_done(self, result: ReplayResult, not_saved: str | None = None, *,
                        reopened: bool = False,
                        registered_versions: set[str | None] | None = None,
                        input_names: dict[str, tuple[str, ...]] | None = None,
                        asked: Sequence[str] = ()) -> None:
        """``registered_versions``: the model versions the registry held, read by the job
        (to say when a SLOW failure's recording version is not there to tick);
        ``input_names``: the names of each endpoint's input values, to label a case's;
        ``asked``: the versions ticked, to name those a Cancel left unrun."""
        self.result = result
        self._input_names = input_names or {}
        self.export_button.setEnabled(True)
        self.result_model.set_result(result)
        self.result_view.resizeColumnsToContents()
        # A long version name would make its column as wide as its header, the grid's width,
        # leaving its cells colour only: capped, and elided (the header's tooltip has it).
        cap = self.result_view.fontMetrics().averageCharWidth() * _COLUMN_CHARS
        header = self.result_view.horizontalHeader()
        for c in range(self.result_model.columnCount()):
            if header.sectionSize(c) > cap:
                header.resizeSection(c, cap)
        self._fit_grid()
        self.summary.setText(result_html(result, not_saved,
                                         registered_versions=registered_versions, asked=asked))
        if not result.cancelled:  # a cancelled one leaves the bar where it stopped
            self.progress.setValue(1000)
        elif reopened:  # where a saved one stopped is not known: no bar, not the last one's
            self.progress.setValue(0)
        self.refresh_endpoints()
        self.case_view.clear()
        self.replay_finished.emit(result)

    def _fit_grid(self) -> None:
        """Widen the grid to its columns, so every version and "first failing" are in
        sight, taking from the failure list, then the case view, down to a working width
        each. Where that is not enough the grid scrolls sideways in itself."""
        view, sizes = self.result_view, self._split.sizes()
        need = (view.horizontalHeader().length() + 2 * view.frameWidth()
                + view.verticalScrollBar().sizeHint().width())
        short = need - sizes[1]
        for k, floor in ((0, _LIST_MIN_PX), (2, _CASE_MIN_PX)):
            give = max(0, min(short, sizes[k] - floor))
            sizes[k] -= give
            sizes[1] += give
            short -= give
        if sizes != self._split.sizes():
            self._split.setSizes(sizes)

    def show_case(self, row: int) -> None:
        """Show case ``row`` of the results side by side across versions."""
        if self.result is None or not 0 <= row < len(self.result.cases):
            return
        case = self.result.cases[row]
        blobs = case.capture.inputs
        array = blobs[0].to_array() if blobs else None
        width = int(array.size) if array is not None else 0
        kind = "control" if case.control else str(case.capture.status)
        title = (f"Capture {case.capture_id} · {kind} · label {case.capture.label or '-'} · "
                 f"recorded {case.capture.prediction or '-'} by "
                 f"{case.capture.model_version or '?'}")
        # A capture kept without its input still shows each version's answer or error.
        names = self._input_names.get(case.capture.endpoint, ())
        self.case_view.show_case(title, array, feature_names(width, names),
                                 self.result_model.answers(row))
        self.case_selected.emit(case.capture_id)

    def select_result_row(self, row: int) -> None:
        index = self.result_model.index(row, 0)
        self.result_view.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows)
        self.result_view.scrollTo(index)

    def heightForWidth(self, width: int) -> int:
        """The least height the panel's layout takes at ``width``. The filter rows wrap, so
        the layout has a height for each width, and a scroll area lays the panel out that
        tall: the layout's own answer is its preferred height (~810 px, the columns' size
        hints), which put the version picker and the case's answers under a 430 px dock's
        fold. Its minimum instead: the columns share what the dock gives and scroll inside
        themselves; the dock scrolls only when it is shorter than that."""
        layout = self.layout()
        return layout.totalMinimumHeightForWidth(width) if layout is not None else -1

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        # Columns in proportion once the panel has its real width (a splitter given sizes
        # before then keeps its widgets' size hints); after that the user's drags stand.
        width = self._split.width()
        if not self._split_sized and width >= 600:
            self._split_sized = True
            self._split.setSizes([int(width * f) for f in (0.2, 0.33, 0.47)])

    def shutdown(self) -> None:
        """Cancel and wait for the worker; call before the workspace closes."""
        self.runner.shutdown()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)
