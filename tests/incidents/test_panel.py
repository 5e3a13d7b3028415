"""The incidents panel, a real widget offscreen on a real workspace: it lists incidents,
emits the selected one's window, acknowledges, resolves and keeps notes."""

from __future__ import annotations

import re
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from PySide6.QtCore import Qt

from app.core.store import Store
from app.gui.incidents_panel import SEVERITY_COLORS, STATUS_COLORS, IncidentsPanel
from tests.incidents.conftest import NS, T0, write_requests

EP_A, EP_B = "onnx:a.onnx", "onnx:b.onnx"


@pytest.fixture
def filled(workspace):
    store = Store(workspace)
    write_requests(store, EP_A, 0, 60)
    ids = [store.insert_incident(
        ep, rule=rule, severity=sev, status="open", opened_ns=T0 + k * 10 * NS,
        trigger_ns=T0 + (k * 10 + 5) * NS, value=0.4, threshold=0.15,
        summary=f"{rule} on {ep}", details={"detail": "x"}, note="Opened: x.")
        for k, (ep, rule, sev) in enumerate([(EP_A, "error_rate", "warning"),
                                             (EP_B, "latency", "critical")])]
    store.close()
    return workspace, ids


def test_the_panel_lists_incidents_newest_first(qtbot, filled):
    workspace, ids = filled
    panel = IncidentsPanel(workspace)
    qtbot.addWidget(panel)
    model = panel.model
    assert model.rowCount() == 2
    first = [model.data(model.index(0, c)) for c in range(model.columnCount())]
    assert first[0] == str(ids[1]) and first[1] == "Latency above SLO"
    assert first[2] == "onnx: b.onnx" and first[3] == "open · critical"
    colour = model.data(model.index(0, 3), Qt.ItemDataRole.ForegroundRole)
    assert colour == SEVERITY_COLORS["critical"]  # open: coloured by severity
    assert not panel.ack_button.isEnabled()  # nothing selected yet


def test_selecting_an_incident_emits_its_window_and_shows_its_notes(qtbot, filled):
    workspace, ids = filled
    panel = IncidentsPanel(workspace)
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.incident_selected) as signal:
        assert panel.select_incident(ids[0])
    start, end, endpoint = signal.args
    assert endpoint == EP_A
    assert start < T0 and end >= T0 + 5 * NS  # context before; an open one runs up to now
    assert "Opened: x." in panel.notes.toPlainText()
    assert panel.ack_button.isEnabled() and panel.export_button.isEnabled()


def test_acknowledge_resolve_and_notes_are_stored(qtbot, filled):
    workspace, ids = filled
    panel = IncidentsPanel(workspace)
    qtbot.addWidget(panel)
    panel.select_incident(ids[0])
    panel.ack_button.click()
    panel.note_edit.setText("rolled back to v2")
    qtbot.keyClick(panel.note_edit, "\r")
    panel.resolve_button.click()
    store = Store(workspace, readonly=True)
    try:
        incident = store.incident(ids[0])
        texts = [n["text"] for n in store.incident_notes(ids[0])]
    finally:
        store.close()
    assert incident["status"] == "resolved"
    assert texts == ["Opened: x.", "Acknowledged.", "rolled back to v2", "Resolved."]
    assert panel.selected_incident()["id"] == ids[0]  # the selection survives the refresh
    assert "rolled back to v2" in panel.notes.toPlainText()
    assert not panel.resolve_button.isEnabled()
    row = next(i for i, r in enumerate(panel.model.rows) if r["id"] == ids[0])
    state = panel.model.index(row, 3)
    assert panel.model.data(state).startswith("resolved · ")
    assert panel.model.data(state, Qt.ItemDataRole.ForegroundRole) == STATUS_COLORS["resolved"]


def test_export_asks_for_the_selected_incident(qtbot, filled):
    workspace, ids = filled
    panel = IncidentsPanel(workspace)
    qtbot.addWidget(panel)
    panel.select_incident(ids[1])
    with qtbot.waitSignal(panel.export_requested) as signal:
        panel.export_button.click()
    assert signal.args == [ids[1]]


def test_a_panel_on_a_workspace_without_incidents_is_empty(qtbot, workspace):
    Store(workspace).close()
    panel = IncidentsPanel(workspace)
    qtbot.addWidget(panel)
    assert panel.model.rowCount() == 0 and panel.summary.text() == "No incident selected"


def test_the_panel_follows_the_live_monitor(qtbot, workspace):
    # A real monitor on its own thread opens an incident; the panel hears of it on the GUI
    # thread and lists it.
    from app.core.domain import Batch, Metric, Sample
    from app.core.incidents import IncidentMonitor, RuleConfig

    store = Store(workspace)
    store.close()
    monitor = IncidentMonitor(workspace, defaults=RuleConfig(),
                              interval_s=3600, states=lambda: {EP_A: "down"})
    panel = IncidentsPanel(workspace)
    qtbot.addWidget(panel)
    panel.follow(monitor)
    store = Store(workspace)
    write_requests(store, EP_A, 0, 5)
    store.close()
    monitor(Batch(samples=(Sample(EP_A, T0, Metric.LATENCY_MS, 1.0),)))  # as the recorder does
    monitor.start()
    try:
        with qtbot.waitSignal(panel.incident_changed, timeout=10_000) as changed:
            monitor.evaluate_soon()
            monitor.evaluate_soon()
    finally:
        monitor.close()
    assert changed.args[0].kind == "opened"
    assert panel.model.rowCount() == 1 and panel.model.rows[0]["rule"] == "down"


def test_a_note_that_cannot_be_saved_is_kept_to_try_again(qtbot, filled):
    import sqlite3

    workspace, ids = filled
    panel = IncidentsPanel(workspace)
    qtbot.addWidget(panel)
    panel.select_incident(ids[0])
    panel.note_edit.setText("rolled back to v2")
    other = sqlite3.connect(workspace, isolation_level=None)  # another writer holds the lock
    other.execute("BEGIN IMMEDIATE")
    try:
        with qtbot.waitSignal(panel.error_occurred, timeout=10_000) as failed:
            qtbot.keyClick(panel.note_edit, "\r")
        assert "locked" in failed.args[0]
        assert panel.note_edit.text() == "rolled back to v2"  # nothing to retype
    finally:
        other.execute("ROLLBACK")
        other.close()
    qtbot.keyClick(panel.note_edit, "\r")
    assert panel.note_edit.text() == ""
    assert "rolled back to v2" in panel.notes.toPlainText()


def test_the_window_column_is_short_enough_for_the_dock(qtbot, workspace):
    import time

    store = Store(workspace)
    now = time.time_ns()
    for opened in (now - NS // 10, T0):  # today, and a day long past
        store.insert_incident(EP_A, rule="error_rate", severity="warning", status="open",
                              opened_ns=opened, trigger_ns=opened, value=0.4, threshold=0.15,
                              summary="s", details={"detail": "x"}, note="Opened: x.")
    store.close()
    panel = IncidentsPanel(workspace)
    qtbot.addWidget(panel)
    panel.model.set_watched({EP_A})  # a probe watches it: its open incidents run to now
    today, past = (panel.model.data(panel.model.index(r, 4)) for r in range(2))
    assert re.fullmatch(r"\d\d:\d\d:\d\d – now", today)  # no date for today
    assert re.fullmatch(r"\d\d \w{3} \d\d:\d\d – now", past)


def test_the_tooltip_gives_the_times_in_utc_as_the_report_does(qtbot, filled):
    from datetime import UTC, datetime

    workspace, _ = filled
    panel = IncidentsPanel(workspace)
    qtbot.addWidget(panel)
    tip = panel.model.data(panel.model.index(1, 0), Qt.ItemDataRole.ToolTipRole)
    opened = datetime.fromtimestamp(T0 / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    # Still open, with no clearing time; and no probe of this panel's watches it now.
    assert tip.splitlines()[-1] == (f"opened {opened}, still open; no probe watches its "
                                    "endpoint now")


def test_the_window_column_names_its_time_zone(qtbot, filled, monkeypatch):
    """The list shows local clock times, the PDF report UTC: the column says which, so a
    reader in Kolkata does not take 04:10 for the report's 22:40."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        panel = IncidentsPanel(filled[0])
        qtbot.addWidget(panel)
        header = panel.model.headerData(4, Qt.Orientation.Horizontal)
        opened = panel.model.data(panel.model.index(1, 4)).split(" – ")[0]
    finally:
        monkeypatch.undo()
        time.tzset()
    assert header == "Window (IST)"
    assert opened == datetime.fromtimestamp(T0 / NS, ZoneInfo("Asia/Kolkata")).strftime(
        "%d %b %H:%M")
