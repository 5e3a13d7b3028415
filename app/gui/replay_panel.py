"""The replay panel: a filterable, sortable failure list, a version picker, run with progress
and cancel, a results grid marked and coloured by verdict (sortable, and filtered by a
version's verdict), a side-by-side view of one case, and saved replays to reopen. Thread:
GUI; selecting cases, replaying, reopening, exporting and reading an added file run on its
own worker pool.

Runs alone for preview: ``ReplayPanel(db_path, versions=[...]).show()``. It opens its own
short-lived Store connections on the worker thread, so it shares nothing with the window.
The filter fields live in ``replay_filters``, the other widgets are built in ``replay_layout``,
the jobs' work is done by the plain functions of ``replay_work``; the panel's job plumbing
(busy state, progress, Cancel) is the mixin of ``replay_jobs``, and the results grid with the
case view that follows it the mixin of ``replay_grid``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QKeySequence, QResizeEvent, QShortcut
from PySide6.QtWidgets import QFileDialog, QVBoxLayout, QWidget

from app.core.replay import Case, Criteria, ReplayResult, Selection
from app.core.replay_export import write_cases_csv
from app.core.store import Store
from app.core.versions import inspect_onnx, registered
from app.gui.jobs import Job, JobRunner
from app.gui.replay_filters import FailureFilters
from app.gui.replay_grid import ResultGridMixin
from app.gui.replay_jobs import ReplayJobsMixin
from app.gui.replay_layout import build_widgets, fill_saved_box, fit_failure_columns, sort_again
from app.gui.replay_summary import export_failed_html, exported_html
from app.gui.replay_work import ReplayOutcome, reopen_replay, replay_and_save, select_failures

log = logging.getLogger(__name__)

__all__ = ["ReplayPanel"]


class ReplayPanel(ReplayJobsMixin, ResultGridMixin, QWidget):
    failures_loaded = Signal(int)  # failures listed
    replay_finished = Signal(object)  # ReplayResult (``replay_id`` None if not saved)
    replay_failed = Signal(str)  # one line for the status bar
    exported = Signal(object)  # the Path an Export CSV… wrote
    case_selected = Signal(object)  # capture id (int) of the case shown, or None
    busy_changed = Signal(bool)
    version_started = Signal(int, int)  # a replay asks its k-th of n versions (k from 1)
    # From the worker, queued to the GUI thread: version k is being asked.
    _version_began = Signal(int)

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
        self._shown_case: int | None = None  # the case in the case view (its result index)
        self._refiltering = False  # the grid's filter is changing: its current row is ours
        self._versions_running = 0  # versions the running replay asks; 0: none runs
        self._build()
        self.refresh_versions(extra=[str(v) for v in versions])
        self.refresh_endpoints()

    # -- layout ---------------------------------------------------------------------------

    def _build(self) -> None:
        self._filters = filters = FailureFilters()
        # The fields and widgets are the panel's own attributes: the window and tests use them.
        self.endpoint_box, self.kind_box = filters.endpoint_box, filters.kind_box
        self.label_edit, self.version_edit = filters.label_edit, filters.version_edit
        self.window_box, self.limit_spin = filters.window_box, filters.limit_spin
        self.controls_spin, self.load_button = filters.controls_spin, filters.load_button
        w = build_widgets(self._initial_provider)
        self.failure_model, self.failure_view = w.failure_model, w.failure_view
        self.failure_count, self.version_list = w.failure_count, w.version_list
        self.add_button, self.provider_box = w.add_button, w.provider_box
        self.run_button, self.cancel_button = w.run_button, w.cancel_button
        self.progress, self.saved_box = w.progress, w.saved_box
        self.open_button, self.export_button = w.open_button, w.export_button
        self.result_model, self.result_view = w.result_model, w.result_view
        self.result_proxy, self.show_box, self.shown_count = (w.result_proxy, w.show_box,
                                                              w.shown_count)
        self.summary, self.case_view = w.summary, w.case_view
        self._split = w.split
        self._split_sized = False

        self.load_button.clicked.connect(self.load_failures)
        self.add_button.clicked.connect(self._on_add_button_clicked)
        self.run_button.clicked.connect(self.run_replay)
        self.cancel_button.clicked.connect(self.cancel)
        self.open_button.clicked.connect(
            lambda: self.saved_box.currentData() is not None
            and self.open_replay(int(self.saved_box.currentData())))
        self.export_button.clicked.connect(self._on_export_clicked)
        self.result_view.selectionModel().currentRowChanged.connect(
            self._on_result_view_current_changed)
        self.show_box.currentIndexChanged.connect(self._on_show_box_changed)
        self._version_began.connect(self._on_version_began)
        # Keys, while the panel has focus: Enter in a filter field lists the failures,
        # Ctrl+Enter replays them (the keypad's Enter too: Qt names it apart from Return),
        # Esc cancels what is running.
        for edit in (self.label_edit, self.version_edit):
            edit.returnPressed.connect(self.load_failures)
        for keys, slot, button in ((("Ctrl+Return", "Ctrl+Enter"), self.run_replay,
                                    self.run_button),
                                   (("Escape",), self.cancel, self.cancel_button)):
            for key in keys:
                shortcut = QShortcut(QKeySequence(key), self, slot)
                shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            button.setToolTip(QKeySequence(keys[0]).toString(
                QKeySequence.SequenceFormat.NativeText))
        self.load_button.setToolTip("Enter in the label or version field")
        delete = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.version_list,
                           self.remove_added_version)
        # After construction: PySide6 6.11 ignores ``context=`` given to the constructor, and
        # a window-wide Delete collides with the Versions panel's, so neither ever fires.
        delete.setContext(Qt.ShortcutContext.WidgetShortcut)
        layout = QVBoxLayout(self)
        layout.addLayout(w.run_row)
        layout.addLayout(filters.row)
        layout.addWidget(self.summary)
        layout.addWidget(self._split, 1)
        # Tab in reading order, top to bottom, left to right (the run bar was built after the
        # filters, so Tab from the filters went into the tables and never came back to it).
        chain = [self.add_button, self.provider_box, self.run_button, self.cancel_button,
                 self.saved_box, self.open_button, self.export_button, self.endpoint_box,
                 self.kind_box, self.label_edit, self.version_edit, self.window_box,
                 self.limit_spin, self.controls_spin, self.load_button, self.failure_view,
                 self.version_list, self.show_box, self.result_view, self.case_view.inputs,
                 self.case_view.answers]
        for a, b in itertools.pairwise(chain):
            QWidget.setTabOrder(a, b)

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
        """The endpoints to filter by and the saved replays, from the store."""
        self._filters.set_endpoints(self._with_store(lambda s: s.endpoints()))
        saved = self._with_store(lambda s: s.replays())
        # The replay on screen stays chosen (it was reset to the newest, so Open after
        # reopening #1 read "#9" beside #1's grid).
        fill_saved_box(self.saved_box, saved,
                       select=self.result.replay_id if self.result is not None else None)
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
        self._filters.set_time_range(start_ns, end_ns)
        if endpoint is not None:
            self.refresh_endpoints()
            self._filters.choose_endpoint(endpoint)

    def selection(self) -> Selection:
        return self._filters.selection()

    def load_failures(self) -> None:
        """Select failures and controls with the current filters (on the worker)."""
        selection, path = self.selection(), self.db_path

        def work(progress, cancelled) -> list[Case]:
            return select_failures(path, selection)

        self._start(work, lambda cases: self._on_failures_loaded(cases, selection.limit,
                                                                 selection))

    def _on_failures_loaded(self, cases: list[Case], limit: int | None = None,
                            selection: Selection | None = None) -> None:
        failures = [c for c in cases if not c.control]
        self._controls = [c for c in cases if c.control]
        self._loaded = True
        self._listed_by = selection
        self._list_failures(failures)
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
        # The rows' cases in the order they were listed (newest first), however the list is
        # sorted: the replay's own order stays the workspace's.
        picked = sorted({self.failure_model.case_at(i.row())
                         for i in self.failure_view.selectionModel().selectedRows()})
        failures = self.failure_model.cases
        cases = [failures[k] for k in picked] if picked else list(failures)
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
        began = self._version_began.emit  # on the worker: queued to this panel

        def work(progress, cancelled) -> ReplayOutcome:
            return replay_and_save(path, cases, versions, provider=provider, criteria=criteria,
                                   batch_size=batch, selection=selection, progress=progress,
                                   cancelled=cancelled, version_started=began)

        asked = [name for _, name in versions]
        job = self._start(work, lambda done: self._on_replay_done(
            done.result, done.not_saved, registered_versions=done.registered_versions,
            input_names=done.input_names, asked=asked), replaying=True)
        if job is not None:
            self._mark_stale(True, len(versions))
        return job

    def open_replay(self, replay_id: int) -> Job | None:
        path = self.db_path

        def work(progress, cancelled) -> ReplayOutcome:
            return reopen_replay(path, replay_id)

        return self._start(work, self._on_reopened)

    def _on_reopened(self, done: ReplayOutcome) -> None:
        """A saved replay on screen, its cases as the list and its versions ticked in its
        order: Replay then reruns it (the last Load's list and filters, or the versions
        ticked last, would disagree with the grid)."""
        result = done.result
        failures = [c for c in result.cases if not c.control]
        self._controls = [c for c in result.cases if c.control]
        self._loaded = True
        self._listed_by = result.selection
        self._list_failures(failures)
        if result.selection is not None:
            self._filters.show(result.selection)
        # Short: the column is narrow, and every wrapped line is a row of the list less.
        self.failure_count.setText(f"replay #{result.replay_id}'s {len(failures)} failures, "
                                   f"{len(self._controls)} controls")
        self.failure_count.setToolTip("Replay reruns these; Load failures lists afresh; "
                                      "select rows to replay only those")
        self.version_list.restore([(r.location, r.version) for r in result.runs])
        self._on_replay_done(result, reopened=True,
                             registered_versions=done.registered_versions,
                             input_names=done.input_names)

    def _list_failures(self, failures: list[Case]) -> None:
        """``failures`` as the list, sorted as the list was, columns fitted to them."""
        self.failure_model.set_cases(failures)
        sort_again(self.failure_view)
        fit_failure_columns(self.failure_view)

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
