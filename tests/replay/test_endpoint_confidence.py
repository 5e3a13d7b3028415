"""A replay holds every case to the minimum confidence its endpoint's probe flagged answers
below: a version answering the right class at too low a confidence would be flagged
LOW_CONFIDENCE in production, so it fixes nothing there (and it breaks a control)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.core.replay import (
    CONTROL_OK,
    FIXED,
    NEWLY_BROKEN,
    STILL_FAILING,
    Criteria,
    Selection,
    replay,
    select_case_set,
    select_cases,
)
from app.core.replay_targets import LocalOnnxTarget
from app.core.store import Store
from tests.conftest import DEMO
from tests.replay.test_replay_cli import run_json

SELECTION = Selection(limit=2000, controls=1000)


def _replayed(db: Path, versions: list[Path], *, held: bool = True, objects: bool = False):
    store = Store(db)
    try:
        cases = (select_cases if objects else select_case_set)(store, SELECTION)
        criteria = Criteria(endpoint_min_confidence=store.min_confidence_by_endpoint()
                            if held else {})
    finally:
        store.close()
    return replay(cases, [LocalOnnxTarget(v) for v in versions], criteria=criteria)


def _right_but_unsure(result, j: int) -> list[int]:
    """Cases whose label version ``j`` answers, below 0.6."""
    run, labels = result.runs[j], result.prepared.labels
    return np.flatnonzero((run.prediction == labels) & (run.confidence < 0.6)).tolist()


def test_a_right_answer_below_the_endpoints_minimum_fixes_nothing_and_breaks_a_control(
        demo_db: Path, versions: list[Path], recorded: tuple[Path, str]):
    assert Store(demo_db).min_confidence_by_endpoint() == {recorded[1]: 0.6}
    held = _replayed(demo_db, versions)
    loose = _replayed(demo_db, versions, held=False)
    changed = 0
    for j in range(len(versions)):
        unsure = _right_but_unsure(held, j)
        for i in unsure:
            if held.verdict(i, j) in (FIXED, CONTROL_OK):
                raise AssertionError(f"case {i} on {versions[j].stem}: right at "
                                     f"{held.runs[j].confidence[i]:.3f}, yet "
                                     f"{held.verdict(i, j)}")
            # Without the endpoint's minimum these read fixed, or fine as controls.
            if loose.verdict(i, j) in (FIXED, CONTROL_OK):
                changed += 1
                assert held.verdict(i, j) in (STILL_FAILING, NEWLY_BROKEN)
        for i in range(len(held.cases)):
            if held.verdict(i, j) in (FIXED, CONTROL_OK):
                assert held.runs[j].confidence[i] >= 0.6 or np.isnan(held.runs[j].confidence[i])
    assert changed > 10  # the rule bites on the demo's data, on some version
    # Each such case says why, in the rule's own words; a wrong class says so too.
    j = next(j for j in range(len(versions)) if _right_but_unsure(held, j))
    i = _right_but_unsure(held, j)[0]
    assert held.reasons(i, j) == [f"confidence {held.runs[j].confidence[i]:.3f} under 0.6 "
                                  "(its endpoint's minimum)"]
    wrong = next(i for i in range(len(held.cases))
                 if held.label(i) is not None and held.runs[j].prediction[i] >= 0
                 and held.runs[j].prediction[i] != held.prepared.labels[i])
    assert held.reasons(wrong, j)[0] == (f"class {held.runs[j].prediction[wrong]}, labelled "
                                         f"{held.label(wrong)}")
    fine = next(i for i in range(len(held.cases)) if held.verdict(i, j) in (FIXED, CONTROL_OK))
    assert held.reasons(fine, j) == []
    summaries = {s.version: s for s in held.summaries()}
    for s in loose.summaries():
        assert summaries[s.version].fixed <= s.fixed
        assert summaries[s.version].newly_broken >= s.newly_broken
    # The window's path (Case objects) holds each case to its endpoint's minimum too.
    objects = _replayed(demo_db, versions, objects=True)
    assert [f.tolist() for f in objects.failing] == [f.tolist() for f in held.failing]


def test_an_endpoint_probed_without_a_minimum_keeps_the_replays_rules(demo_db: Path,
                                                                      versions: list[Path]):
    with sqlite3.connect(demo_db) as conn:  # as if probed without min_confidence
        conn.execute("UPDATE endpoints SET uri = replace(uri, '&min_confidence=0.6', '')")
    assert Store(demo_db).min_confidence_by_endpoint() == {}
    held = _replayed(demo_db, versions)
    assert held.confidence_limits is None
    unsure = _right_but_unsure(held, 1)
    mismatches = [i for i in unsure if held.kind(i) == "mismatch"]
    assert mismatches and all(held.verdict(i, 1) == FIXED for i in mismatches)
    # Low-confidence captures are still held to the replay's own minimum (0.6).
    low = [i for i in unsure if held.kind(i) == "low_confidence"]
    assert all(held.verdict(i, 1) == STILL_FAILING for i in low)
    assert held.confidence_check(low[0], held.runs[1].confidence[low[0]])[0] == 0.6 \
        if low else True
    assert held.confidence_check(mismatches[0], held.runs[1].confidence[mismatches[0]]) is None


def test_the_minimum_a_probe_was_given_as_an_option_is_recorded(tmp_path: Path):
    from app.core.monitor import Monitor
    from probes.base import ProbeOptions

    db = tmp_path / "w.db"
    monitor = Monitor(db)
    try:
        probe = monitor.attach(f"onnx:{DEMO / 'wine-v1.onnx'}?provider=cpu&rate=0",
                               ProbeOptions(min_confidence=0.7), start=False)
    finally:
        monitor.close()
    assert "min_confidence" not in probe.endpoint
    assert Store(db).min_confidence_by_endpoint() == {probe.endpoint: 0.7}


def test_an_older_workspace_reads_the_minimum_from_the_endpoints_uri(demo_db: Path,
                                                                     recorded: tuple[Path, str]):
    with sqlite3.connect(demo_db) as conn:  # the schema before the column
        conn.execute("ALTER TABLE endpoints DROP COLUMN min_confidence")
        conn.execute("DELETE FROM migrations WHERE name = 'endpoints_min_confidence'")
    store = Store(demo_db)
    try:
        assert "endpoints_min_confidence" in store.applied_migrations()
        assert store.min_confidence_by_endpoint() == {recorded[1]: 0.6}
    finally:
        store.close()


def test_the_cli_holds_every_case_to_a_given_minimum_instead(capsys, demo_db: Path,
                                                             versions: list[Path]):
    args = ["replay", "--db", str(demo_db), "--versions", str(versions[1]), "--limit", "2000",
            "--controls", "1000", "--no-save", "--json"]
    _, by_endpoint = run_json(capsys, args)
    _, given = run_json(capsys, [*args, "--min-confidence", "0.6"])
    _, none = run_json(capsys, [*args, "--min-confidence", "0"])
    held = _replayed(demo_db, versions[1:])
    assert by_endpoint["versions"][0]["fixed"] == held.summaries()[0].fixed
    assert given["versions"][0]["fixed"] == by_endpoint["versions"][0]["fixed"]
    assert none["versions"][0]["fixed"] > given["versions"][0]["fixed"]
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    assert "minimum its endpoint was probed" in capsys.readouterr().out.replace("\n", " ")


def test_cases_from_several_endpoints_are_each_held_to_their_own(tmp_path: Path,
                                                                   versions: list[Path]):
    from tests.replay.conftest import record_stream

    db = tmp_path / "two.db"
    first = record_stream(db, versions[0], rows=1500)
    second = record_stream(db, versions[1], rows=1500)
    store = Store(db)
    try:
        store.set_endpoint_info(second, min_confidence=0.9)  # given as an option: it wins
        assert store.min_confidence_by_endpoint() == {first: 0.6, second: 0.9}
    finally:
        store.close()
    columns = _replayed(db, versions)
    objects = _replayed(db, versions, objects=True)
    endpoints = [c.capture.endpoint for c in objects.cases]
    assert set(endpoints) == {first, second}
    expected = [0.6 if e == first else 0.9 for e in endpoints]
    assert columns.confidence_limits.tolist() == objects.confidence_limits.tolist() == expected
    assert [f.tolist() for f in columns.failing] == [f.tolist() for f in objects.failing]
    # One endpoint chosen: its cases alone, all held to its minimum, with no column read.
    store = Store(db)
    try:
        one = select_case_set(store, Selection(endpoint=second, limit=2000, controls=1000))
    finally:
        store.close()
    assert one.endpoint_of == {None: second} and not one.endpoint_keys  # no column read
    assert one.confidence_limits({first: 0.6, second: 0.9}).tolist() == [0.9] * len(one)


def test_a_reason_names_whose_minimum_and_never_prints_the_confidence_at_it(
        demo_db: Path, versions: list[Path], recorded: tuple[Path, str]):
    store = Store(demo_db)
    try:
        cases = select_case_set(store, SELECTION)
    finally:
        store.close()
    targets = [LocalOnnxTarget(v) for v in versions[1:2]]
    given = replay(cases, targets, criteria=Criteria(0.9, min_confidence_for_all=True))
    whys = [w for i in range(len(cases)) for w in given.reasons(i, 0) if "under" in w]
    assert whys and all(w.endswith("under 0.9 (the replay's minimum)") for w in whys)
    # A minimum a hair above a confidence that rounds up to it at 3 decimals.
    run = given.runs[0]
    i = next(i for i in range(len(cases)) if given.kind(i) == "ok" and
             float(run.confidence[i]) < round(float(run.confidence[i]), 3) < 1)
    limit = round(float(run.confidence[i]), 3)
    held = replay(cases, targets, criteria=Criteria(endpoint_min_confidence={
        recorded[1]: limit}))
    [why] = [w for w in held.reasons(i, 0) if w.startswith("confidence ")]
    shown = float(why.split()[1])
    assert shown < limit and why.endswith(f"under {limit:g} (its endpoint's minimum)"), why


def test_a_replay_says_what_it_was_judged_with_and_show_keeps_it(capsys, demo_db: Path,
                                                                  versions: list[Path]):
    run = ["replay", "--db", str(demo_db), "--versions", *map(str, versions)]
    assert main(run) == 0
    out = capsys.readouterr().out
    assert ("judged with: each case held to its endpoint's minimum confidence (0.6) where it "
            "had one, else low-confidence captures to 0.6") in out
    bisect = next(line for line in out.splitlines() if "first failing version:" in line)
    firsts = bisect.split("first failing version: ")[1].split(", ")
    assert [f.split()[0] for f in firsts] == sorted(
        (f.split()[0] for f in firsts), key=["wine-v1", "wine-v2", "wine-v3", "none"].index)
    assert main([*run, "--min-confidence", "0.9", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["criteria"]["min_confidence"] == 0.9 and doc["criteria"]["min_confidence_for_all"]
    assert main(["replay", "--db", str(demo_db), "--show", "latest"]) == 0
    assert "judged with: every case held to confidence 0.9" in capsys.readouterr().out
    assert main(["replay", "--db", str(demo_db), "--list"]) == 0
    newest, older = capsys.readouterr().out.splitlines()[1:3]
    assert newest.endswith("(every case held to confidence 0.9)")
    assert older.endswith("wine-v3")  # held to its endpoints' own minimums
    # A saved replay is shown as it was judged: a threshold for a new run is refused.
    assert main(["replay", "--db", str(demo_db), "--show", "latest",
                 "--min-confidence", "0.5"]) == 2
    assert "--min-confidence shapes a new replay; --show reads saved ones as they were " \
        "judged" in capsys.readouterr().err
