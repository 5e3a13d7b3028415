"""The replay panel's answers to the GUI audit (/tmp/audit-gui/REPORT.md, numbers below), driven
as a user drives it, offscreen, on a real workspace with real onnxruntime sessions."""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QScrollArea,
    QStyle,
    QStyleOptionComboBox,
    QWidget,
)

from app.core.domain import figure_text
from app.core.replay_store import load_replay
from app.core.store import Store
from app.core.versions import register
from app.gui.replay_panel import ReplayPanel
from tests.replay.panel_driver import TIMEOUT_MS, load, plain, replay_now
from widgets.case_view import CaseViewWidget, VersionAnswer


def file_dialog_answers(monkeypatch, path: Path, *, save: bool = False) -> None:
    """The next file dialog returns ``path`` (Qt's dialog, not ours: a test cannot click it)."""
    name = "getSaveFileName" if save else "getOpenFileName"
    monkeypatch.setattr(QFileDialog, name, staticmethod(lambda *a, **k: (str(path), "")))


def names(panel: ReplayPanel) -> list[str]:
    return [panel.version_list.item(i).text() for i in range(panel.version_list.count())]


# -- #2a: Add ONNX… checks the file ------------------------------------------------------------

def test_add_onnx_refuses_a_file_that_is_not_a_model_and_takes_one_that_is(
        qtbot, panel, versions, tmp_path, monkeypatch):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(bytes(range(256)) * 8)
    file_dialog_answers(monkeypatch, corrupt)
    with qtbot.waitSignal(panel.replay_failed, timeout=10_000) as refused:
        panel.add_button.click()
    # The Versions panel's rule (registering reads it with onnx): the same words.
    assert f"cannot read {corrupt} as an ONNX model" in refused.args[0]
    assert plain(panel).startswith("Cannot add: cannot read")
    assert names(panel) == ["wine-v1", "wine-v2", "wine-v3"]
    good = tmp_path / "candidate.onnx"
    shutil.copy(versions[1], good)
    file_dialog_answers(monkeypatch, good)
    panel.add_button.click()
    qtbot.waitUntil(lambda: names(panel) == ["wine-v1", "wine-v2", "wine-v3", "candidate"],
                    timeout=10_000)


# -- #2b: a version that cannot open is its own "no answer" ---------------------------------------

def test_versions_that_cannot_open_are_no_answer_lines_and_the_others_run(
        qtbot, demo_db, versions, tmp_path):
    replaced, swapped = tmp_path / "replaced.onnx", tmp_path / "swapped.onnx"
    for path in (replaced, swapped):
        shutil.copy(versions[1], path)
    store = Store(demo_db)
    try:
        register(store, str(replaced))
        register(store, str(swapped))
    finally:
        store.close()
    # Replaced on disk after they were registered: by bytes that are no model, by another.
    replaced.write_bytes(b"\x00" * 64)
    shutil.copy(versions[2], swapped)
    # Given at start-up, so never checked by Add ONNX…: a corrupt file, and a server's URI
    # that names no model (no replay target takes it).
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    no_model = "v2+http://127.0.0.1:9/x"
    p = ReplayPanel(demo_db, versions=[str(versions[0]), str(corrupt), no_model,
                                       str(versions[2])])
    qtbot.addWidget(p)
    try:
        p.controls_spin.setValue(20)
        failures = load(qtbot, p)
        listed = ["replaced", "swapped", "wine-v1", "corrupt", no_model, "wine-v3"]
        assert names(p) == listed
        result = replay_now(qtbot, p)
        summaries = {s.version: s for s in result.summaries()}
        assert list(summaries) == listed
        for bad, why in (("replaced", f"version replaced: cannot read {replaced}"),
                         ("swapped", "version swapped changed since it was registered"),
                         (no_model, f"'{no_model}' does not name a model"),
                         ("corrupt", f"cannot load {corrupt} as an ONNX model")):
            s = summaries[bad]
            assert s.unanswered == len(result.cases) and s.fixed == s.still_failing == 0, bad
            assert s.unanswered_reason.startswith(why), s.unanswered_reason
        for good in ("wine-v1", "wine-v3"):
            s = summaries[good]
            assert s.unanswered == 0 and s.fixed + s.still_failing == failures
        text = plain(p)
        assert "replaced: fixed 0/" in text and "no answer" in text and "Replay failed" not in text
        assert result.replay_id is not None
    finally:
        p.shutdown()


# -- #3: Delete, when the version list has focus --------------------------------------------------

def test_delete_removes_an_added_version_with_another_panel_in_the_window(
        qtbot, demo_db, versions, tmp_path):
    """Two panels in one window, each with a Delete key: a window-wide shortcut (what
    ``context=`` in the constructor gave) would make both ambiguous, and neither fire."""
    window = QWidget()
    row = QHBoxLayout(window)
    first = ReplayPanel(demo_db, versions=[str(v) for v in versions])
    other = ReplayPanel(demo_db, versions=[str(versions[0])])
    row.addWidget(first)
    row.addWidget(other)
    qtbot.addWidget(window)
    window.show()
    window.activateWindow()
    try:
        first.version_list.setCurrentRow(1)
        first.version_list.setFocus()
        qtbot.waitUntil(first.version_list.hasFocus, timeout=5_000)
        qtbot.keyClick(first.version_list, Qt.Key.Key_Delete)
        assert names(first) == ["wine-v1", "wine-v3"] and names(other) == ["wine-v1"]
        delete = [s for s in first.version_list.findChildren(QShortcut)
                  if s.key() == QKeySequence(QKeySequence.StandardKey.Delete)]
        assert [s.context() for s in delete] == [Qt.ShortcutContext.WidgetShortcut]
    finally:
        first.shutdown()
        other.shutdown()


# -- #4: Cancel answers at once -----------------------------------------------------------------

@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that takes connections and never answers (a hung model server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def test_cancel_while_a_server_is_silent_says_so_and_stops_at_once(qtbot, demo_db,
                                                                   silent_server):
    # A timeout longer than the wait below: the replay must not wait the silence out.
    p = ReplayPanel(demo_db, versions=[
        f"v2+http://127.0.0.1:{silent_server}/models/silent?timeout_s=120"])
    qtbot.addWidget(p)
    try:
        p.limit_spin.setValue(20)
        load(qtbot, p)
        with qtbot.waitSignal(p.replay_finished, timeout=TIMEOUT_MS) as done:
            assert p.run_replay() is not None
            qtbot.wait(300)  # the worker now waits on the server's answer
            p.cancel_button.click()
            # Before the call returns: the button is gone and the summary says why it waits.
            assert p.busy() and not p.cancel_button.isEnabled()
            assert plain(p).startswith("cancelling…")
        assert done.args[0].cancelled
        assert p.run_button.isEnabled() and not p.cancel_button.isEnabled()
        assert "cancelling" not in plain(p)
    finally:
        p.shutdown()


# -- #10, #11: Cancel and the bar for jobs that are not a replay ------------------------------

def test_loading_and_opening_offer_no_cancel_and_leave_the_bar_alone(qtbot, panel):
    with qtbot.waitSignal(panel.failures_loaded, timeout=TIMEOUT_MS):
        panel.load_button.click()
        assert panel.busy() and not panel.cancel_button.isEnabled()  # it would do nothing
    result = replay_now(qtbot, panel)
    assert panel.progress.value() == 1000
    with qtbot.waitSignal(panel.failures_loaded, timeout=TIMEOUT_MS):
        panel.load_button.click()
        assert not panel.cancel_button.isEnabled() and panel.progress.value() == 1000
    # The grid still shows the finished replay, and so does the bar.
    assert panel.progress.value() == 1000 and panel.result is result
    with qtbot.waitSignal(panel.replay_finished, timeout=TIMEOUT_MS):
        assert panel.open_replay(result.replay_id) is not None
        assert panel.busy() and not panel.cancel_button.isEnabled()
        panel.cancel()  # Esc: nothing to stop, and nothing claims otherwise
        assert "cancelling" not in plain(panel)
    assert panel.progress.value() == 1000


# -- #13: a confidence under the threshold never reads as it ------------------------------------

def test_a_confidence_under_the_threshold_is_never_shown_at_it(qtbot, panel):
    load(qtbot, panel)
    result = replay_now(qtbot, panel)
    model = panel.result_model
    threshold = result.criteria.min_confidence
    run = result.runs[0]
    kept = float(run.confidence[0])
    # 0.5996 rounds to 0.600: judged under 0.6, it reads 0.599, in the grid and beside it.
    run.confidence[0] = 0.5996
    assert model.data(model.index(0, 3)).endswith("(0.599)")
    assert model.answers(0)[0].confidence == 0.599
    run.confidence[0] = 0.6
    assert model.data(model.index(0, 3)).endswith("(0.600)")
    run.confidence[0] = 0.61266
    assert model.data(model.index(0, 3)).endswith("(0.613)")
    run.confidence[0] = kept
    # Every cell of a real replay: shown under the threshold exactly when judged under it.
    shown = 0
    for j, run in enumerate(result.runs):
        for i in range(len(result.cases)):
            text = model.data(model.index(i, 3 + j))
            found = re.search(r"\((\d\.\d+)\)", text)
            if found is None:
                continue
            shown += 1
            assert (float(found.group(1)) < threshold) == (run.confidence[i] < threshold), \
                (text, float(run.confidence[i]))
            assert len(found.group(1)) == 5  # 3 decimals
    assert shown > 300


# -- #14: Export CSV… writes on the worker -------------------------------------------------------

def test_export_writes_on_the_worker_and_says_why_it_cannot(qtbot, panel, tmp_path,
                                                            monkeypatch):
    load(qtbot, panel)
    result = replay_now(qtbot, panel)
    out = tmp_path / "cases.csv"
    file_dialog_answers(monkeypatch, out, save=True)
    panel.export_button.click()
    # Not written on the GUI thread: the panel is busy until the worker answers.
    assert panel.busy() and not panel.export_button.isEnabled()
    assert not panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()
    with qtbot.waitSignal(panel.exported, timeout=TIMEOUT_MS) as written:
        pass  # the worker's answer is queued until the event loop runs
    assert written.args[0] == out
    assert len(out.read_text().splitlines()) == len(result.cases) + 1
    assert f"exported {len(result.cases)} cases to {out}" in plain(panel)
    assert panel.export_button.isEnabled() and panel.run_button.isEnabled()
    file_dialog_answers(monkeypatch, tmp_path / "no" / "x.csv", save=True)
    with qtbot.waitSignal(panel.replay_failed, timeout=TIMEOUT_MS) as refused:
        panel.export_button.click()
    assert "there is no folder" in refused.args[0]
    text = plain(panel)
    assert "Export failed: cannot write" in text and "wine-v3: fixed" in text
    assert not panel.busy() and panel.export_button.isEnabled()


# -- #15: a saved replay records the filters its list was loaded with ----------------------------

def test_a_replay_records_the_filters_its_failures_were_listed_with(qtbot, panel):
    panel.label_edit.setText("1")
    panel.controls_spin.setValue(10)
    assert load(qtbot, panel) > 0
    panel.label_edit.setText("0")  # changed after loading, before Replay
    panel.controls_spin.setValue(99)
    result = replay_now(qtbot, panel)
    assert {result.label(i) for i in range(len(result.cases)) if not result.control_mask[i]} \
        == {"1"}
    assert result.selection.label == "1" and result.selection.controls == 10
    store = Store(panel.db_path)
    try:
        saved = load_replay(store, result.replay_id)
    finally:
        store.close()
    assert saved.selection.label == "1" and saved.selection.controls == 10


# -- #9: text that fits, at a small window's size too --------------------------------------------

def _combo_text_fits(box) -> bool:
    option = QStyleOptionComboBox()
    box.initStyleOption(option)
    field = box.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                       QStyle.SubControl.SC_ComboBoxEditField, box)
    return all(box.fontMetrics().horizontalAdvance(box.itemText(i)) <= field.width()
               for i in range(box.count()))


def cancelled_replay(qtbot, panel):
    """A replay of the listed failures, one row a batch, cancelled at once: its result."""
    load(qtbot, panel)
    panel.batch_size = 1
    with qtbot.waitSignal(panel.replay_finished, timeout=TIMEOUT_MS) as done:
        panel.run_replay()
        panel.cancel()
    return done.args[0]


def test_a_cancelled_replay_in_the_saved_box_is_not_cut(qtbot, panel):
    assert cancelled_replay(qtbot, panel).cancelled
    box = panel.saved_box
    assert box.itemText(0).endswith("(cancelled)")
    qtbot.waitUntil(lambda: _combo_text_fits(box), timeout=5_000)


def test_a_long_version_name_gets_a_capped_column_and_keeps_its_name_in_the_tooltip(
        qtbot, demo_db, versions, tmp_path):
    long = tmp_path / ("a_model_with_a_really_quite_extraordinarily_long_name_for_the_"
                       "candidate_release_2024_q4_retrained_v17.onnx")
    shutil.copy(versions[1], long)
    p = ReplayPanel(demo_db, versions=[str(versions[0]), str(long)])
    qtbot.addWidget(p)
    p.resize(1300, 800)
    p.show()
    try:
        load(qtbot, p)
        replay_now(qtbot, p)
        model, view = p.result_model, p.result_view
        header = view.horizontalHeader()
        col = 4
        assert model.headerData(col, Qt.Orientation.Horizontal) == long.stem
        width = header.sectionSize(col)
        assert width < view.viewport().width() // 2
        assert width < header.fontMetrics().horizontalAdvance(long.stem)  # capped, elided
        assert header.textElideMode() == Qt.TextElideMode.ElideMiddle
        assert width >= view.sizeHintForColumn(col)  # its cells still read "1 (0.873)"
        assert model.headerData(col, Qt.Orientation.Horizontal,
                                Qt.ItemDataRole.ToolTipRole) == long.stem
    finally:
        p.shutdown()


def test_the_panel_fits_a_dock_in_a_small_window(qtbot, panel):
    """In a 1280x760 window the docked panel has about 830 px: every control in sight, none
    scrolled off the side, rows wrapped where they must."""
    load(qtbot, panel)
    replay_now(qtbot, panel)
    dock = QScrollArea()  # as the workbench docks it
    dock.setWidgetResizable(True)
    dock.setWidget(panel)
    qtbot.addWidget(dock)
    dock.resize(830, 480)
    dock.show()
    try:
        _fits_in(qtbot, panel, dock)
    finally:
        dock.takeWidget()  # the fixture shuts the panel down


def _fits_in(qtbot, panel: ReplayPanel, dock: QScrollArea) -> None:
    controls = [panel.add_button, panel.provider_box, panel.run_button, panel.cancel_button,
                panel.progress, panel.saved_box, panel.open_button, panel.export_button,
                panel.endpoint_box, panel.kind_box, panel.label_edit, panel.version_edit,
                panel.window_box, panel.limit_spin, panel.controls_spin, panel.load_button]

    def laid_out() -> bool:
        return dock.horizontalScrollBar().maximum() == 0 and panel.width() <= 830

    qtbot.waitUntil(laid_out, timeout=5_000)
    boxes = []
    for w in controls:
        rect = w.rect().translated(w.mapTo(panel, w.rect().topLeft()))
        assert w.isVisible() and panel.rect().contains(rect), w
        assert w.width() >= w.minimumSizeHint().width(), w
        boxes.append(rect)
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            assert not boxes[a].intersects(boxes[b]), (controls[a], controls[b])
    # The summary starts under the controls, at the panel's left edge.
    below = max(r.bottom() for r in boxes)
    assert panel.summary.mapTo(panel, panel.summary.rect().topLeft()).y() > below


# -- replay UI audit (/tmp/audit-replay-ui/REPORT.md), D1/D3: the panel fits its dock ------------

# The Replay dock's viewport in a 1680x1000 window, the tab at its first height (480 px).
DOCK_VIEWPORT = (1234, 428)


def _in_sight(widget: QWidget, dock: QScrollArea) -> bool:
    """Whether all of ``widget`` lies inside the scroll area's visible viewport."""
    top_left = widget.mapTo(dock.viewport(), widget.rect().topLeft())
    return widget.isVisible() and widget.height() > 0 and \
        dock.viewport().rect().contains(widget.rect().translated(top_left))


def test_at_the_default_dock_size_the_versions_grid_and_a_cases_answers_are_in_sight(
        qtbot, panel):
    dock = QScrollArea()  # as the workbench docks it
    dock.setWidgetResizable(True)
    dock.setWidget(panel)
    qtbot.addWidget(dock)
    dock.resize(*DOCK_VIEWPORT)
    dock.show()
    try:
        load(qtbot, panel)
        result = replay_now(qtbot, panel)
        with qtbot.waitSignal(panel.case_selected, timeout=TIMEOUT_MS):
            panel.select_result_row(0)
        # Laid out in the height it is given (it was ~810 px: under the fold, behind an
        # outer scrollbar, were the version picker and the case's answers).
        qtbot.waitUntil(lambda: panel.height() <= dock.viewport().height(), timeout=5_000)
        assert dock.verticalScrollBar().maximum() == 0
        view = panel.case_view
        for widget in (panel.failure_view, panel.version_list, panel.result_view,
                       view.inputs, view.bars, view.answers):
            assert _in_sight(widget, dock), widget
        # Every version ticked, and every version's answer with its latency, in sight.
        versions = panel.version_list
        assert all(versions.visualItemRect(versions.item(i)).bottom()
                   <= versions.viewport().height() for i in range(versions.count()))
        answers = view.answers
        assert answers.rowCount() == len(result.runs) == 3
        assert answers.rowViewportPosition(2) + answers.rowHeight(2) \
            <= answers.viewport().height()
        assert answers.horizontalScrollBar().maximum() == 0  # no column cut off the side
        # Every version's column and "first failing" in the grid without scrolling sideways.
        grid = panel.result_view
        assert grid.horizontalHeader().length() <= grid.viewport().width()
    finally:
        dock.takeWidget()  # the fixture shuts the panel down


# -- D2: a faint image looks faint, or says its range --------------------------------------------

def _brightest(view: CaseViewWidget) -> int:
    image = view.image.pixmap().toImage().convertToFormat(QImage.Format.Format_Grayscale8)
    return max(image.pixelColor(x, y).value() for x in range(image.width())
               for y in range(image.height()))


def test_a_faint_image_is_drawn_faint_and_its_range_is_said(qtbot):
    view = CaseViewWidget()
    qtbot.addWidget(view)
    view.resize(700, 400)
    view.show()
    answer = VersionAnswer("m", np.array([0.2, 0.8]), "1", 0.8, 0.1, "fixed")
    picture = np.zeros((1, 1, 28, 28), np.float32)
    picture[..., 8:20, 8:20] = 1.0
    view.show_case("normal", picture, [], [answer])
    assert _brightest(view) == 255
    assert view.image_range.text() == "values 0.00\u20131.00, shown on 0\u20131 (black\u2013white)"
    view.show_case("faint", picture * 0.28, [], [answer])  # the same image, faint
    assert _brightest(view) <= round(0.28 * 255) + 1
    assert "values 0.00\u20130.28" in view.image_range.text()
    # Values outside 0..1 are stretched, and the caption says over what.
    view.show_case("raw", picture * 3.0 - 0.5, [], [answer])
    assert _brightest(view) == 255
    assert view.image_range.text() == "values -0.50\u20132.50, stretched to black\u2013white"
    assert view.image_range.isVisible()


def test_a_faint_image_with_noise_past_zero_is_still_drawn_faint(qtbot):
    view = CaseViewWidget()
    qtbot.addWidget(view)
    view.resize(700, 400)
    view.show()
    answer = VersionAnswer("m", np.array([0.2, 0.8]), "1", 0.8, 0.1, "fixed")
    picture = np.zeros((1, 1, 28, 28), np.float32)
    picture[..., 8:20, 8:20] = 0.28
    picture[..., 0, :3] = [-0.03, -0.01, -0.02]  # sensor noise just below black
    view.show_case("noisy faint", picture, [], [answer])
    # Stretched to its own range, the 0.28 square would be drawn white.
    assert _brightest(view) <= round(0.28 * 255) + 1
    assert view.image_range.text() == ("values -0.03\u20130.28, shown on 0\u20131 "
                                       "(black\u2013white; 3 outside it drawn at its ends)")


# -- D6: the case view's latency to three significant figures ---------------------------------

def test_the_case_views_latency_reads_as_the_summary_does(qtbot):
    view = CaseViewWidget()
    qtbot.addWidget(view)
    answers = [VersionAnswer("a", np.array([0.2, 0.8]), "1", 0.8, 0.000423, "fixed"),
               VersionAnswer("b", np.array([0.2, 0.8]), "1", 0.8, 0.0000712, "fixed"),
               VersionAnswer("c", np.array([0.2, 0.8]), "1", 0.8, 12.3456, "fixed")]
    view.show_case("row", np.zeros((1, 4)), [], answers)
    assert [view.answers.item(r, 3).text() for r in range(3)] == \
        [figure_text(0.000423), figure_text(0.0000712), figure_text(12.3456)] == \
        ["0.000423", "0.0000712", "12.3"]


# -- D4: raw scores beside probabilities ----------------------------------------------------------

def test_raw_scores_beside_probabilities_are_drawn_min_max_and_say_so(qtbot):
    view = CaseViewWidget()
    qtbot.addWidget(view)
    probs = VersionAnswer("probs", np.array([0.1, 0.2, 0.7]), "2", 0.7, 0.1, "fixed")
    logits = VersionAnswer("logits", np.array([-3.0, 2.0, 22.0]), "2", None, 0.1, "fixed")
    view.show_case("row", np.zeros((1, 4)), [], [probs, logits])
    assert view.scaled_versions() == ["logits"]
    heights = [np.asarray(item.opts["height"]) for item in view._bar_items]
    np.testing.assert_allclose(heights[0], [0.1, 0.2, 0.7])  # probabilities as they are
    np.testing.assert_allclose(heights[1], [0.0, 0.2, 1.0])  # 25 no longer flattens them
    assert "logits&nbsp;<i>(raw,&nbsp;min\u2013max)</i>" in view.legend.text()
    assert "not probabilities" in view.legend.toolTip()
    # All raw scores: one scale among them, drawn as they are.
    view.show_case("row", np.zeros((1, 4)), [], [logits, logits])
    assert view.scaled_versions() == []
    np.testing.assert_allclose(np.asarray(view._bar_items[0].opts["height"]), [-3, 2, 22])
    assert "min" not in view.legend.text()


# -- D7: a cancelled replay names the versions it never ran --------------------------------------

def test_a_cancelled_replay_names_the_ticked_versions_it_did_not_run(qtbot, panel):
    result = cancelled_replay(qtbot, panel)
    assert result.cancelled
    ran = [r.version for r in result.runs]
    not_run = [n for _, n in panel.checked_versions() if n not in ran]
    assert not_run  # Cancel came while the first version was still running
    assert f"not run: {', '.join(not_run)} (cancelled)" in plain(panel)


# -- D8: a reopened replay's cases become the list Replay reruns ---------------------------------

def test_reopening_a_replay_lists_its_cases_and_replay_reruns_them(qtbot, panel):
    panel.label_edit.setText("1")
    panel.controls_spin.setValue(10)
    load(qtbot, panel)
    first = replay_now(qtbot, panel)
    ids = [c.capture_id for c in first.cases]
    panel.label_edit.setText("0")  # another list, loaded after
    panel.controls_spin.setValue(30)
    load(qtbot, panel)
    assert {c.capture.label for c in panel.failure_model.cases} == {"0"}
    with qtbot.waitSignal(panel.replay_finished, timeout=TIMEOUT_MS):
        panel.open_replay(first.replay_id)
    listed = [c.capture_id for c in panel.failure_model.cases]
    assert listed == [c.capture_id for c in first.cases if not c.control]
    assert panel.failure_count.text().startswith(
        f"replay #{first.replay_id}'s {len(listed)} failures, 10 controls")
    assert panel.failure_count.toolTip().startswith("Replay reruns these")
    # The filters say what chose them.
    assert panel.label_edit.text() == "1" and panel.controls_spin.value() == 10
    again = replay_now(qtbot, panel)
    assert [c.capture_id for c in again.cases] == ids
    assert again.selection.label == "1" and again.selection.controls == 10
