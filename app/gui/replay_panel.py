"""The replay panel: a filterable, sortable failure list, a version picker, run with progress
and cancel, a results grid marked and coloured by verdict (sortable, and filtered by a
version's verdict), a side-by-side view of one case, and saved replays to reopen. Thread:
GUI; selecting cases, replaying, reopening, exporting and reading an added file run on its
own worker pool.

Runs alone for preview: ``ReplayPanel(db_path, versions=[...]).show()``. It opens its own
short-lived Store connections on the worker thread, so it shares nothing with the window.
The filter fields live in ``replay_filters``, the other widgets are built in ``replay_layout``,
and the jobs' work is done by the plain functions of ``replay_work``.
"""

from __future__ import annotations

import html
import itertools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QCloseEvent, QKeySequence, QPalette, QResizeEvent, QShortcut
from PySide6.QtWidgets import QFileDialog, QVBoxLayout, QWidget

from app.core.replay import Case, Criteria, ReplayResult, Selection
from app.core.replay_export import write_cases_csv
from app.core.store import Store
from app.core.versions import inspect_onnx, registered
from app.gui.jobs import Job, JobRunner
from app.gui.replay_filters import FailureFilters
from app.gui.replay_layout import (
    build_widgets,
    fill_filter_box,
    fill_saved_box,
    fit_columns,
    fit_failure_columns,
    sort_again,
    widen_grid,
)
from app.gui.replay_models import feature_names
from app.gui.replay_summary import export_failed_html, exported_html, refusal_html, result_html
from app.gui.replay_work import ReplayOutcome, reopen_replay, replay_and_save, select_failures

log = logging.getLogger(__name__)


class ReplayPanel(QWidget):
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
        self._mark_stale(False)
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

    def _on_version_began(self, k: int) -> None:
        if not self._versions_running:  # a late word from a replay already over
            return
        n = self._versions_running
        self.progress.setFormat(f"version {min(k, n)} of {n} \u00b7 %p%")
        self.version_started.emit(k, n)

    def _mark_stale(self, stale: bool, versions: int = 0) -> None:
        """While a replay runs, the one still on screen is the previous one: its grid and
        case greyed (and not selectable), the summary says so, and the bar says which
        version runs. It stood unmarked beside the new replay's progress."""
        if not stale:
            if self._versions_running:
                self._versions_running = 0
                self.progress.setFormat("%p%")
                self.result_view.setEnabled(True)
                self.case_view.setEnabled(True)
            return
        self._versions_running = versions
        self.progress.setFormat(f"opening {versions} version{'s' if versions > 1 else ''}"
                                " \u00b7 %p%")
        if self.result is None:
            return
        self.result_view.setEnabled(False)
        self.case_view.setEnabled(False)
        muted = self.palette().color(QPalette.ColorGroup.Disabled,
                                     QPalette.ColorRole.WindowText).name()
        name = f"#{self.result.replay_id}" if self.result.replay_id is not None else \
            "(not saved)"
        self.summary.setText(
            f"<b>Replaying\u2026</b> Below, greyed until it finishes: the previous replay, "
            f"{html.escape(name)}.<br><span style=\"color:{muted}\">"
            f"{self.summary.text()}</span>")

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
        shown = self.result_proxy.shown
        keep = (shown[0], self.result.runs[shown[1]].version) \
            if shown is not None and self.result is not None else None
        self.result = result
        self._input_names = input_names or {}
        self.export_button.setEnabled(True)
        self._shown_case = None
        self.result_model.set_result(result)
        # The filter and the sort as they were, where the new replay has that column or
        # that version's verdict: comparing two replays keeps its view.
        fill_filter_box(self.show_box, self.result_model, keep)
        self._apply_filter()
        sort_again(self.result_view)
        self.result_view.scrollToTop()
        fit_columns(self.result_view, self.result_model)
        widen_grid(self.result_view, self._split, self.failure_view)
        self.summary.setText(result_html(result, not_saved,
                                         registered_versions=registered_versions, asked=asked))
        if not result.cancelled:  # a cancelled one leaves the bar where it stopped
            self.progress.setValue(1000)
        elif reopened:  # where a saved one stopped is not known: no bar, not the last one's
            self.progress.setValue(0)
        self.refresh_endpoints()
        self.case_view.clear()
        self.replay_finished.emit(result)

    def _on_result_view_current_changed(self, current: QModelIndex,
                                        _previous: QModelIndex) -> None:
        """The case view follows the grid's current row, through the filter and the sort."""
        if self._refiltering:
            return  # the filter moved it; ``_on_show_box_changed`` settles what is shown
        case = self.result_proxy.case_at(current.row()) if current.isValid() else None
        if case is None:
            self._clear_case()
        else:
            self.show_case(case)

    def _on_show_box_changed(self, _index: int) -> None:
        self._apply_filter()

    def _apply_filter(self) -> None:
        """Show the cases the filter box chooses; the case shown stays selected where the
        filter keeps it, else the case view is cleared (Qt would make a neighbouring row
        current, unselected, and the view would show a case nobody picked)."""
        shown = self.show_box.currentData()
        keep = self._shown_case
        self._refiltering = True
        try:
            self.result_proxy.show(*(shown if shown is not None else (None, None)))
            row = self.result_proxy.row_of(keep) if keep is not None else None
            selection = self.result_view.selectionModel()
            if row is None:
                selection.clear()
            else:
                selection.setCurrentIndex(
                    self.result_proxy.index(row, 0),
                    QItemSelectionModel.SelectionFlag.ClearAndSelect
                    | QItemSelectionModel.SelectionFlag.Rows)
        finally:
            self._refiltering = False
        if keep is not None and row is None:
            self._clear_case()
        total, showing = self.result_model.rowCount(), self.result_proxy.rowCount()
        self.shown_count.setText(f"{showing} of {total}" if shown is not None else "")

    def _clear_case(self) -> None:
        if self._shown_case is not None:
            self._shown_case = None
            self.case_view.clear()
            self.case_selected.emit(None)

    def show_case(self, row: int) -> None:
        """Show case ``row`` of the results (its index in the replay's cases, whatever
        the grid's sort and filter) side by side across versions."""
        if self.result is None or not 0 <= row < len(self.result.cases):
            return
        self._shown_case = row
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
        """Select case ``row`` (its index in the replay's cases) in the grid, wherever the
        sort put it; a filter that hides it is cleared first."""
        if not 0 <= row < self.result_model.rowCount():
            return
        at = self.result_proxy.row_of(row)
        if at is None:
            self.show_box.setCurrentIndex(0)  # every case
            at = self.result_proxy.row_of(row)
        if at is None:
            return
        index = self.result_proxy.index(at, 0)
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
