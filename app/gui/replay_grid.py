"""The replay panel's results grid and the case view that follows it: a finished or reopened
replay put on screen (grid, verdict filter, summary, progress), the grid filtered by a
version's verdict with the case shown kept selected where the filter keeps it, and the case
view following the grid's current row through the filter and the sort. A mixin of
``ReplayPanel``, apart from the jobs that produce a replay and the failure list that feeds
one. Thread: GUI.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QItemSelectionModel, QModelIndex

from app.core.replay import ReplayResult
from app.gui.replay_layout import fill_filter_box, fit_columns, sort_again, widen_grid
from app.gui.replay_models import feature_names
from app.gui.replay_summary import result_html


class ResultGridMixin:
    """Shows a replay's result and keeps the case view on the grid's current case. Mixed into
    ``ReplayPanel`` (a QWidget, which sets this state up): it drives the panel's grid, verdict
    filter, summary and case view, calls its ``refresh_endpoints``, and emits its
    ``replay_finished`` and ``case_selected``."""

    # Set up, and said what each is, in ``ReplayPanel.__init__``.
    result: ReplayResult | None
    _input_names: dict[str, tuple[str, ...]]
    _shown_case: int | None
    _refiltering: bool

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
