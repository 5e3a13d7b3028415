"""An incident's life after the rules are done with it, as the person writing it up meets it:
resolving one the rule cleared, notes that must never be lost, reading one incident from the
CLI, a window acting on a stale row, and a peak whose value and threshold belong together.
Real workspaces (Store, the CLI's own entry), the real panel offscreen."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from app.cli import main
from app.core.domain import Metric, utc_text
from app.core.incident_rules import RuleConfig
from app.core.incidents import IncidentEngine, evaluate_range, status_text
from app.core.store import Store
from tests.incidents.conftest import NS, T0, write_requests, write_series

EP = "onnx:life.onnx"


def _notes(db: Path, incident_id: int = 1) -> list[str]:
    store = Store(db, readonly=True)
    try:
        return [n["text"] for n in store.incident_notes(incident_id)]
    finally:
        store.close()


def _incident(db: Path, incident_id: int = 1) -> dict:
    store = Store(db, readonly=True)
    try:
        row = store.incident(incident_id)
        assert row is not None
        return row
    finally:
        store.close()


@pytest.fixture
def cleared(workspace, capsys) -> Path:
    """An error-rate burst that the rule opened and then cleared by itself."""
    store = Store(workspace)
    write_requests(store, EP, 0, 60)
    write_requests(store, EP, 60, 120, failure_share=0.25)
    write_requests(store, EP, 120, 300)
    store.close()
    assert main(["incidents", "--db", str(workspace), "evaluate"]) == 0
    capsys.readouterr()
    row = _incident(workspace)
    assert status_text(row) == "cleared" and row["resolved_ns"] is None
    return workspace


# -- H3: resolving a cleared incident; a note is never dropped --------------------------------

def test_a_person_can_resolve_an_incident_the_rule_cleared_and_the_note_is_kept(cleared,
                                                                               capsys):
    db = ["incidents", "--db", str(cleared)]
    before = _incident(cleared)
    assert main([*db, "resolve", "1", "--note", "RCA: pod OOM-killed, see JIRA-123"]) == 0
    out = capsys.readouterr().out
    assert out == (f"incident #1 resolved (the rule had cleared it at "
                   f"{utc_text(before['cleared_ns'])})\n")
    after = _incident(cleared)
    # The rule's clearing stays (when the condition ended); the resolve says a person closed it.
    assert after["cleared_ns"] == before["cleared_ns"] and after["resolved_ns"] is not None
    assert status_text(after) == "resolved"
    assert _notes(cleared)[-1] == "Resolved: RCA: pod OOM-killed, see JIRA-123"
    assert main(db) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[1] == "resolved"


def test_resolving_again_keeps_the_note_and_says_when_it_was_resolved(cleared, capsys):
    db = ["incidents", "--db", str(cleared)]
    assert main([*db, "resolve", "1"]) == 0
    resolved_ns = _incident(cleared)["resolved_ns"]
    capsys.readouterr()
    assert main([*db, "resolve", "1", "--note", "second resolve note"]) == 0
    assert capsys.readouterr().out == (f"incident #1 is already resolved at "
                                       f"{utc_text(resolved_ns)}; note added\n")
    assert _notes(cleared)[-2:] == ["Resolved.", "second resolve note"]
    assert _incident(cleared)["resolved_ns"] == resolved_ns  # the first resolve stands
    # Without a note there is nothing to keep, and nothing is written.
    assert main([*db, "resolve", "1"]) == 0
    assert "already resolved at" in capsys.readouterr().out
    assert _notes(cleared)[-1] == "second resolve note"


def test_acknowledging_a_cleared_incident_is_refused_and_says_the_note_was_not_saved(cleared,
                                                                                    capsys):
    db = ["incidents", "--db", str(cleared)]
    notes = _notes(cleared)
    assert main([*db, "ack", "1", "--note", "looking"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "incident #1 is cleared (the rule saw it end at" in err
    assert "resolve it or add a note instead; the note was not saved" in err
    assert _notes(cleared) == notes


def test_the_rule_clearing_an_incident_a_person_resolved_keeps_the_resolve(workspace):
    store = Store(workspace)
    try:
        write_requests(store, EP, 0, 60)
        write_requests(store, EP, 60, 120, failure_share=0.25)
        write_requests(store, EP, 120, 300)
        # The live monitor's view: judged up to the burst, then a person resolves it.
        engine = IncidentEngine(store, RuleConfig())
        t = T0
        while t <= T0 + 120 * NS:
            engine.evaluate(t)
            t += 5 * NS
        assert store.incident(1)["status"] == "open"
        store.update_incident(1, status="resolved", note="Resolved: rolled back",
                              note_author="ann")
        resolved_ns = store.incident(1)["resolved_ns"]
        while t <= T0 + 300 * NS:  # ... and the rule sees the trouble end afterwards
            engine.evaluate(t)
            t += 5 * NS
        row = store.incident(1)
    finally:
        store.close()
    assert row["cleared_ns"] is not None and row["resolved_ns"] == resolved_ns
    assert status_text(row) == "resolved"


# -- M4: one incident and its notes from the CLI; --json after a change -----------------------

def test_show_gives_one_incident_with_its_notes_authors_and_utc_times(cleared, capsys):
    db = ["incidents", "--db", str(cleared)]
    assert main([*db, "note", "1", "labels were late\nby an hour"]) == 0
    capsys.readouterr()
    assert main([*db, "show", "1"]) == 0
    out = capsys.readouterr().out
    row = _incident(cleared)
    assert out.startswith("incident #1: Error-rate burst\nstatus     cleared · ")
    assert f"cleared    {utc_text(row['cleared_ns'])} (by the rule)\n" in out
    store = Store(cleared, readonly=True)
    notes = store.incident_notes(1)
    store.close()
    assert f"notes ({len(notes)}, times in UTC)\n" in out
    mine = notes[-1]
    stamp = utc_text(mine["ts_ns"]).removesuffix(" UTC")
    assert f"  {stamp}  {mine['author'] or '(no author)'}: labels were late\n    by an hour\n" \
        in out
    # The same from --db after the action, and for scripts.
    assert main(["incidents", "show", "--db", str(cleared), "latest", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["id"] == 1 and doc["state"] == "cleared" and doc["status"] == "resolved"
    assert [n["text"] for n in doc["notes"]] == [n["text"] for n in notes]
    assert doc["notes"][-1]["utc"] == utc_text(mine["ts_ns"])
    assert main([*db, "show", "7"]) == 2
    assert "no incident 7" in capsys.readouterr().err


def test_list_json_counts_notes_and_says_cleared(cleared, capsys):
    assert main(["incidents", "--db", str(cleared), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["state"] == "cleared" and row["note_count"] == len(_notes(cleared))


def test_ack_resolve_and_note_print_the_incident_after_the_change_with_json(workspace,
                                                                           capsys):
    store = Store(workspace)
    write_requests(store, EP, 0, 60)
    write_requests(store, EP, 60, 180, failure_share=0.25)
    store.close()
    db = ["incidents", "--db", str(workspace)]
    assert main([*db, "evaluate"]) == 0
    capsys.readouterr()
    assert main([*db, "ack", "1", "--note", "looking", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["state"] == "acknowledged" and doc["notes"][-1]["text"] == "Acknowledged: looking"
    assert main([*db, "--json", "note", "1", "labels were late"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["notes"][-1]["text"] == "labels were late"
    assert main([*db, "resolve", "--json", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["state"] == "resolved" and doc["resolved_ns"] == doc["notes"][-1]["ts_ns"]


# -- L3: an empty note is refused ------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_an_empty_note_is_refused_in_one_line(cleared, capsys, text):
    notes = _notes(cleared)
    assert main(["incidents", "--db", str(cleared), "note", "1", text]) == 2
    assert capsys.readouterr().err == ("probescope: a note needs some text; nothing was "
                                       "added\n")
    assert _notes(cleared) == notes


# -- L2: the first evaluate after a live recording adds no second "Cleared" ------------------

def test_judging_a_recorded_workspace_does_not_repeat_the_live_clearing(workspace, capsys):
    store = Store(workspace)
    try:
        write_requests(store, EP, 0, 60)
        write_requests(store, EP, 60, 120, failure_share=0.25)
        write_requests(store, EP, 120, 300)
        # What the live monitor recorded: the same rules, judged at other instants (2.5 s off
        # the command's 5 s grid), so its clearing time is not the one evaluate finds.
        live = evaluate_range(store, T0 + int(2.5 * NS), T0 + 300 * NS, step_s=5.0)
        assert [e.kind for e in live] == ["opened", "cleared"]
        recorded = store.incident(1)
    finally:
        store.close()
    notes = _notes(workspace)
    assert main(["incidents", "--db", str(workspace), "evaluate"]) == 0
    out = capsys.readouterr().out
    assert "cleared" not in out and "0 incident(s) opened" in out
    assert _notes(workspace) == notes
    assert _incident(workspace)["cleared_ns"] == recorded["cleared_ns"]


# -- M1: the stored peak's value and threshold are of one quantile ---------------------------

def test_a_p99_peak_is_stored_with_the_p99_threshold(workspace):
    store = Store(workspace)
    try:
        store.endpoint_id(EP, "onnx")
        store.set_endpoint_info(EP, slo_ms=5.0)  # p95 threshold 5 ms, p99 10 ms
        write_requests(store, EP, 0, 60, latency_ms=1.0)
        # Every request at 6 ms: p95 6 ms past its 5 ms; p99 6 ms well under its 10 ms.
        write_requests(store, EP, 60, 120, latency_ms=6.0)
        # Then a slow tail: p95 5.5 ms (1.1x its threshold), p99 40 ms (4x its threshold).
        write_series(store, EP, Metric.LATENCY_MS,
                     [(120 + i / 10, 40.0 if i % 33 == 0 else 5.5) for i in range(600)])
        evaluate_range(store, T0, T0 + 180 * NS, step_s=5.0,
                       defaults=RuleConfig(disabled=("down",)))
        [incident] = store.incidents()
    finally:
        store.close()
    detail = incident["details"]["detail"]
    assert incident["severity"] == "critical"
    assert incident["threshold"] == 10.0  # 2 x the SLO: p99's, as the value is
    assert f"p99 {incident['value']:.2f} ms" in detail and incident["value"] > 30
    assert incident["summary"].endswith(detail)


def test_a_p95_peak_is_not_replaced_by_a_larger_p99_that_is_less_past_its_threshold(
        workspace):
    store = Store(workspace)
    try:
        store.endpoint_id(EP, "onnx")
        store.set_endpoint_info(EP, slo_ms=5.0)
        write_requests(store, EP, 0, 60, latency_ms=1.0)
        write_requests(store, EP, 60, 120, latency_ms=9.0)  # p95 9 ms: 1.8x its 5 ms
        # p99 12 ms (1.2x its 10 ms) with p95 under its SLO: larger, but a lesser breach.
        write_series(store, EP, Metric.LATENCY_MS,
                     [(120 + i / 10, 12.0 if i % 33 == 0 else 2.0) for i in range(300)])
        evaluate_range(store, T0, T0 + 150 * NS, step_s=5.0,
                       defaults=RuleConfig(disabled=("down",)))
        [incident] = store.incidents()
    finally:
        store.close()
    assert incident["threshold"] == 5.0 and incident["value"] == pytest.approx(9.0)
    assert "p95 9.00 ms" in incident["details"]["detail"]


# -- the window: a stale row (L1), resolving a cleared one (H3), the notes' zone (L5) ---------

@pytest.fixture
def panel_on(qtbot):
    from app.gui.incidents_panel import IncidentsPanel

    def make(db: Path) -> IncidentsPanel:
        panel = IncidentsPanel(db)
        qtbot.addWidget(panel)
        return panel
    return make


def _open_incident(db: Path) -> None:
    store = Store(db)
    try:
        write_requests(store, EP, 0, 60)
        store.insert_incident(EP, rule="error_rate", severity="warning", status="open",
                              opened_ns=T0 + 10 * NS, trigger_ns=T0 + 15 * NS, value=0.4,
                              threshold=0.15, summary="s", details={"detail": "x"},
                              note="Opened: x.")
    finally:
        store.close()


def _clear_by_the_rule(db: Path) -> None:
    store = Store(db)
    try:  # as IncidentEngine._step writes a clearing
        store.update_incident(1, cleared_ns=T0 + 40 * NS, updated_ns=T0 + 70 * NS,
                              status="resolved", resolved_ns=None, note="Cleared: back.",
                              note_ts_ns=T0 + 70 * NS)
    finally:
        store.close()


def test_the_window_resolves_an_incident_the_rule_cleared(panel_on, workspace):
    _open_incident(workspace)
    _clear_by_the_rule(workspace)
    panel = panel_on(workspace)
    panel.select_incident(1)
    assert not panel.ack_button.isEnabled() and panel.resolve_button.isEnabled()
    panel.note_edit.setText("RCA: JIRA-123")
    panel.resolve_button.click()
    row = _incident(workspace)
    assert status_text(row) == "resolved" and row["cleared_ns"] == T0 + 40 * NS
    assert _notes(workspace)[-1] == "Resolved: RCA: JIRA-123"
    assert panel.note_edit.text() == "" and not panel.resolve_button.isEnabled()


def test_acknowledge_on_a_row_the_rule_cleared_meanwhile_is_refused(panel_on, workspace,
                                                                    qtbot):
    _open_incident(workspace)
    panel = panel_on(workspace)
    panel.select_incident(1)
    assert panel.ack_button.isEnabled()
    _clear_by_the_rule(workspace)  # the rule clears it; the list has not refreshed yet
    panel.note_edit.setText("looking")
    with qtbot.waitSignal(panel.error_occurred) as said:
        panel.ack_button.click()
    assert "incident #1 is cleared" in said.args[0] and "nothing to acknowledge" in said.args[0]
    assert status_text(_incident(workspace)) == "cleared"
    assert _notes(workspace)[-1] == "Cleared: back."
    # The list now shows it as it stands; the unsaved note is still there to resolve with.
    assert panel.model.data(panel.model.index(0, 3)).startswith("cleared · ")
    assert not panel.ack_button.isEnabled() and panel.resolve_button.isEnabled()
    assert panel.note_edit.text() == "looking"


def test_resolve_on_a_row_someone_resolved_meanwhile_adds_the_note_and_says_so(
        panel_on, workspace, qtbot, capsys):
    _open_incident(workspace)
    panel = panel_on(workspace)
    panel.select_incident(1)
    assert main(["incidents", "--db", str(workspace), "resolve", "1"]) == 0  # a colleague
    resolved_ns = _incident(workspace)["resolved_ns"]
    panel.note_edit.setText("rolled back to v2")
    with qtbot.waitSignal(panel.error_occurred) as said:
        panel.resolve_button.click()
    assert said.args[0] == (f"incident #1 is already resolved at {utc_text(resolved_ns)}; "
                            "note added")
    assert _notes(workspace)[-2:] == ["Resolved.", "rolled back to v2"]
    assert _incident(workspace)["resolved_ns"] == resolved_ns


def test_the_notes_pane_names_its_time_zone(panel_on, workspace, monkeypatch):
    _open_incident(workspace)
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        panel = panel_on(workspace)
        panel.select_incident(1)
        first = panel.notes.toPlainText().splitlines()[0]
    finally:
        monkeypatch.undo()
        time.tzset()
    opened = datetime.fromtimestamp((T0 + 15 * NS) / NS, ZoneInfo("America/New_York"))
    assert first == f"{opened:%d %b %H:%M} EST  probescope: Opened: x."
