"""The window's docked panels as a user meets them: the demo with its remote endpoint, a live
incident moving the plots, Ctrl+E writing its report (or saying why not), a clean close."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import pytest
from pypdf import PdfReader
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QFileDialog, QMessageBox, QPushButton

from app.core.demo import model_path
from app.core.store import Store
from app.gui.attach_dialog import EXAMPLES
from app.gui.demo import start_demo
from app.gui.main_window import MainWindow
from probes import schemes

pytestmark = pytest.mark.timeout(120)

# Loose rules on one endpoint so the demo stream's mislabelled rows open an error-rate incident
# at the first evaluation, instead of after the default 30 s window and two evaluations.
LOOSE_RULES = {"error_rate": 0.01, "min_failures": 1, "min_requests": 5, "open_after": 1,
               "window_s": 60.0}
BACKGROUND_THREADS = ("probe ", "recorder", "incidents", "drift", "demo-server")


def _background_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.is_alive() and t.name.startswith(BACKGROUND_THREADS)]


def _press_ctrl_e(window, qtbot) -> None:
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5_000)
    qtbot.keyClick(window, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)


@pytest.fixture
def incident(window, qtbot) -> tuple[int, str]:
    """A real incident: a live probe's failures judged by the window's own IncidentMonitor."""
    probe = window.attach(f"onnx:{model_path('wine-v1')}?provider=cpu&rate=200"
                          f"&payload={model_path('wine-v1').parent / 'production.csv'}")
    store = Store(window.db_path)
    try:
        store.set_incident_rules(probe.endpoint, LOOSE_RULES)
    finally:
        store.close()
    qtbot.waitUntil(lambda: probe.errors >= 5, timeout=20_000)
    panel = window.workbench.incidents
    with qtbot.waitSignal(panel.incident_changed, timeout=20_000):
        window.workbench.incident_monitor.evaluate_soon()
    qtbot.waitUntil(lambda: panel.model.rowCount() > 0, timeout=5_000)
    return int(panel.model.rows[0]["id"]), probe.endpoint


def test_the_demo_docks_every_panel_and_feeds_a_live_remote_endpoint(window, qtbot):
    start_demo(window)
    docks = {d.windowTitle(): d for d in window.findChildren(QDockWidget)}
    assert {"Endpoints", "Incidents", "Replay", "Versions", "Drift"} <= set(docks)
    names = [d.objectName() for d in docks.values()]
    assert all(names) and len(set(names)) == len(names)  # saveState needs unique names
    toggles = {a.text() for a in window.actions.view_menu.actions()}
    assert {"Incidents", "Replay", "Versions", "Drift"} <= toggles
    assert {d.windowTitle() for d in window.tabifiedDockWidgets(docks["Drift"])} == {
        "Replay", "Versions"}  # one tabbed group under the plots
    # The remote endpoint: a real v2 server on 127.0.0.1, probed over HTTP.
    remote = [e for e in window.monitor.probes if e.startswith("v2+http://127.0.0.1:")]
    assert len(remote) == 1 and "/models/wine-v2" in remote[0]
    assert remote[0] in window.endpoint_list.endpoints()
    probe = window.monitor.probes[remote[0]]
    window.endpoint_list.select(remote[0])

    def remote_plotted() -> bool:
        window.live.show_endpoint(remote[0])  # plots scrolled out of view are not drawn
        return window.panels[remote[0]].latency_plot.point_count() > 0

    qtbot.waitUntil(remote_plotted, timeout=15_000)
    assert probe.requests > 0 and str(probe.state) in ("up", "degraded")
    # Versions to replay on and references for drift are in the workspace.
    assert window.workbench.versions.table.rowCount() == 3
    assert len(window.workbench.replay.checked_versions()) == 3
    store = Store(window.db_path)
    try:
        assert store.count_samples(remote[0], "latency_ms") > 0
        assert all(store.drift_reference(e) is not None for e in window.monitor.probes
                   if not e.startswith("system:"))
    finally:
        store.close()


def test_the_drift_panel_follows_the_windows_drift_monitor_on_the_demo(window, qtbot):
    start_demo(window)
    production = next(iter(window.monitor.probes))
    drift = window.workbench.drift
    assert drift.endpoint() == production  # the first endpoint with a reference
    probe = window.monitor.probes[production]
    qtbot.waitUntil(lambda: probe.requests >= 120, timeout=20_000)  # min_rows captured
    before = drift.heatmap.shape[0]
    with qtbot.waitSignal(drift.refreshed, timeout=30_000):
        window.workbench.drift_monitor.evaluate_soon()
    qtbot.waitUntil(lambda: drift.heatmap.shape[0] > before, timeout=30_000)
    assert drift.heatmap.shape[1] >= 13  # the wine features (and the prediction)
    # The endpoint's live view plots the share of drifted features over time too.
    live = window.panels[production]
    assert live.drift_plot is not None and live.drift_plot in live.plots()
    qtbot.waitUntil(lambda: live.series.ring("drift_share").n > 0, timeout=5_000)
    _, shares = live.series.ring("drift_share").since(0)
    assert ((shares >= 0) & (shares <= 100)).all()


def test_selecting_a_live_incident_moves_the_plots_and_the_replay_range(window, qtbot,
                                                                        incident):
    incident_id, endpoint = incident
    panel = window.workbench.incidents
    assert panel.model.rows[0]["endpoint"] == endpoint
    with qtbot.waitSignal(panel.incident_selected, timeout=5_000) as picked:
        panel.select_incident(incident_id)
    start_ns, end_ns, _ = picked.args
    assert window.live_paused
    (x0, x1), _ = window.panels[endpoint].latency_plot.getViewBox().viewRange()
    assert (x0, x1) == pytest.approx((start_ns / 1e9, end_ns / 1e9))
    replay = window.workbench.replay
    assert replay.selection().start_ns == start_ns and replay.selection().end_ns == end_ns
    assert replay.selection().endpoint == endpoint


def test_a_live_incident_is_shaded_on_its_endpoints_plots_until_resolved(window, qtbot,
                                                                          incident):
    incident_id, endpoint = incident
    panel = window.panels[endpoint]
    row = window.workbench.incidents.model.rows[0]
    for plot in panel.plots():
        (span,) = plot.incident_marks.spans
        assert span.incident_id == incident_id and span.open
        assert span.start_s == pytest.approx(row["opened_ns"] / 1e9)
        region, label = plot.incident_marks._regions[0]
        assert region.isVisible() and region.getRegion()[0] == pytest.approx(span.start_s)
        assert label.format.startswith(f"#{incident_id} ")
        assert label.isVisible() == (plot is panel.plots()[0])  # one label a row
    # An open incident's band keeps reaching to now.
    first_end = panel.latency_plot.incident_marks.spans[0].end_s
    qtbot.waitUntil(lambda: panel.latency_plot.incident_marks.spans[0].end_s > first_end + 1,
                    timeout=10_000)
    assert all(not p.incident_marks.spans for e, other in window.panels.items()
               if e != endpoint for p in other.plots())
    # Resolved by a person: the band stops where it was resolved and stops growing.
    window.workbench.incidents.select_incident(incident_id)
    window.workbench.incidents.set_status("resolved")
    qtbot.waitUntil(lambda: not panel.latency_plot.incident_marks.spans[0].open, timeout=5_000)
    end = panel.latency_plot.incident_marks.spans[0].end_s
    qtbot.wait(2_500)
    assert panel.latency_plot.incident_marks.spans[0].end_s == end


def test_ctrl_e_writes_the_incident_report_as_pdf(window, qtbot, incident, tmp_path,
                                                  monkeypatch):
    incident_id, _ = incident
    out = tmp_path / "report.pdf"
    asked: list[str] = []

    def save_dialog(parent, caption, default, filters):
        asked.append(default)
        return str(out), filters

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_dialog)
    with qtbot.waitSignal(window.workbench.report_exported, timeout=60_000) as done:
        _press_ctrl_e(window, qtbot)
    assert Path(asked[0]).name == f"incident-{incident_id}.pdf"
    assert done.args == [str(out)]
    text = " ".join(" ".join(page.extract_text().split()) for page in PdfReader(out).pages)
    assert f"Incident #{incident_id}" in text
    assert "wine-v1" in text
    assert str(out) in window.statusBar().currentMessage()


def test_exporting_to_an_unwritable_path_shows_an_error_and_writes_nothing(window, qtbot,
                                                                          incident, tmp_path):
    incident_id, _ = incident
    out = tmp_path / "no-such-folder" / "report.pdf"
    with qtbot.waitSignal(window.workbench.report_failed, timeout=30_000) as failed:
        window.workbench.export_incident(incident_id, out)
    assert "does not exist" in failed.args[0]
    box = window.workbench.message_box
    assert box is not None and box.isVisible()
    assert box.icon() == QMessageBox.Icon.Warning and "no-such-folder" in box.text()
    assert not out.exists()
    box.close()


def test_cancelling_an_export_writes_nothing_and_says_so(window, qtbot, incident, tmp_path):
    incident_id, _ = incident
    out = tmp_path / "cancelled.pdf"
    workbench = window.workbench
    with qtbot.waitSignal(workbench.report_failed, timeout=30_000):
        workbench.export_incident(incident_id, out)
        workbench.progress_dialog.findChild(QPushButton).click()  # its Cancel button
    assert not out.exists() and not list(tmp_path.glob("*.pdf"))
    assert "cancelled" in window.statusBar().currentMessage()
    assert workbench.message_box is None  # a cancel is not an error
    assert workbench.progress_dialog is None


def test_switching_theme_rebuilds_the_drift_panel_in_its_colours(window, qtbot):
    old = window.workbench.drift
    window.set_theme("light" if window.theme.name == "dark" else "dark")
    assert window.workbench.drift is not old
    assert window.workbench.docks["Drift"].widget().widget() is window.workbench.drift


def test_ctrl_e_with_no_incident_says_so(window, qtbot):
    _press_ctrl_e(window, qtbot)
    box = window.workbench.message_box
    assert box is not None and box.isVisible()
    assert "no incident" in box.text().lower()
    box.close()


def test_closing_the_demo_window_stops_every_thread_and_the_remote_server(window, qtbot):
    start_demo(window)
    server = window.demo_server
    qtbot.waitUntil(lambda: window.monitor.stats().committed_samples > 50, timeout=10_000)
    assert {"incidents", "drift", "demo-server"} <= {n.split(" ")[0]
                                                     for n in _background_threads()}
    window.close()
    assert not _background_threads()
    assert window.demo_server is None and server.server.fileno() == -1  # its socket is shut


def test_the_attach_dialog_has_an_example_for_every_registered_scheme(window, qtbot):
    assert set(schemes()) <= set(EXAMPLES)
    dialog = window.show_attach_dialog()
    for i in range(dialog.kind.count()):
        dialog.kind.setCurrentIndex(i)
        scheme = dialog.kind.itemData(i)
        assert EXAMPLES[scheme].startswith(f"{scheme}:")
        assert EXAMPLES[scheme] in dialog.hint.text()
    dialog.close()


@pytest.mark.automatic_gc  # it checks that the window turns automatic collection back on
def test_garbage_is_collected_on_the_gui_thread_while_the_window_lives(window, qtbot):
    assert not gc.isenabled()  # no collection on the monitors' or probes' threads

    class Node:
        pass

    node = Node()
    node.me = node  # a cycle: only the collector frees it
    ref = weakref.ref(node)
    del node
    junk = [[] for _ in range(5_000)]  # past the youngest generation's threshold
    qtbot.waitUntil(lambda: ref() is None, timeout=5_000)
    del junk
    window.shutdown()
    assert gc.isenabled()


def test_the_dock_layout_is_remembered_by_the_next_window(window, qtbot, workspace):
    docks = window.workbench.docks
    docks["Versions"].raise_()
    docks["Incidents"].hide()  # the user closed it
    window.close()
    again = MainWindow(workspace)
    qtbot.addWidget(again)
    again.show()
    qtbot.waitExposed(again)
    try:
        restored = again.workbench.docks
        shown = {t: d.toggleViewAction().isChecked() for t, d in restored.items()}
        assert shown == {"Incidents": False, "Drift": True, "Replay": True, "Versions": True}
        assert not restored["Incidents"].isVisible()
    finally:
        again.shutdown()


def test_the_replay_tab_grows_to_a_workable_height_once(window, qtbot):
    """The tabbed docks start short (the plots keep the room); raising Replay the first time
    gives it rows to work in, and a height the user chooses afterwards is kept."""
    from app.gui.workbench import WORK_DOCK_HEIGHT_PX

    window.resize(1600, 1000)
    docks = window.workbench.docks
    qtbot.waitUntil(lambda: docks["Drift"].isVisible(), timeout=5_000)
    start = docks["Drift"].height()
    assert start < WORK_DOCK_HEIGHT_PX - 50
    docks["Replay"].raise_()
    want = min(WORK_DOCK_HEIGHT_PX, int(window.height() * 0.55))
    # resizeDocks sizes the dock area; the dock itself is that less its tab bar
    qtbot.waitUntil(lambda: docks["Replay"].height() >= 0.9 * want, timeout=5_000)
    window.resizeDocks([docks["Replay"]], [start], Qt.Orientation.Vertical)  # the user's call
    qtbot.waitUntil(lambda: docks["Replay"].height() < want - 50, timeout=5_000)
    docks["Drift"].raise_()
    docks["Replay"].raise_()
    qtbot.wait(100)
    assert docks["Replay"].height() < want - 50


def test_an_incident_resolved_by_hand_is_shaded_up_to_its_resolve():
    from app.gui.workbench import incident_spans

    NS = 1_000_000_000
    row = {"id": 1, "endpoint": "onnx:a.onnx", "rule": "latency", "status": "resolved",
           "opened_ns": 100 * NS, "cleared_ns": None, "updated_ns": 105 * NS,
           "resolved_ns": 160 * NS}
    (span,) = incident_spans([row], now_s=1000.0)["onnx:a.onnx"]
    assert (span.start_s, span.end_s) == (100.0, 160.0) and not span.open


def test_an_open_incident_of_an_endpoint_no_probe_watches_ends_at_its_newest_sample():
    """A workspace reopened later shaded its open incident up to now, as if the endpoint
    were still failing; nothing has judged it past its last sample (the PDF stops there)."""
    from app.gui.workbench import incident_spans

    NS = 1_000_000_000
    rows = [{"id": k, "endpoint": e, "rule": "error_rate", "status": "open",
             "opened_ns": 100 * NS, "cleared_ns": None, "updated_ns": 105 * NS}
            for k, e in ((1, "onnx:watched.onnx"), (2, "onnx:stopped.onnx"))]
    spans = incident_spans(rows, now_s=1000.0, quiet_until_s={"onnx:stopped.onnx": 135.0})
    assert (spans["onnx:watched.onnx"][0].end_s, spans["onnx:stopped.onnx"][0].end_s) == \
        (1000.0, 135.0)
    assert spans["onnx:stopped.onnx"][0].open


def test_an_open_incident_reads_to_now_only_while_a_probe_watches_its_endpoint(window, qtbot,
                                                                              incident):
    """A recording reopened later listed its open incident as "07:42:20 – now" though
    nothing had measured the endpoint since it ended."""
    _, endpoint = incident
    model = window.workbench.incidents.model

    def window_text() -> str:
        return model.data(model.index(0, 4))

    qtbot.waitUntil(lambda: window_text().endswith("– now"), timeout=10_000)
    window.detach(endpoint)
    qtbot.waitUntil(lambda: window_text().endswith("– open"), timeout=10_000)
    assert "no probe watches its endpoint now" in model.data(
        model.index(0, 4), Qt.ItemDataRole.ToolTipRole)
