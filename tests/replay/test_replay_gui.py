"""The replay and versions panels as a user drives them, offscreen, on a real workspace."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt

from app.cli import main
from app.core.replay import NEWLY_BROKEN
from app.core.store import Store
from app.gui.replay_panel import ReplayPanel
from app.gui.versions_panel import VersionsPanel
from tests.replay.panel_driver import TIMEOUT_MS, load
from tests.servers.process import free_port
from widgets.case_view import VERDICT_COLORS, CaseViewWidget, VersionAnswer, image_of


def export(qtbot, panel: ReplayPanel, path: Path) -> Path:
    """Export CSV… writes on the worker: the path it wrote, once it has."""
    with qtbot.waitSignal(panel.exported, timeout=TIMEOUT_MS) as written:
        assert panel.export_cases(path) is not None
    return written.args[0]


def test_a_replay_that_cannot_be_saved_is_shown_and_can_be_exported(qtbot, panel):
    import sqlite3

    load(qtbot, panel)
    other = sqlite3.connect(panel.db_path, isolation_level=None)  # another writer's lock
    other.execute("BEGIN IMMEDIATE")
    try:
        with qtbot.waitSignal(panel.replay_finished, timeout=TIMEOUT_MS) as blocker:
            panel.run_button.click()
    finally:
        other.execute("ROLLBACK")
        other.close()
    result = blocker.args[0]
    assert result.replay_id is None and len(result.runs) == 3
    text = re.sub("<[^>]+>", "", panel.summary.text())
    assert "not saved" in text and "database is locked" in text and "wine-v3: fixed" in text
    assert panel.result_model.rowCount() == len(result.cases)
    out = export(qtbot, panel, panel.db_path.parent / "kept.csv")
    assert len(out.read_text().splitlines()) == len(result.cases) + 1
    assert panel.run_button.isEnabled()


def test_select_failures_replay_them_and_compare_one_case(qtbot, panel):
    assert [name for _, name in panel.checked_versions()] == ["wine-v1", "wine-v2", "wine-v3"]
    n = load(qtbot, panel)
    assert n == panel.failure_model.rowCount() > 100
    with qtbot.waitSignal(panel.replay_finished, timeout=TIMEOUT_MS) as blocker:
        panel.run_button.click()
    result = blocker.args[0]
    assert result.replay_id is not None and not result.cancelled
    # Every case held to its endpoint's minimum confidence, as the CLI holds them: nothing
    # reads fixed on an answer the probe would have flagged.
    assert result.criteria.endpoint_min_confidence == \
        Store(panel.db_path).min_confidence_by_endpoint() != {}
    assert all(not run.confidence[i] < 0.6 for j, run in enumerate(result.runs)
               for i in range(len(result.cases)) if result.verdict(i, j) == "fixed")
    assert "judged with: each case held to its endpoint's minimum confidence (0.6)" in \
        re.sub("<[^>]+>", "", panel.summary.text()).replace("&#x27;", "'")
    model = panel.result_model
    assert model.rowCount() == len(result.cases) == n + panel.controls_spin.value()
    assert model.headerData(3, Qt.Orientation.Horizontal) == "wine-v1"
    # The grid is coloured by verdict: find a control that v3 newly breaks.
    row = next(i for i in range(model.rowCount()) if result.verdict(i, 2) == NEWLY_BROKEN)
    colour = model.data(model.index(row, 5), Qt.ItemDataRole.BackgroundRole)
    assert colour.name() == VERDICT_COLORS[NEWLY_BROKEN]
    # Hovering the cell says why, in the words of the rule it broke.
    why = model.data(model.index(row, 5), Qt.ItemDataRole.ToolTipRole)
    assert why == "newly broken: " + "; ".join(result.reasons(row, 2)) and ("class " in why
                                                                            or "under" in why)
    assert "wine-v3: fixed" in re.sub("<[^>]+>", "", panel.summary.text())
    assert panel.progress.value() == 1000
    # Every case, exported for a notebook: one row per case, a verdict column per version.
    assert panel.export_button.isEnabled()
    out = export(qtbot, panel, panel.db_path.parent / "cases.csv")
    lines = out.read_text().splitlines()
    assert len(lines) == len(result.cases) + 1 and "wine-v3:verdict" in lines[0]
    with qtbot.waitSignal(panel.replay_failed, timeout=TIMEOUT_MS) as refused:
        panel.export_cases(panel.db_path.parent / "no" / "x.csv")
    assert "there is no folder" in refused.args[0]
    text = re.sub("<[^>]+>", "", panel.summary.text())
    assert "Export failed" in text and "wine-v3: fixed" in text  # the replay's lines stay
    with qtbot.waitSignal(panel.case_selected, timeout=TIMEOUT_MS) as shown:
        panel.select_result_row(row)
    assert shown.args[0] == result.cases[row].capture_id
    view = panel.case_view
    assert not view.showing_image()
    assert view.inputs.rowCount() == 13 and view.inputs.item(0, 0).text() == "alcohol"
    assert view.bar_count() == 3 and view.answers.rowCount() == 3
    assert view.answers.item(2, 4).toolTip() == why  # wine-v3's verdict, and why
    assert view.answers.item(2, 4).text() == "newly broken"
    assert float(view.answers.item(1, 3).text()) >= 0  # latency per version


def test_filters_and_a_subset_of_rows(qtbot, panel):
    panel.kind_box.setCurrentIndex(panel.kind_box.findData("mismatch"))
    panel.label_edit.setText("2")
    panel.controls_spin.setValue(0)
    n = load(qtbot, panel)
    assert n > 0 and all(c.capture.label == "2" for c in panel.failure_model.cases)
    panel.failure_view.selectRow(0)
    with qtbot.waitSignal(panel.replay_finished, timeout=TIMEOUT_MS) as blocker:
        panel.run_replay()
    assert len(blocker.args[0].cases) == 1


def test_cancel_stops_the_replay_and_the_panel_comes_back(qtbot, panel):
    load(qtbot, panel)
    panel.batch_size = 1
    with qtbot.waitSignal(panel.replay_finished, timeout=TIMEOUT_MS) as blocker:
        assert panel.run_replay() is not None
        assert panel.cancel_button.isEnabled()
        panel.cancel_button.click()  # the worker is still opening sessions
    assert blocker.args[0].cancelled and len(blocker.args[0].runs) < 3
    assert panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert "cancelled" in panel.summary.text()


def test_a_saved_replay_reopens_from_the_list(qtbot, panel):
    load(qtbot, panel)
    with qtbot.waitSignal(panel.replay_finished, timeout=TIMEOUT_MS) as first:
        panel.run_replay()
    rid = first.args[0].replay_id
    assert panel.saved_box.findData(rid) >= 0
    panel.result_model.set_result(None)
    with qtbot.waitSignal(panel.replay_finished, timeout=TIMEOUT_MS) as again:
        panel.open_replay(rid)
    assert again.args[0].replay_id == rid
    assert [s.to_json() for s in again.args[0].summaries()] == \
        [s.to_json() for s in first.args[0].summaries()]
    assert panel.result_model.rowCount() == len(first.args[0].cases)


def test_mistakes_are_reported_in_the_panel(qtbot, panel):
    with qtbot.waitSignal(panel.replay_failed, timeout=TIMEOUT_MS) as blocker:
        panel.run_replay()
    assert "Load failures" in blocker.args[0]
    load(qtbot, panel)
    for i in range(panel.version_list.count()):
        panel.version_list.item(i).setCheckState(Qt.CheckState.Unchecked)
    with qtbot.waitSignal(panel.replay_failed, timeout=TIMEOUT_MS) as blocker:
        panel.run_replay()
    assert "no version checked" in blocker.args[0]
    panel.label_edit.setText("no-such-label")
    assert load(qtbot, panel) == 0
    assert panel.failure_count.text() == "no failures match these filters"
    with qtbot.waitSignal(panel.replay_failed, timeout=TIMEOUT_MS) as blocker:
        panel.run_replay()
    assert blocker.args[0] == "no failures match these filters"


def test_ctrl_enter_while_a_job_runs_leaves_it_in_charge(qtbot, panel):
    from PySide6.QtTest import QTest

    with qtbot.waitSignal(panel.failures_loaded, timeout=TIMEOUT_MS):
        panel.load_button.click()
        # The list is not there yet: a replay now would have nothing to run, and must not
        # mark the panel idle under the running job (it would start a second one).
        QTest.keyClick(panel.failure_view, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
        assert panel.busy() and not panel.load_button.isEnabled()
        assert not panel.run_button.isEnabled() and panel.run_replay() is None
    assert not panel.busy()


def test_a_capped_list_says_so(qtbot, panel):
    panel.limit_spin.setValue(5)
    assert load(qtbot, panel) == 5
    assert panel.failure_count.text().startswith("5 failures (the max: newest first")


def test_image_shaped_inputs_show_as_an_image(qtbot):
    view = CaseViewWidget()
    qtbot.addWidget(view)
    picture = np.random.default_rng(0).random((1, 1, 28, 28)).astype(np.float32)
    assert image_of(picture).shape == (28, 28) and image_of(np.zeros((1, 13))) is None
    answer = VersionAnswer("m", np.array([0.2, 0.8]), "1", 0.8, 0.1, "fixed")
    view.show_case("img", picture, [], [answer])
    assert view.showing_image() and not view.image.pixmap().isNull()
    view.show_case("row", np.arange(4.0).reshape(1, 4), [], [answer])
    assert not view.showing_image() and view.inputs.item(3, 0).text() == "f3"


def test_a_case_kept_without_its_input_shows_its_own_answers(qtbot):
    view = CaseViewWidget()
    qtbot.addWidget(view)
    before = VersionAnswer("m", np.array([0.2, 0.8]), "1", 0.8, 0.1, "fixed")
    view.show_case("Capture 30", np.zeros((1, 1, 28, 28)), [], [before])
    after = VersionAnswer("m", None, None, None, None, "still_failing", error="boom")
    view.show_case("Capture 31", None, [], [after])  # not the previous case's picture
    assert not view.showing_image() and view.inputs.item(0, 0).text() == "(no input kept)"
    assert view.answers.item(0, 1).text() == "boom" and view.bar_count() == 0


def test_output_bars_have_one_tick_per_class(qtbot):
    view = CaseViewWidget()
    qtbot.addWidget(view)
    view.resize(600, 400)
    answers = [VersionAnswer(f"v{k}", np.array([0.2, 0.7, 0.1]), "1", 0.7, 0.1, "fixed")
               for k in range(2)]
    view.show_case("row", np.zeros((1, 4)), [], answers)
    axis = view.bars.getAxis("bottom")
    # The fixed ticks (what setTicks set; pyqtgraph has no getter): whole classes only, where
    # the axis's own would put 0.5 and 1.5 between the bar groups.
    assert axis._tickLevels == [[(0, "0"), (1, "1"), (2, "2")]]
    wide = VersionAnswer("v", np.full(100, 0.01), "3", 0.01, 0.1, "fixed")
    view.show_case("row", np.zeros((1, 4)), [], [wide])
    assert axis._tickLevels is None  # 100 classes: the axis's own ticks


def test_versions_table_and_contract_cells_on_cpu(qtbot, workspace, versions):
    p = VersionsPanel(workspace, seed_versions=[str(v) for v in versions], runs=30)
    qtbot.addWidget(p)
    p.show()
    try:
        assert p.table.rowCount() == 3 and p.table.item(0, 0).text() == "wine-v1"
        assert p.table.item(1, 3).text() == "573"
        assert p.contract_table.columnCount() == 2
        with qtbot.waitSignal(p.contracts_checked, timeout=60_000):
            p.check_button.click()
        assert p.cell_status("wine-v1", "cpu") == "pass"
        assert p.cell_status("wine-v3", "cpu") == "fail"
        assert p.cell_status("wine-v2", "cuda") == "unreachable"
        text = p.contract_table.item(2, 0).text()
        assert text.startswith("FAIL") and "✗ acc 0.923" in text and "p95" in text
        assert p.contract_table.item(0, 1).text() == "UNREACHABLE"
        # The contracts' agent limit had no column: said, not passed over.
        assert "latency limits not checked: agent" in p.status.text()
        store = Store(workspace)
        try:
            assert len(store.versions()) == 3
        finally:
            store.close()
        with qtbot.waitSignal(p.versions_changed, timeout=10_000):  # on the worker
            p.add_version(versions[0])  # again: updated in place, not duplicated
        assert p.table.rowCount() == 3
        other = workspace.parent / "retrained"
        other.mkdir()
        (other / "wine-v1.onnx").write_bytes(versions[2].read_bytes())
        with qtbot.waitSignal(p.versions_changed, timeout=10_000):
            p.add_version(other / "wine-v1.onnx")  # same stem, another file: its own name
        assert p.table.item(3, 0).text() == "wine-v1@retrained"
        assert "registered as wine-v1@retrained" in p.status.text()
        store = Store(workspace)
        try:
            store.remove_version("wine-v1@retrained")
        finally:
            store.close()
        p.refresh()
        # Select wine-v2 and press Delete: unregistered, its contract row goes, files stay.
        p.table.selectRow(1)
        p.table.setFocus()
        with qtbot.waitSignal(p.versions_changed, timeout=5_000):
            qtbot.keyClick(p.table, Qt.Key.Key_Delete)
        assert [p.table.item(r, 0).text() for r in range(p.table.rowCount())] == [
            "wine-v1", "wine-v3"]
        assert p.contract_table.rowCount() == 2 and "wine-v2" not in p.reports
        assert "removed wine-v2" in p.status.text() and versions[1].exists()
    finally:
        p.shutdown()


def test_a_picked_time_range_limits_the_failures(qtbot, panel):
    everything = load(qtbot, panel)
    stamps = sorted(c.capture.ts_ns for c in panel.failure_model.cases)
    mid = stamps[len(stamps) // 2]
    panel.set_time_range(mid, None)
    assert panel.window_box.currentText() == "picked range"
    n = load(qtbot, panel)
    assert 0 < n < everything and all(c.capture.ts_ns >= mid for c in panel.failure_model.cases)
    # "any time" is still there to go back to, and a new pick replaces the old one.
    panel.window_box.setCurrentIndex(panel.window_box.findText("any time"))
    assert load(qtbot, panel) == everything
    panel.set_time_range(mid, None)
    assert [panel.window_box.itemText(i) for i in range(panel.window_box.count())].count(
        "picked range") == 1
    assert load(qtbot, panel) == n
    panel.set_time_range(None, None)
    assert panel.window_box.currentText() == "any time"
    assert panel.window_box.findText("picked range") == -1
    panel.set_time_range(mid, None)
    panel.version_edit.setText("no-such-version")
    assert load(qtbot, panel) == 0
    # The versions the endpoints reported are offered as the field is typed in.
    suggestions = panel.version_edit.completer().model()
    assert [suggestions.index(i, 0).data() for i in range(suggestions.rowCount())] == ["1.0.0"]
    panel.version_edit.setText("1.0.0")
    assert load(qtbot, panel) == n


def test_the_keyboard_lists_replays_and_cancels(qtbot, panel):
    """Enter in a filter field lists the failures, Ctrl+Enter replays, Esc cancels."""
    from PySide6.QtTest import QTest

    panel.label_edit.setFocus()
    with qtbot.waitSignal(panel.failures_loaded, timeout=TIMEOUT_MS) as listed:
        QTest.keyClick(panel.label_edit, Qt.Key.Key_Return)
    assert listed.args[0] == panel.failure_model.rowCount() > 0
    with qtbot.waitSignal(panel.replay_finished, timeout=TIMEOUT_MS) as done:
        QTest.keyClick(panel.failure_view, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert not done.args[0].cancelled and len(done.args[0].runs) == 3
    # One row per call: the replay outlasts the key press (whole batches could all be done
    # before it on a busy machine, and there would be nothing left to cancel).
    panel.batch_size = 1
    with qtbot.waitSignal(panel.replay_finished, timeout=TIMEOUT_MS) as stopped:
        panel.run_replay()
        QTest.keyClick(panel.failure_view, Qt.Key.Key_Escape)
    assert stopped.args[0].cancelled


def test_a_version_whose_server_is_down_shows_grey_no_answer_cells(qtbot, panel, demo_db):
    from app.core.replay import NO_ANSWER, Selection, replay, select_cases
    from app.core.replay_targets import open_target

    port = free_port()  # nobody listens there once the probe socket is closed
    store = Store(demo_db)
    try:
        cases = select_cases(store, Selection(limit=10, controls=5))
    finally:
        store.close()
    result = replay(cases, [open_target(f"v2+http://127.0.0.1:{port}/models/wine-v2"
                                        "?connect_timeout_s=1", name="far-v2")])
    panel._on_replay_done(result)
    model = panel.result_model
    colour = model.data(model.index(0, 3), Qt.ItemDataRole.BackgroundRole)
    assert colour.name() == VERDICT_COLORS[NO_ANSWER]
    text = re.sub("<[^>]+>", "", panel.summary.text())
    assert "far-v2: fixed 0/10" in text and "no answer 15 (" in text and "cannot connect" in text


def test_the_version_picker_follows_the_registry_and_keeps_names_apart(qtbot, panel, demo_db,
                                                                       versions, tmp_path):
    from app.core.versions import register, unregister

    copy = tmp_path / "candidate"
    copy.mkdir()
    (copy / "wine-v2.onnx").write_bytes(versions[1].read_bytes())
    store = Store(demo_db)
    try:
        register(store, str(copy / "wine-v2.onnx"), "candidate")
    finally:
        store.close()
    panel.refresh_versions(extra=[str(copy / "wine-v2.onnx")])  # registered: listed once
    panel.refresh_versions(extra=[str(versions[1].parent / ".." / "demo" / "wine-v2.onnx")])
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "wine-v3.onnx").write_bytes(versions[2].read_bytes())
    panel.refresh_versions(extra=[str(other / "wine-v3.onnx")])
    names = [name for _, name in panel.checked_versions()]
    assert names == ["wine-v1", "wine-v2", "wine-v3", "candidate", "wine-v3@elsewhere"]
    store = Store(demo_db)
    try:
        unregister(store, ["candidate"])
    finally:
        store.close()
    panel.refresh_versions()
    assert [name for _, name in panel.checked_versions()] == [
        "wine-v1", "wine-v2", "wine-v3", "wine-v3@elsewhere"]
    # Delete drops a version added here; a registered one is removed in the Versions panel.
    panel.version_list.setCurrentRow(3)
    panel.version_list.setFocus()
    qtbot.keyClick(panel.version_list, Qt.Key.Key_Delete)
    assert [name for _, name in panel.checked_versions()] == ["wine-v1", "wine-v2", "wine-v3"]
    store = Store(demo_db)
    try:
        register(store, str(copy / "wine-v2.onnx"), "candidate")
    finally:
        store.close()
    panel.refresh_versions()
    panel.version_list.setCurrentRow(panel.version_list.count() - 1)
    with qtbot.waitSignal(panel.replay_failed, timeout=5_000) as refused:
        qtbot.keyClick(panel.version_list, Qt.Key.Key_Delete)
    assert "candidate is registered" in refused.args[0]
    assert panel.version_list.count() == 4


def test_a_server_registered_from_the_window_is_replayed_from_the_window(qtbot, demo_db,
                                                                          v2_server):
    from probes.onnx_local import available_providers

    versions_panel = VersionsPanel(demo_db, runs=30)
    qtbot.addWidget(versions_panel)
    with qtbot.waitSignal(versions_panel.versions_changed, timeout=10_000):
        versions_panel.add_version(f"v2+{v2_server}/models/wine-v2")
    assert versions_panel.table.item(0, 0).text() == "wine-v2"
    assert versions_panel.table.item(0, 2).text() == "remote"
    p = ReplayPanel(demo_db)
    qtbot.addWidget(p)
    try:
        # The provider for ONNX versions is the user's to pick, among those installed.
        assert [p.provider_box.itemData(i) for i in range(p.provider_box.count())] == (
            available_providers())
        assert p.provider == "cpu"
        assert [name for _, name in p.checked_versions()] == ["wine-v2"]
        p.limit_spin.setValue(40)
        p.controls_spin.setValue(10)
        load(qtbot, p)
        with qtbot.waitSignal(p.replay_finished, timeout=TIMEOUT_MS) as blocker:
            p.run_button.click()
        result = blocker.args[0]
        assert [r.version for r in result.runs] == ["wine-v2"]
        assert not result.runs[0].errors and len(result.cases) == 50
        # A model the server does not have is "no answer", not 50 failures of the version.
        with qtbot.waitSignal(versions_panel.versions_changed, timeout=10_000):
            versions_panel.add_version(f"v2+{v2_server}/models/wine-v2/versions/9")
        p.refresh_versions()
        with qtbot.waitSignal(p.replay_finished, timeout=TIMEOUT_MS) as blocker:
            p.run_button.click()
        missing = blocker.args[0].summaries()[1]
        assert (missing.version, missing.unanswered, missing.still_failing) == ("wine-v2@9", 50, 0)
        assert "HTTP 404" in missing.unanswered_reason
    finally:
        p.shutdown()
        versions_panel.shutdown()


def test_dragging_a_version_changes_the_bisect_order(qtbot, panel):
    assert panel.version_list.dragDropMode() == panel.version_list.DragDropMode.InternalMove
    model = panel.version_list.model()
    model.moveRow(model.index(0, 0).parent(), 2, model.index(0, 0).parent(), 0)  # v3 first
    assert [name for _, name in panel.checked_versions()] == ["wine-v3", "wine-v1", "wine-v2"]


def test_a_contract_check_can_be_cancelled_and_a_servers_model_is_not_checked(
        qtbot, workspace, versions):
    p = VersionsPanel(workspace, seed_versions=[str(v) for v in versions], runs=30)
    qtbot.addWidget(p)
    try:
        with qtbot.waitSignal(p.versions_changed, timeout=10_000):
            p.add_version("v2+http://127.0.0.1:8000/models/wine/versions/4")
        assert p.contract_table.item(3, 0).text() == "a server's model: no file to check"
        with qtbot.waitSignal(p.contracts_checked, timeout=60_000) as checked:
            p.check_contracts()
            assert p.cancel_button.isEnabled()
            p.table.selectRow(3)  # removing does not wait for the check: the files stay
            with qtbot.waitSignal(p.versions_changed, timeout=10_000):
                p.remove_button.click()
            p.cancel_button.click()
        assert [v.name for v in p.versions] == ["wine-v1", "wine-v2", "wine-v3"]
        assert len(checked.args[0]) < 3  # stopped after the version under way
        assert "cancelled before the rest" in p.status.text()
        assert not p.cancel_button.isEnabled() and p.check_button.isEnabled()
    finally:
        p.shutdown()


def test_registering_a_file_that_is_not_a_model_says_why_and_changes_nothing(qtbot, workspace,
                                                                            tmp_path):
    p = VersionsPanel(workspace)
    qtbot.addWidget(p)
    try:
        bad = tmp_path / "notes.onnx"
        bad.write_bytes(b"not a model")
        with qtbot.waitSignal(p.error_occurred, timeout=10_000) as failed:
            p.add_version(bad)  # read and hashed on the worker, the window stays live
        assert "cannot read" in failed.args[0] and "cannot read" in p.status.text()
        assert p.table.rowCount() == 0
    finally:
        p.shutdown()


def test_contract_results_belong_to_the_file_they_measured(qtbot, workspace, versions, tmp_path):
    p = VersionsPanel(workspace, seed_versions=[str(v) for v in versions[:1]], runs=20,
                      targets=("cpu", "cuda"))
    qtbot.addWidget(p)
    try:
        # No target: said, and nothing checked.
        p.targets_edit.setText(" , ")
        with qtbot.waitSignal(p.error_occurred, timeout=5_000) as refused:
            assert p.check_contracts() is None
        assert "at least one target" in refused.args[0]
        p.targets_edit.setText("cpu,cuda")
        with qtbot.waitSignal(p.contracts_checked, timeout=60_000):
            p.check_contracts()
        assert p.cell_status("wine-v1", "cpu") == "pass"
        # Checked again on cpu alone: the cuda result stands, and stays in sight.
        p.targets_edit.setText("cpu")
        with qtbot.waitSignal(p.contracts_checked, timeout=60_000):
            p.check_contracts()
        assert p.cell_status("wine-v1", "cuda") == "unreachable"
        headers = [p.contract_table.horizontalHeaderItem(c).text()
                   for c in range(p.contract_table.columnCount())]
        assert headers == ["cpu", "cuda"]
        # The name now points at another file (v3's weights, which fail the accuracy clause):
        # the old PASS says nothing about it.
        import shutil

        candidate = tmp_path / "wine-v1.onnx"
        shutil.copy(versions[2], candidate)
        for name in ("wine-v1.contract.toml", "validation.csv"):
            shutil.copy(versions[0].with_name(name), tmp_path / name)
        store = Store(workspace)
        try:
            from app.core.versions import register

            register(store, str(candidate), "wine-v1", replace=True)
        finally:
            store.close()
        p.refresh()
        assert p.cell_status("wine-v1", "cpu") is None
        assert p.contract_table.item(0, 0).text() == "not checked"
        with qtbot.waitSignal(p.contracts_checked, timeout=60_000):
            p.check_contracts()
        assert p.cell_status("wine-v1", "cpu") == "fail"
    finally:
        p.shutdown()


def test_a_servers_model_whose_name_is_taken_gets_its_host_in_the_name(qtbot, workspace):
    p = VersionsPanel(workspace)
    qtbot.addWidget(p)
    try:
        with qtbot.waitSignal(p.versions_changed, timeout=10_000):
            p.add_version("v2+http://127.0.0.1:8000/models/wine/versions/4")
        with qtbot.waitSignal(p.versions_changed, timeout=10_000):
            p.add_version("v2+http://127.0.0.1:9000/models/wine/versions/4")
        assert [v.name for v in p.versions] == ["wine@4", "wine@4@127.0.0.1:9000"]
        assert "registered as wine@4@127.0.0.1:9000" in p.status.text()
    finally:
        p.shutdown()


def test_slow_failures_are_held_to_the_version_that_recorded_them(qtbot, tmp_path, versions):
    import sqlite3

    from tests.replay.conftest import record_stream

    db = tmp_path / "slow.db"
    record_stream(db, versions[0], rows=120, extra="&slo_ms=0.000001")
    with sqlite3.connect(db) as conn:  # production's latency: paced, cold calls
        conn.execute("UPDATE captures SET latency_ms = 0.25 WHERE status = 'slow'")
        conn.execute("UPDATE endpoints SET slo_ms = 0.1")
    p = ReplayPanel(db, versions=[str(v) for v in versions[:2]])
    qtbot.addWidget(p)
    try:
        p.kind_box.setCurrentIndex(p.kind_box.findData("slow"))
        p.controls_spin.setValue(0)
        assert load(qtbot, p) > 10
        with qtbot.waitSignal(p.replay_finished, timeout=TIMEOUT_MS) as done:
            p.run_button.click()
        v1, _ = done.args[0].summaries()
        assert v1.fixed == 0 and v1.still_failing == v1.failures  # its own slowness stays
        assert "judged on their outputs only" not in p.summary.text()
        p.version_list.item(0).setCheckState(Qt.CheckState.Unchecked)  # without wine-v1
        with qtbot.waitSignal(p.replay_finished, timeout=TIMEOUT_MS):
            p.run_button.click()
        text = p.summary.text()
        assert "SLOW failures judged on their outputs only" in text
        assert "(model version 1.0.0) was not replayed" in text
        # Nothing registered carries that model version: ticking cannot help, and it says so.
        assert "no registered version is model version 1.0.0" in text
        from app.core.versions import register

        store = Store(db)
        try:
            register(store, str(versions[0]))
        finally:
            store.close()
        with qtbot.waitSignal(p.replay_finished, timeout=TIMEOUT_MS):
            p.run_button.click()
        assert "was not replayed" in p.summary.text()
        assert "no registered version" not in p.summary.text()
    finally:
        p.shutdown()


def test_a_cases_inputs_are_named_as_its_endpoint_names_them(qtbot, tmp_path, versions):
    """A model of the demo's width with inputs of its own: the case view names them from its
    probe's payload, not with the demo's wine columns, and a reopened replay does the same."""
    import pandas as pd

    from tests.replay.conftest import DEMO, record_stream

    rows = pd.read_csv(DEMO / "production.csv")
    sensors = [f"sensor_{i:02d}" for i in range(13)]
    rows.columns = ["id", *sensors, "label"]
    payload = tmp_path / "sensors.csv"
    rows.to_csv(payload, index=False)
    db = tmp_path / "sensors.db"
    record_stream(db, versions[0], rows=300, payload=payload)
    p = ReplayPanel(db, versions=[str(versions[1])])
    qtbot.addWidget(p)
    try:
        assert load(qtbot, p) > 0
        with qtbot.waitSignal(p.replay_finished, timeout=TIMEOUT_MS) as done:
            p.run_button.click()
        replay_id = done.args[0].replay_id
        with qtbot.waitSignal(p.case_selected, timeout=TIMEOUT_MS):
            p.select_result_row(0)
        names = [p.case_view.inputs.item(r, 0).text() for r in range(13)]
        assert names == sensors
        with qtbot.waitSignal(p.replay_finished, timeout=TIMEOUT_MS):
            p.open_replay(replay_id)
        with qtbot.waitSignal(p.case_selected, timeout=TIMEOUT_MS):
            p.select_result_row(1)
        assert p.case_view.inputs.item(12, 0).text() == "sensor_12"
    finally:
        p.shutdown()


def test_the_saved_box_names_each_replay_and_a_limited_one_says_how_many_matched(
        qtbot, panel, versions):
    """"#3 1001 cases" told saved replays apart by id alone, and the window never said that
    its list kept only the newest ``max`` failures of more."""
    panel.limit_spin.setValue(5)
    load(qtbot, panel)
    with qtbot.waitSignal(panel.replay_finished, timeout=TIMEOUT_MS) as blocker:
        panel.run_button.click()
    result = blocker.args[0]
    assert result.failures_matched is not None and result.failures_matched > 5
    text = re.sub("<[^>]+>", "", panel.summary.text())
    assert f"replayed 5 of {result.failures_matched} matching failures" in text
    assert main(["replay", "--db", str(panel.db_path), "--versions", str(versions[1]),
                 "--limit", "3", "--title", "v2 on the worst three"]) == 0
    panel.refresh_endpoints()
    box = panel.saved_box
    titled = box.itemText(box.findData(result.replay_id + 1))
    assert titled.startswith(f"#{result.replay_id + 1} v2 on the worst three · ")
    untitled = box.itemText(box.findData(result.replay_id))
    assert untitled.startswith(f"#{result.replay_id} every endpoint, every kind · ")
    tip = box.itemData(box.findData(result.replay_id), Qt.ItemDataRole.ToolTipRole)
    assert "wine-v1, wine-v2, wine-v3" in tip and "selected: every endpoint" in tip
