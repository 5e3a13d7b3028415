"""``probescope incidents``: judge history, list, acknowledge, note, resolve, set rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from app.cli import main
from app.core.store import Store
from tests.incidents.conftest import NS, T0, write_requests

EP = "onnx:cli.onnx"


def test_judge_list_ack_note_resolve(workspace, capsys):
    store = Store(workspace)
    write_requests(store, EP, 0, 60)
    write_requests(store, EP, 60, 180, failure_share=0.25)
    store.close()
    db = ["incidents", "--db", str(workspace)]
    assert main([*db, "evaluate"]) == 0
    judged = capsys.readouterr().out
    assert "1 incident(s) opened" in judged
    assert main(db) == 0
    listing = capsys.readouterr().out
    assert "Error-rate burst" in listing and EP in listing
    # evaluate names the opening time the list shows (the rule's first trip), then when the
    # engine confirmed it.
    opened = next(line for line in judged.splitlines() if " opened: " in line)
    assert opened.startswith(listing.splitlines()[1].split()[3] + " "
                             + listing.splitlines()[1].split()[4])
    assert "(confirmed " in opened
    # --db after the action too, as the other commands take it.
    assert main(["incidents", "ack", "--db", str(workspace), "latest", "--note", "looking"]) == 0
    assert main([*db, "note", "1", "labels were late"]) == 0
    assert main([*db, "resolve", "1"]) == 0
    capsys.readouterr()
    assert main([*db, "list", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["status"] == "resolved" and row["rule"] == "error_rate"
    store = Store(workspace, readonly=True)
    texts = [n["text"] for n in store.incident_notes(1)]
    store.close()
    assert texts[1:] == ["Acknowledged: looking", "labels were late", "Resolved."]


def test_rules_are_set_per_endpoint_and_bad_ones_refused(workspace, capsys):
    store = Store(workspace)
    store.endpoint_id(EP)
    store.close()
    db = ["incidents", "--db", str(workspace)]
    assert main([*db, "rules", EP, "error_rate=0.3", "disabled=memory,down"]) == 0
    out = capsys.readouterr().out
    assert "error_rate = 0.3 (set)" in out and "disabled = ['memory', 'down'] (set)" in out
    assert main([*db, "rules", EP, "eror_rate=1"]) == 2
    assert "unknown incident setting(s) eror_rate" in capsys.readouterr().err
    store = Store(workspace, readonly=True)
    assert store.incident_rules(EP) == {"error_rate": "0.3", "disabled": ["memory", "down"]}
    store.close()


def test_ack_of_a_missing_incident_says_so(qapp, workspace, capsys):
    Store(workspace).close()
    assert main(["incidents", "--db", str(workspace), "ack", "7"]) == 2
    assert "no incident 7" in capsys.readouterr().err
    huge = "9" * 23  # past SQLite's integers: no incident, not an internal error
    for argv in (["incidents", "--db", str(workspace), "note", huge, "hi"],
                 ["report", "--db", str(workspace), "--incident", huge, "--out",
                  str(workspace.parent / "r.pdf")]):
        assert main(argv) == 2
        assert f"no incident {huge}" in capsys.readouterr().err


def test_options_before_the_action_count_and_a_resolved_incident_stays_resolved(workspace,
                                                                                 capsys):
    store = Store(workspace)
    write_requests(store, EP, 0, 60)
    write_requests(store, EP, 60, 180, failure_share=0.25)
    store.close()
    db = ["incidents", "--db", str(workspace)]
    assert main([*db, "evaluate"]) == 0
    assert main([*db, "resolve", "latest"]) == 0
    capsys.readouterr()
    assert main([*db, "--status", "open", "list"]) == 0
    assert capsys.readouterr().out.strip() == "no incidents"
    assert main([*db, "--json", "list"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "resolved"
    assert main([*db, "ack", "1"]) == 2
    assert "is resolved, so there is nothing to acknowledge" in capsys.readouterr().err
    assert main([*db, "resolve", "1"]) == 0
    assert "already resolved" in capsys.readouterr().out
    store = Store(workspace, readonly=True)
    assert store.incidents()[0]["status"] == "resolved"
    assert [n["text"] for n in store.incident_notes(1)].count("Resolved.") == 1
    store.close()


def test_a_step_too_small_for_the_history_is_refused_not_run_for_hours(workspace, capsys):
    store = Store(workspace)
    write_requests(store, EP, 0, 180)
    store.close()
    db = ["incidents", "--db", str(workspace)]
    assert main([*db, "evaluate", "--step", "0.001"]) == 2
    err = capsys.readouterr().err
    assert "a step of 0.001 s over 180 s" in err and "evaluations; use a step of 1 s" in err
    for step in ("0", "-1", "nan", "inf"):
        with pytest.raises(SystemExit) as exited:
            main([*db, "evaluate", "--step", step])
        assert exited.value.code == 2
        assert f"'{step}'" in capsys.readouterr().err


def test_nonsense_rule_values_are_refused_before_they_are_kept(workspace, capsys):
    store = Store(workspace)
    store.endpoint_id(EP)
    store.close()
    db = ["incidents", "--db", str(workspace)]
    for setting, words in [("window_s=nan", "must be a finite number above 0"),
                           ("error_rate=-0.1", "must be a finite number of at least 0"),
                           ("open_after=0", "above 0"),
                           ("close_ratio=2", "must be at most 1")]:
        assert main([*db, "rules", EP, setting]) == 2
        assert words in capsys.readouterr().err
    store = Store(workspace, readonly=True)
    assert not store.incident_rules(EP)
    store.close()


def test_no_workspace_given_is_one_line(capsys):
    assert main(["incidents", "list"]) == 2
    assert capsys.readouterr().err == "probescope: incidents needs --db PATH (the workspace)\n"


def test_rules_without_an_endpoint_names_only_what_is_missing(workspace, capsys):
    Store(workspace).close()
    with pytest.raises(SystemExit) as stopped:  # argparse's own exit, as for any usage error
        main(["incidents", "--db", str(workspace), "rules"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "required: endpoint" in err and "KEY=VALUE" not in err  # the settings are optional


def test_no_action_starts_a_workspace_at_a_mistyped_path(tmp_path, capsys):
    for action in ([], ["evaluate"], ["ack", "1"], ["rules", EP], ["rules", EP, "error_rate=0.3"]):
        missing = tmp_path / "wrokspace.db"
        assert main(["incidents", "--db", str(missing), *action]) == 2
        assert f"no workspace at {missing}" in capsys.readouterr().err
        assert not missing.exists()


def test_a_quiet_stretch_in_an_imported_log_is_not_an_outage(workspace, capsys):
    store = Store(workspace)
    for ep in ("log:prod", EP):  # the same traffic, with a 10-minute lull
        write_requests(store, ep, 0, 60)
        write_requests(store, ep, 660, 720)
    store.close()
    assert main(["incidents", "--db", str(workspace), "evaluate"]) == 0
    capsys.readouterr()
    assert main(["incidents", "--db", str(workspace), "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    down = {r["endpoint"] for r in rows if r["rule"] == "down"}
    assert down == {EP}  # a probed endpoint that went quiet is down; a log that did is not
    # It says when the silence began (its last sample), not only how long it had lasted.
    last = datetime.fromtimestamp((T0 + 59.9 * NS) / NS, tz=UTC)
    [summary] = [r["summary"] for r in rows if r["rule"] == "down"]
    assert f"no samples since {last:%Y-%m-%d %H:%M:%S} UTC" in summary


def test_judging_the_same_history_twice_adds_nothing(workspace, capsys):
    store = Store(workspace)
    write_requests(store, EP, 0, 60)
    write_requests(store, EP, 60, 120, failure_share=0.25)
    write_requests(store, EP, 120, 300)  # it clears
    store.close()
    db = ["incidents", "--db", str(workspace)]
    assert main([*db, "evaluate"]) == 0
    first = capsys.readouterr().out
    assert "opened" in first and "cleared" in first
    store = Store(workspace, readonly=True)
    notes = [n["text"] for n in store.incident_notes(1)]
    store.close()
    assert main([*db, "evaluate"]) == 0
    again = capsys.readouterr().out
    assert "cleared" not in again and "0 incident(s) opened" in again
    store = Store(workspace, readonly=True)
    assert [n["text"] for n in store.incident_notes(1)] == notes  # no second "Cleared"
    store.close()


def test_a_log_imported_without_latencies_still_gets_error_rate_incidents(tmp_path, capsys):
    import pandas as pd

    rows = 600
    log = pd.DataFrame({
        "request_id": [f"r{i}" for i in range(rows)],
        "timestamp": pd.date_range("2026-11-01", periods=rows, freq="500ms", tz="UTC"),
        "f1": 1.0, "prediction": 1,
        # A burst of wrong answers from row 200 to 300 (a quarter of them wrong).
        "label": [0 if 200 <= i < 300 and i % 4 == 0 else 1 for i in range(rows)]})
    log.to_csv(tmp_path / "log.csv", index=False)
    db = tmp_path / "ws.db"
    assert main(["import", str(tmp_path / "log.csv"), "--db", str(db), "--endpoint",
                 "prod"]) == 0
    capsys.readouterr()
    assert main(["incidents", "--db", str(db), "evaluate"]) == 0
    out = capsys.readouterr().out
    assert "#1 opened: log:prod: Opened: 13 failures in 61 requests" in out
    assert "1 incident(s) opened" in out


def test_the_window_of_an_open_incident_holds_its_newest_sample(workspace):
    from app.core.domain import Metric
    from app.core.incidents import find_incident, incident_window
    from tests.incidents.conftest import NS, T0

    store = Store(workspace)
    try:
        write_requests(store, "onnx:a.onnx", 0, 1, rate_hz=1)  # one sample, at T0
        store.insert_incident("onnx:a.onnx", rule="latency", severity="warning", status="open",
                              opened_ns=T0 - NS, trigger_ns=T0 - NS, value=9.0, threshold=5.0,
                              summary="s", details={}, note="Opened: x.")
        incident = find_incident(store, "latest")
        start, end = incident_window(incident, last_ns=store.last_sample_ns("onnx:a.onnx"))
        drawn = store.history("onnx:a.onnx", Metric.LATENCY_MS, start, end)
        assert drawn.count.sum() == 1
    finally:
        store.close()


def test_resolving_records_when_and_the_rule_reopening_forgets_it(workspace, capsys):
    store = Store(workspace)
    try:
        write_requests(store, "onnx:a.onnx", 0, 5)
        store.insert_incident("onnx:a.onnx", rule="latency", severity="warning", status="open",
                              opened_ns=1, trigger_ns=1, value=9.0, threshold=5.0,
                              summary="s", details={}, note="Opened: x.")
        # A person's note that merely begins like a resolve, before the real one.
        store.add_incident_note(1, "Resolved: not yet, still looking", author="ann")
    finally:
        store.close()
    assert main(["incidents", "--db", str(workspace), "resolve", "1", "--note", "rolled back"]) == 0
    store = Store(workspace)
    try:
        incident = store.incident(1)
        notes = store.incident_notes(1)
        assert incident["status"] == "resolved" and incident["resolved_ns"] is not None
        resolve_note = next(n for n in notes if n["text"] == "Resolved: rolled back")
        assert incident["resolved_ns"] == resolve_note["ts_ns"]
        from app.report.data import resolve_time
        assert resolve_time(incident, notes) == resolve_note["ts_ns"]
        store.update_incident(1, status="open", cleared_ns=None, note="Reopened: back.")
        assert store.incident(1)["resolved_ns"] is None
    finally:
        store.close()


def test_a_report_path_ending_with_a_separator_is_refused(qapp, tmp_path, capsys):
    from tests.incidents.conftest import T0

    db = tmp_path / "w.db"
    store = Store(db)
    try:
        write_requests(store, "onnx:a.onnx", 0, 5)
        store.insert_incident("onnx:a.onnx", rule="latency", severity="warning", status="open",
                              opened_ns=T0, trigger_ns=T0, value=9.0, threshold=5.0,
                              summary="s", details={}, note="Opened: x.")
    finally:
        store.close()
    out = tmp_path / "newdir"
    assert main(["report", "--db", str(db), "--incident", "1", "--out", f"{out}/"]) == 2
    assert "names a folder" in capsys.readouterr().err and not out.exists()


def test_an_incident_the_rule_cleared_is_listed_as_cleared_not_resolved(workspace, capsys):
    store = Store(workspace)
    try:
        for _ in range(2):
            store.insert_incident("onnx:a.onnx", rule="latency", severity="warning",
                                  status="open", opened_ns=10**18, trigger_ns=10**18,
                                  value=9.0, threshold=5.0, summary="s", details={},
                                  note="Opened: x.")
        # As the engine clears one (app/core/incidents.py), and as a person resolves one.
        store.update_incident(1, cleared_ns=10**18 + 5, status="resolved", resolved_ns=None,
                              note="Cleared: back.", note_ts_ns=10**18 + 9)
        store.update_incident(2, status="resolved", note="Resolved.", note_author="ann")
    finally:
        store.close()
    assert main(["incidents", "--db", str(workspace)]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows == {"1": "cleared", "2": "resolved"}


V1 = "onnx:models/wine-v1.onnx?provider=cpu&slo_ms=5"
V2 = "onnx:models/wine-v2.onnx?provider=cpu"


@pytest.fixture
def two_endpoints(workspace):
    store = Store(workspace)
    for uri in (V1, V2):
        store.endpoint_id(uri, "onnx")
    store.set_endpoint_info(V1, slo_ms=5.0)
    store.close()
    return workspace


def test_rules_name_an_endpoint_as_replay_does_for_reading_and_writing(two_endpoints, capsys):
    db = ["incidents", "--db", str(two_endpoints)]
    assert main([*db, "rules", "wine-v1", "error_rate=0.3"]) == 0
    capsys.readouterr()
    store = Store(two_endpoints, readonly=True)
    assert store.incident_rules(V1) == {"error_rate": "0.3"}  # kept under its full URI
    store.close()
    # Read back by the short name, as it was set: the stored threshold, not the defaults.
    assert main([*db, "rules", "wine-v1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"incident rules of {V1}\n") and "error_rate = 0.3 (set)\n" in out
    assert main([*db, "rules", V1]) == 0
    assert capsys.readouterr().out == out
    # A name that names no endpoint (or two) is the one line replay --endpoint gives.
    for name in ("totally-not-an-endpoint", "wine"):
        for settings in ([], ["error_rate=0.2"]):
            assert main([*db, "rules", name, *settings]) == 2
            err = capsys.readouterr().err
            assert main(["replay", "--db", str(two_endpoints), "--endpoint", name,
                         "--no-save"]) == 2
            assert err == capsys.readouterr().err and err.count("\n") == 1
            assert ("no endpoint matching 'totally-not-an-endpoint'" in err if name != "wine"
                    else "'wine' matches 2 endpoints" in err)


def test_rules_say_which_slo_the_latency_rule_uses(two_endpoints, capsys):
    db = ["incidents", "--db", str(two_endpoints)]
    assert main([*db, "rules", "wine-v1"]) == 0
    assert "slo_ms = (the endpoint's SLO: 5 ms)\n" in capsys.readouterr().out
    assert main([*db, "rules", "wine-v2"]) == 0
    assert "slo_ms = (none: the endpoint has no SLO, so the latency rule does not run)\n" \
        in capsys.readouterr().out
    assert main([*db, "rules", "wine-v1", "slo_ms=8"]) == 0
    assert "slo_ms = 8.0 (set)\n" in capsys.readouterr().out
    # For scripts: the rules as numbers, null where the endpoint's own SLO applies.
    assert main([*db, "rules", "wine-v2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["endpoint"] == V2 and doc["rules"]["slo_ms"] is None
    assert doc["endpoint_slo_ms"] is None and doc["set"] == []
    assert main([*db, "--json", "rules", "wine-v1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rules"]["slo_ms"] == 8.0 and doc["endpoint_slo_ms"] == 5.0
    assert doc["set"] == ["slo_ms"] and doc["rules"]["error_rate"] == 0.15


def test_a_share_past_1_is_refused_as_a_threshold_that_never_trips(two_endpoints, capsys):
    db = ["incidents", "--db", str(two_endpoints)]
    for setting, rule in (("error_rate=2", "error_rate"), ("drift_share=1.5", "drift"),
                          ("error_rate=1", "error_rate"), ("error_rate=-0.1", None)):
        assert main([*db, "rules", "wine-v1", setting]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert (f"is a share and must be below 1 (0.2 is 20%); to switch the rule off, "
                f"give disabled={rule}" in err if rule else "of at least 0" in err)
    store = Store(two_endpoints, readonly=True)
    assert not store.incident_rules(V1)
    store.close()
    assert main([*db, "rules", "wine-v1", "error_rate=0.99", "drift_share=0"]) == 0
    assert "error_rate = 0.99 (set)" in capsys.readouterr().out


def test_a_stored_share_an_older_version_took_is_named_and_can_be_set_again(two_endpoints,
                                                                             capsys):
    store = Store(two_endpoints)
    store.set_incident_rules(V1, {"error_rate": "2", "window_s": "60"})  # as 0.x stored it
    store.close()
    db = ["incidents", "--db", str(two_endpoints)]
    assert main([*db, "rules", "wine-v1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"probescope: {V1} has a stored setting that is refused (incident "
                          "setting error_rate='2' is a share") and err.count("\n") == 1
    assert main([*db, "rules", "wine-v1", "error_rate=0.2"]) == 0
    out = capsys.readouterr().out
    assert "error_rate = 0.2 (set)" in out and "window_s = 60.0 (set)" in out
