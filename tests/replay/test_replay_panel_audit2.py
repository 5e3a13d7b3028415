"""The Replay tab's answers to the data scientist's audit (/tmp/audit-replay/REPORT.md, numbers
below), driven as a user drives it, offscreen, on a real workspace with real onnxruntime
sessions: verdicts that read without colour, "no answer" cells, room for more versions,
reopening a saved replay, a sortable and filterable grid, and the keyboard."""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QColor
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QScrollArea

from app.core.replay import (
    CONTROL_OK,
    FIXED,
    NEWLY_BROKEN,
    NO_ANSWER,
    STILL_FAILING,
    ReplayResult,
    Selection,
    replay,
    select_cases,
)
from app.core.replay_store import save_replay
from app.core.replay_targets import open_target
from app.core.store import Store
from app.gui.replay_panel import ReplayPanel
from tests.replay.panel_driver import TIMEOUT_MS, load, plain, replay_now
from widgets.case_view import (
    BARS_MIN_PX,
    VERDICT_COLORS,
    CaseViewWidget,
    VersionAnswer,
    text_color_for,
)

# The Replay dock's viewport in a 1680x1000 window, the tab at its first height (480 px).
DOCK_VIEWPORT = (1234, 428)
MARKS = {FIXED: "\u2713 ", STILL_FAILING: "\u2717 ", NEWLY_BROKEN: "\u25b2 new ",
         CONTROL_OK: "ok ", NO_ANSWER: "no answer"}


@pytest.fixture
def docked(qtbot, panel: ReplayPanel) -> Iterator[QScrollArea]:
    """The panel in a scroll area of the Replay dock's default size, as the workbench docks
    it."""
    dock = QScrollArea()
    dock.setWidgetResizable(True)
    dock.setWidget(panel)
    qtbot.addWidget(dock)
    dock.resize(*DOCK_VIEWPORT)
    dock.show()
    yield dock
    dock.takeWidget()  # the panel fixture shuts the panel down


def grid_cases(panel: ReplayPanel) -> list[int]:
    """The cases (indexes into the replay's) in the grid's rows, top to bottom."""
    proxy = panel.result_proxy
    return [proxy.case_at(r) for r in range(proxy.rowCount())]


def choose_filter(panel: ReplayPanel, verdict: str, run: int) -> None:
    box = panel.show_box
    at = next(k for k in range(box.count()) if box.itemData(k) == (verdict, run))
    box.setCurrentIndex(at)


def click_header(qtbot, panel: ReplayPanel, column: int) -> None:
    header = panel.result_view.horizontalHeader()
    x = header.sectionViewportPosition(column) + header.sectionSize(column) // 2
    QTest.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, 5))


# -- #2: a verdict reads without its colour, on colours told apart, in readable text ----------

def _luminance(color: str) -> float:
    """WCAG 2.x relative luminance, written out here rather than taken from the code."""
    def channel(v: int) -> float:
        c = v / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    q = QColor(color)
    return 0.2126 * channel(q.red()) + 0.7152 * channel(q.green()) + 0.0722 * channel(q.blue())


def _contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _deuteranope(color: str) -> np.ndarray:
    """How ``color`` looks with no working green cones (Machado et al. 2009, severity 1),
    as 0..255 sRGB."""
    q = QColor(color)
    rgb = np.array([q.redF(), q.greenF(), q.blueF()])
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                  [-0.011820, 0.042940, 0.968881]])
    seen = np.clip(m @ linear, 0, 1)
    return 255 * np.where(seen <= 0.0031308, seen * 12.92, 1.055 * seen ** (1 / 2.4) - 0.055)


def test_every_verdict_colour_carries_text_of_at_least_4_5_to_1(qtbot, panel):
    for verdict, background in VERDICT_COLORS.items():
        assert _contrast(text_color_for(background), background) >= 4.5, verdict
    # And what the grid and the case view actually draw, on a real replay.
    load(qtbot, panel)
    result = replay_now(qtbot, panel)
    model = panel.result_model
    seen = set()
    for j in range(len(result.runs)):
        for i in range(len(result.cases)):
            verdict = result.verdict(i, j)
            if verdict in seen:
                continue
            seen.add(verdict)
            index = model.index(i, 3 + j)
            background = model.data(index, Qt.ItemDataRole.BackgroundRole).name()
            ink = model.data(index, Qt.ItemDataRole.ForegroundRole).name()
            assert background == VERDICT_COLORS[verdict]
            assert _contrast(ink, background) >= 4.5, (verdict, ink, background)
    assert {FIXED, STILL_FAILING, NEWLY_BROKEN, CONTROL_OK} <= seen
    with qtbot.waitSignal(panel.case_selected, timeout=TIMEOUT_MS):
        panel.select_result_row(0)
    cell = panel.case_view.answers.item(0, 4)
    assert _contrast(cell.foreground().color().name(), cell.background().color().name()) >= 4.5


def test_fixed_failing_and_newly_broken_stay_apart_for_a_deuteranope():
    # Red against green read as one olive (#756b38 against #817420): 20 apart in sRGB.
    keys = (FIXED, STILL_FAILING, NEWLY_BROKEN, NO_ANSWER, CONTROL_OK)
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            distance = np.linalg.norm(_deuteranope(VERDICT_COLORS[keys[a]])
                                      - _deuteranope(VERDICT_COLORS[keys[b]]))
            assert distance > 60, (keys[a], keys[b], distance)


def test_every_grid_cell_says_its_verdict_in_a_glyph_or_word(qtbot, panel):
    load(qtbot, panel)
    result = replay_now(qtbot, panel)
    model = panel.result_model
    counted = dict.fromkeys(MARKS, 0)
    for j in range(len(result.runs)):
        for i in range(len(result.cases)):
            verdict = result.verdict(i, j)
            text = model.data(model.index(i, 3 + j))
            assert text.startswith(MARKS[verdict]), (verdict, text)
            assert model.verdict(i, j) == verdict  # what the filter counts, cell by cell
            counted[verdict] += 1
    assert all(counted[v] for v in (FIXED, STILL_FAILING, NEWLY_BROKEN, CONTROL_OK))
    # "1 (0.723)" after the mark, as before.
    assert re.fullmatch(r"\S+ \d \(\d\.\d{3}\)", model.data(model.index(0, 3)))


def test_a_selected_row_still_shows_its_verdict_colours(qtbot, panel):
    load(qtbot, panel)
    result = replay_now(qtbot, panel)
    row = next(i for i in range(len(result.cases)) if result.verdict(i, 2) == NEWLY_BROKEN)
    with qtbot.waitSignal(panel.case_selected, timeout=TIMEOUT_MS):
        panel.select_result_row(row)
    view = panel.result_view
    index = panel.result_proxy.index(panel.result_proxy.row_of(row), 5)  # wine-v3's cell
    view.scrollTo(index)
    rect = view.visualRect(index)
    picture = view.viewport().grab().toImage()
    # Inside the cell, right of its text and left of the selection's frame (2 px).
    inside = picture.pixelColor(rect.right() - 3, rect.center().y()).name()
    assert inside == VERDICT_COLORS[NEWLY_BROKEN], inside
    # The row reads as selected: its "#" cell has the selection's colour.
    first = view.visualRect(panel.result_proxy.index(index.row(), 0))
    highlight = view.palette().color(view.palette().ColorRole.Highlight).name()
    assert picture.pixelColor(first.right() - 3, first.center().y()).name() == highlight


# -- #6: a version that could not answer reads "no answer"; a long reason does not widen ------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_version_that_could_not_answer_reads_no_answer_and_a_real_error_error(
        qtbot, panel, demo_db, versions):
    store = Store(demo_db)
    try:
        cases = select_cases(store, Selection(limit=10, controls=5))
    finally:
        store.close()
    down = open_target(f"v2+http://127.0.0.1:{_free_port()}/models/wine-v2"
                       "?connect_timeout_s=1", name="far-v2")
    local = open_target(str(versions[1]), name="wine-v2")
    try:
        result = replay(cases, [down, local])
    finally:
        local.close()
    # wine-v2 answers every case but one, which it was asked and failed on.
    broken = replace(result.runs[1], errors={0: "boom"})
    result = ReplayResult(result.cases, [result.runs[0], broken], result.criteria)
    panel._on_replay_done(result)  # as the replay job hands it over
    model = panel.result_model
    assert all(model.data(model.index(i, 3)) == "no answer" for i in range(len(cases)))
    assert "no answer 15" in plain(panel)  # as the summary counts them
    assert model.data(model.index(0, 3), Qt.ItemDataRole.ToolTipRole).startswith(
        "no answer: ")
    assert model.data(model.index(0, 4)) == "\u2717 error"  # failing, and why is an error
    assert "boom" in model.data(model.index(0, 4), Qt.ItemDataRole.ToolTipRole)


def test_a_long_reason_in_the_answers_is_elided_and_the_numbers_stay_in_sight(qtbot):
    view = CaseViewWidget()
    qtbot.addWidget(view)
    view.resize(420, 330)
    view.show()
    reason = ("wrongshape takes features as [batch, 7]; the captures hold [13] per row, "
              "so this version was not asked about any of them")
    answers = [VersionAnswer(f"wine-v{k}", np.array([0.2, 0.7, 0.1]), "1", 0.7, 0.1, "fixed")
               for k in (1, 2, 3)]
    answers.append(VersionAnswer("wrongshape", None, None, None, None, NO_ANSWER,
                                 error=reason))
    view.show_case("Capture 7", np.zeros((1, 13)), [], answers)
    table = view.answers
    qtbot.waitUntil(lambda: table.viewport().width() > 0, timeout=5_000)
    cell = table.item(3, 1)
    assert cell.text() != reason and cell.text().endswith("\u2026")
    assert cell.toolTip() == reason
    assert table.item(3, 4).text() == "no answer"
    assert table.horizontalScrollBar().maximum() == 0  # conf., ms and verdict in sight
    last = table.columnViewportPosition(4) + table.columnWidth(4)
    assert last <= table.viewport().width()
    assert table.columnWidth(0) >= table.fontMetrics().horizontalAdvance("wine-v1")


# -- #7: five versions in the default dock --------------------------------------------------

def test_five_versions_in_the_default_dock_keep_the_bars_readable_and_widen_the_grid(
        qtbot, demo_db, versions, tmp_path):
    extra = []
    for name in ("wine-extra4", "wine-extra5"):
        extra.append(tmp_path / f"{name}.onnx")
        shutil.copy(versions[1], extra[-1])
    p = ReplayPanel(demo_db, versions=[str(v) for v in [*versions, *extra]])
    dock = QScrollArea()
    dock.setWidgetResizable(True)
    dock.setWidget(p)
    qtbot.addWidget(dock)
    dock.resize(*DOCK_VIEWPORT)
    dock.show()
    try:
        load(qtbot, p)
        result = replay_now(qtbot, p)
        assert len(result.runs) == 5
        with qtbot.waitSignal(p.case_selected, timeout=TIMEOUT_MS):
            p.select_result_row(0)
        _, grid_px, case_px = p._split.sizes()
        # The case view gave the grid what it could spare (it kept 500 px, the grid ~540).
        assert grid_px >= 600 and case_px < 400
        view = p.case_view
        # Its bars kept their height, and its width: no blank strip left by the input pane.
        assert view.bars.height() >= BARS_MIN_PX
        plot = view.bars.getPlotItem().getViewBox().sceneBoundingRect()
        assert plot.height() >= 70 and plot.width() >= 120, plot
        chart_left = view.bars.mapTo(view, QPoint(0, 0)).x()
        assert chart_left - (view.input_stack.mapTo(view, QPoint(0, 0)).x()
                             + view.input_stack.width()) <= 10
        # The failure list shows #, kind and label without scrolling sideways.
        header = p.failure_view.horizontalHeader()
        assert header.sectionViewportPosition(2) + header.sectionSize(2) \
            <= p.failure_view.viewport().width()
        assert [p.failure_model.headerData(c, Qt.Orientation.Horizontal) for c in range(3)] \
            == ["#", "kind", "label"]
    finally:
        dock.takeWidget()
        p.shutdown()


def test_three_versions_fit_the_default_dock_with_the_whole_grid_and_list_in_sight(
        qtbot, panel, docked):
    load(qtbot, panel)
    replay_now(qtbot, panel)
    with qtbot.waitSignal(panel.case_selected, timeout=TIMEOUT_MS):
        panel.select_result_row(0)
    qtbot.waitUntil(lambda: panel.height() <= docked.viewport().height(), timeout=5_000)
    grid = panel.result_view
    assert grid.horizontalHeader().length() <= grid.viewport().width()
    header = panel.failure_view.horizontalHeader()
    assert header.sectionViewportPosition(2) + header.sectionSize(2) \
        <= panel.failure_view.viewport().width()
    # Every cell's text whole: "▲ new 1 (0.953)" of a control far down the grid was cut.
    model, metrics = panel.result_model, grid.fontMetrics()
    for c in range(3, 6):
        widest = max(metrics.horizontalAdvance(model.data(model.index(i, c)))
                     for i in range(model.rowCount()))
        assert grid.columnWidth(c) > widest, c


# -- #9: reopening a saved replay --------------------------------------------------------------

def names_and_ticks(panel: ReplayPanel) -> list[tuple[str, bool]]:
    versions = panel.version_list
    return [(versions.item(i).text(), versions.item(i).checkState() == Qt.CheckState.Checked)
            for i in range(versions.count())]


def test_reopening_a_replay_keeps_it_in_the_box_and_ticks_its_versions_in_its_order(
        qtbot, panel, tmp_path, versions):
    load(qtbot, panel)
    first = replay_now(qtbot, panel)
    # The next replay: a file added, wine-v1 unticked, wine-v3 dragged to the top.
    candidate = tmp_path / "candidate.onnx"
    shutil.copy(versions[1], candidate)
    panel.refresh_versions(extra=[str(candidate)])
    versions_list = panel.version_list
    versions_list.item(0).setCheckState(Qt.CheckState.Unchecked)
    versions_list.insertItem(0, versions_list.takeItem(2))
    second = replay_now(qtbot, panel)
    assert [r.version for r in second.runs] == ["wine-v3", "wine-v2", "candidate"]
    assert panel.saved_box.currentData() == second.replay_id
    box = panel.saved_box
    box.setCurrentIndex(box.findData(first.replay_id))
    with qtbot.waitSignal(panel.replay_finished, timeout=TIMEOUT_MS):
        panel.open_button.click()
    # The box names the replay on screen (it read the newest, #2, beside #1's grid).
    assert box.currentData() == first.replay_id
    assert names_and_ticks(panel) == [("wine-v1", True), ("wine-v2", True), ("wine-v3", True),
                                      ("candidate", False)]
    assert panel.checked_versions() == [(r.location, r.version) for r in first.runs]
    # Replay reruns #1: the same cases on the same versions, in the same order.
    again = replay_now(qtbot, panel)
    assert [r.version for r in again.runs] == [r.version for r in first.runs]
    assert again.capture_ids == first.capture_ids


def test_reopening_a_replay_made_on_files_adds_them_to_the_versions(
        qtbot, demo_db, versions, tmp_path):
    # Made by `probescope replay --versions img-v1.onnx img-v2.onnx`: files, not registered.
    files = []
    for name in ("cand-a", "cand-b"):
        files.append(tmp_path / f"{name}.onnx")
        shutil.copy(versions[2 if name == "cand-a" else 1], files[-1])
    store = Store(demo_db)
    try:
        cases = select_cases(store, Selection(limit=20, controls=5))
        targets = [open_target(str(f), name=f.stem) for f in files]
        try:
            saved = save_replay(store, replay(cases, targets))
        finally:
            for t in targets:
                t.close()
    finally:
        store.close()
    p = ReplayPanel(demo_db)  # no versions: an empty picker
    qtbot.addWidget(p)
    try:
        assert p.checked_versions() == []
        with qtbot.waitSignal(p.replay_finished, timeout=TIMEOUT_MS):
            p.open_replay(saved)
        assert p.checked_versions() == [(str(f), f.stem) for f in files]
        assert p.saved_box.currentData() == saved
        again = replay_now(qtbot, p)
        assert [r.version for r in again.runs] == ["cand-a", "cand-b"]
    finally:
        p.shutdown()


# -- #10: sort and filter the grid; the case view follows -----------------------------------

def test_sorting_by_a_versions_confidence_and_the_case_view_follows_the_row(qtbot, panel):
    load(qtbot, panel)
    result = replay_now(qtbot, panel)
    assert panel.result_view.isSortingEnabled() and panel.failure_view.isSortingEnabled()
    click_header(qtbot, panel, 5)  # wine-v3
    confidence = result.runs[2].confidence
    shown = [float(confidence[i]) for i in grid_cases(panel)]
    finite = [c for c in shown if not np.isnan(c)]
    assert finite == sorted(finite) and shown[:len(finite)] == finite  # no confidence last
    assert grid_cases(panel) != list(range(len(result.cases)))
    click_header(qtbot, panel, 5)  # again: the other way
    shown = [float(confidence[i]) for i in grid_cases(panel)]
    finite = [c for c in shown if not np.isnan(c)]
    assert finite == sorted(finite, reverse=True)
    # The user picks the top row: the case view shows that row's case, not case 0.
    top = grid_cases(panel)[0]
    assert top != 0
    with qtbot.waitSignal(panel.case_selected, timeout=TIMEOUT_MS) as shown_case:
        panel.result_view.selectRow(0)
    assert shown_case.args[0] == result.cases[top].capture_id
    assert f"Capture {result.cases[top].capture_id} " in panel.case_view.title.whole
    answers = panel.case_view.answers
    assert float(answers.item(2, 2).text()) == pytest.approx(float(confidence[top]), abs=1e-3)
    # The selected case stays selected and shown when the grid is sorted another way.
    click_header(qtbot, panel, 0)
    row = panel.result_view.selectionModel().currentIndex().row()
    assert panel.result_proxy.case_at(row) == top
    assert f"Capture {result.cases[top].capture_id} " in panel.case_view.title.whole
    # A third click on a column puts the replay's own order back.
    click_header(qtbot, panel, 5)
    click_header(qtbot, panel, 5)
    click_header(qtbot, panel, 5)
    assert grid_cases(panel) == list(range(len(result.cases)))
    assert panel.result_view.horizontalHeader().sortIndicatorSection() == -1


def test_first_failing_sorts_in_bisect_order(qtbot, panel):
    load(qtbot, panel)
    result = replay_now(qtbot, panel)
    click_header(qtbot, panel, 6)
    order = {r.version: k for k, r in enumerate(result.runs)}
    first = result.first_failing()
    ranks = [order[first[i]] if first[i] else len(order) for i in grid_cases(panel)]
    assert ranks == sorted(ranks) and len(set(ranks)) > 1


def test_filtering_by_a_versions_verdict_and_the_case_view_follows(qtbot, panel):
    load(qtbot, panel)
    result = replay_now(qtbot, panel)
    newly = result.summaries()[2].newly_broken
    assert newly > 0
    choose_filter(panel, NEWLY_BROKEN, 2)
    assert "newly broken on wine-v3" in panel.show_box.currentText()
    cases = grid_cases(panel)
    assert len(cases) == newly and all(result.verdict(i, 2) == NEWLY_BROKEN for i in cases)
    assert panel.shown_count.text() == f"{newly} of {len(result.cases)}"
    # Pick the second row shown: that case, not the replay's case 1, is compared.
    with qtbot.waitSignal(panel.case_selected, timeout=TIMEOUT_MS) as shown_case:
        panel.result_view.selectRow(1)
    assert shown_case.args[0] == result.cases[cases[1]].capture_id
    assert panel.case_view.answers.item(2, 4).text() == "newly broken"
    # Sorted within the filter, the case stays picked.
    click_header(qtbot, panel, 5)
    current = panel.result_view.selectionModel().currentIndex()
    assert panel.result_proxy.case_at(current.row()) == cases[1]
    # A filter that keeps it: still selected and shown. One that hides it: the view clears
    # rather than show a neighbour nobody picked.
    choose_filter(panel, NEWLY_BROKEN, 2)
    current = panel.result_view.selectionModel().currentIndex()
    assert panel.result_proxy.case_at(current.row()) == cases[1]
    assert panel.case_view.answers.rowCount() == 3
    with qtbot.waitSignal(panel.case_selected, timeout=TIMEOUT_MS) as cleared:
        choose_filter(panel, STILL_FAILING, 0)  # a control is never still failing
    assert cleared.args[0] is None
    assert not panel.result_view.selectionModel().hasSelection()
    assert panel.case_view.answers.rowCount() == 0
    assert all(result.verdict(i, 0) == STILL_FAILING for i in grid_cases(panel))
    # Selecting by case number finds it through the sort, clearing a filter that hides it.
    with qtbot.waitSignal(panel.case_selected, timeout=TIMEOUT_MS) as shown_case:
        panel.select_result_row(cases[1])
    assert shown_case.args[0] == result.cases[cases[1]].capture_id
    assert panel.show_box.currentData() is None


def test_the_failure_list_sorts_and_replays_the_rows_picked(qtbot, panel):
    panel.controls_spin.setValue(0)
    load(qtbot, panel)
    view, model = panel.failure_view, panel.failure_model
    column = [model.headerData(c, Qt.Orientation.Horizontal)
              for c in range(model.columnCount())].index("confidence")
    header = view.horizontalHeader()
    view.scrollTo(model.index(0, column))
    x = header.sectionViewportPosition(column) + header.sectionSize(column) // 2
    QTest.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, 5))
    confidences = [model.data(model.index(r, column)) for r in range(model.rowCount())]
    known = [float(c) for c in confidences if c]
    assert known == sorted(known) and known != [
        c.capture.confidence for c in model.cases if c.capture.confidence is not None]
    least = sorted((c for c in model.cases if c.capture.confidence is not None),
                   key=lambda c: c.capture.confidence)[:2]
    view.selectRow(0)
    view.selectionModel().select(model.index(1, 0), view.selectionModel().SelectionFlag.Select
                                 | view.selectionModel().SelectionFlag.Rows)
    result = replay_now(qtbot, panel)
    assert sorted(result.capture_ids) == sorted(c.capture_id for c in least)


# -- #15: keys, and the previous replay while the next one runs ------------------------------

def test_the_keypads_ctrl_enter_replays_too(qtbot, panel):
    load(qtbot, panel)
    with qtbot.waitSignal(panel.replay_finished, timeout=TIMEOUT_MS):
        QTest.keyClick(panel.failure_view, Qt.Key.Key_Enter,
                       Qt.KeyboardModifier.ControlModifier
                       | Qt.KeyboardModifier.KeypadModifier)


def test_tab_leaves_the_tables_for_the_next_control(qtbot, panel):
    load(qtbot, panel)
    replay_now(qtbot, panel)
    with qtbot.waitSignal(panel.case_selected, timeout=TIMEOUT_MS):
        panel.select_result_row(0)
    panel.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is panel, timeout=5_000)
    view = panel.case_view
    for table in (panel.failure_view, panel.result_view, view.inputs, view.answers):
        assert not table.tabKeyNavigation(), table
        table.setFocus()
        qtbot.waitUntil(table.hasFocus, timeout=5_000)
        QTest.keyClick(table, Qt.Key.Key_Tab)
        assert not table.hasFocus(), table  # it walked the cells before
    # Tab walks the panel in reading order, from the run bar through the filters, the list,
    # the versions and the grid (it stopped in the first table, short of the versions, and
    # the run bar came after the filters).
    reading = [panel.add_button, panel.provider_box, panel.run_button, panel.saved_box,
               panel.open_button, panel.export_button, panel.endpoint_box, panel.kind_box,
               panel.label_edit, panel.version_edit, panel.window_box, panel.limit_spin,
               panel.controls_spin, panel.load_button, panel.failure_view, panel.version_list,
               panel.show_box, panel.result_view, view.inputs, view.answers]
    panel.add_button.setFocus()
    qtbot.waitUntil(panel.add_button.hasFocus, timeout=5_000)
    walked = [panel.add_button]
    for _ in range(len(reading) + 5):
        QTest.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
        walked.append(QApplication.focusWidget())
    assert [w for w in walked if w in reading][:len(reading)] == reading


def test_while_replaying_the_previous_result_is_greyed_and_the_bar_counts_versions(
        qtbot, panel):
    load(qtbot, panel)
    first = replay_now(qtbot, panel)
    with qtbot.waitSignal(panel.case_selected, timeout=TIMEOUT_MS):
        panel.select_result_row(0)
    said: list[tuple[int, int, str]] = []
    panel.version_started.connect(lambda k, n: said.append((k, n, panel.progress.text())))
    with qtbot.waitSignal(panel.replay_finished, timeout=TIMEOUT_MS):
        assert panel.run_replay() is not None
        # At once, before the worker has run anything: the grid on screen is the old one.
        assert not panel.result_view.isEnabled() and not panel.case_view.isEnabled()
        text = plain(panel)
        assert text.startswith("Replaying") and f"previous replay, #{first.replay_id}" in text
        assert panel.progress.text().startswith("opening 3 versions")
        view = panel.result_view
        rect = view.visualRect(panel.result_proxy.index(0, 3))
        faded = view.viewport().grab().toImage().pixelColor(rect.right() - 3,
                                                             rect.center().y()).name()
        assert faded != VERDICT_COLORS[first.verdict(0, 0)]  # drawn faded
    assert [(k, n) for k, n, _ in said] == [(1, 3), (2, 3), (3, 3)]
    assert [t.split(" \u00b7 ")[0] for _, _, t in said] == \
        ["version 1 of 3", "version 2 of 3", "version 3 of 3"]
    assert panel.result_view.isEnabled() and panel.case_view.isEnabled()
    assert "previous replay" not in plain(panel) and panel.progress.text() == "100%"
