"""``probescope incidents``: judge history, list, acknowledge, note, resolve, set rules."""

from __future__ import annotations

import json

from app.cli import main
from app.core.store import Store
from tests.incidents.conftest import write_requests

EP = "onnx:cli.onnx"


def test_judge_list_ack_note_resolve(workspace, capsys):
    store = Store(workspace)
    write_requests(store, EP, 0, 60)
    write_requests(store, EP, 60, 180, failure_share=0.25)
    store.close()
    db = ["incidents", "--db", str(workspace)]
    assert main([*db, "evaluate"]) == 0
    assert "1 incident(s) opened" in capsys.readouterr().out
    assert main(db) == 0
    listing = capsys.readouterr().out
    assert "Error-rate burst" in listing and EP in listing
    assert main([*db, "ack", "latest", "--note", "looking"]) == 0
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


def test_ack_of_a_missing_incident_says_so(workspace, capsys):
    Store(workspace).close()
    assert main(["incidents", "--db", str(workspace), "ack", "7"]) == 2
    assert "no incident 7" in capsys.readouterr().err
