"""The CLI as a user runs it: versions add/list, contract check, replay (text and JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.core.store import Store
from tests.conftest import DEMO
from tests.servers.process import free_port


def run_json(capsys, argv: list[str]) -> tuple[int, dict]:
    code = main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_replay_json_shows_v2_fixing_and_v3_breaking(capsys, demo_db: Path, versions):
    code, doc = run_json(capsys, ["replay", "--db", str(demo_db), "--versions",
                                  *map(str, versions), "--json"])
    assert code == 0
    v1, v2, v3 = doc["versions"]
    assert [v["version"] for v in doc["versions"]] == ["wine-v1", "wine-v2", "wine-v3"]
    for v in doc["versions"]:
        assert set(v) >= {"version", "cases", "fixed", "still_failing", "newly_broken",
                          "latency_ms"}
        assert set(v["latency_ms"]) >= {"p50", "p95"}
        assert v["latency_ms"]["per"] == "request"  # one case a request, not a batch's share
        assert v["fixed"] + v["still_failing"] + v["newly_broken"] <= v["cases"]
    assert v1["fixed"] == 0 and v2["fixed"] > v1["still_failing"] // 2
    assert v3["newly_broken"] > v2["newly_broken"]
    by_label = v3["newly_broken_by_label"]
    assert sum(by_label.values()) == v3["newly_broken"]
    # The class-2 regression dominates. Which passing requests are controls is a random
    # sample (capture=0.2), so the other classes' few breaks vary: 16 of 20 was a failure
    # of the earlier "more than 80%" one run in CI.
    others = max((n for label, n in by_label.items() if label != "2"), default=0)
    assert by_label.get("2", 0) > 0 and by_label.get("2", 0) >= 2 * others
    store = Store(demo_db)
    try:
        assert store.replays()[0]["id"] == doc["replay_id"]  # saved, reopenable
    finally:
        store.close()


def test_versions_remove_unregisters_by_name_all_or_none(capsys, demo_db: Path, versions):
    db = ["versions", "--db", str(demo_db)]
    assert main(["versions", "add", "--db", str(demo_db), *map(str, versions)]) == 0
    assert main(["versions", "remove", "--db", str(demo_db), "wine-v2", "wine-v9"]) == 2
    assert "no version named wine-v9" in capsys.readouterr().err
    assert main(["versions", "remove", "--db", str(demo_db), "wine-v2"]) == 0
    assert "removed wine-v2" in capsys.readouterr().out
    _, doc = run_json(capsys, [db[0], "list", *db[1:], "--json"])
    assert [v["name"] for v in doc["versions"]] == ["wine-v1", "wine-v3"]
    assert versions[1].exists()


def test_replay_text_limit_endpoint_and_registered_names(capsys, demo_db: Path, versions):
    assert main(["versions", "add", "--db", str(demo_db), *map(str, versions)]) == 0
    capsys.readouterr()
    _, doc = run_json(capsys, ["versions", "list", "--db", str(demo_db), "--json"])
    assert [v["name"] for v in doc["versions"]] == ["wine-v1", "wine-v2", "wine-v3"]
    assert main(["versions", "list", "--db", str(demo_db)]) == 0
    head, first, *_ = capsys.readouterr().out.splitlines()
    assert "producer" in head and doc["versions"][0]["producer"] in first  # as --json has it
    assert main(["replay", "--db", str(demo_db), "--endpoint", "wine-v1", "--limit", "5",
                 "--controls", "0", "--no-save"]) == 0
    out = capsys.readouterr().out
    assert "wine-v3" in out and "5 failures, 0 controls" in out
    _, doc = run_json(capsys, ["replay", "--db", str(demo_db), "--versions", "wine-v2",
                                  "--limit", "3", "--json"])
    assert doc["versions"][0]["version"] == "wine-v2"


@pytest.mark.parametrize("argv, message", [
    (["--endpoint", "nope"], "no endpoint matching 'nope'"),
    (["--versions", "not-a-version"], "neither a model file"),
    (["--kind", "timeout"], "no failures to replay"),
    (["--versions", str(DEMO / "wine-v1.onnx"), "assets/demo/../demo/wine-v1.onnx"],
     "are one version; give it once"),
])
def test_replay_mistakes_are_one_line_and_exit_2(capsys, demo_db, argv, message):
    assert main(["replay", "--db", str(demo_db), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_contract_check_json_reports_cuda_as_unreachable(capsys):
    code, doc = run_json(capsys, ["contract", "check", str(DEMO / "wine-v1.onnx"),
                                  "--targets", "cpu,cuda", "--runs", "30", "--json"])
    cpu, cuda = doc["models"][0]["targets"]
    assert cpu["status"] == "pass" and cuda["status"] == "unreachable"
    assert code == 1 and doc["models"][0]["passed"] is False  # not every target measured


@pytest.mark.slow
def test_demo_then_replay_end_to_end(capsys, tmp_path, versions):
    db = tmp_path / "demo.db"
    assert main(["demo", "--db", str(db), "--seconds", "20", "--json"]) == 0
    capsys.readouterr()
    # Mismatches only: they replay deterministically. A SLOW capture (a loaded machine makes
    # some) may honestly come back fast on its own version, which is not what this checks.
    code, doc = run_json(capsys, ["replay", "--db", str(db), "--endpoint", "wine-v1",
                                  "--kind", "mismatch", "--versions", *map(str, versions),
                                  "--json"])
    v1, v2, v3 = doc["versions"]
    assert code == 0 and v1["still_failing"] > 20 and v1["fixed"] == 0
    assert v2["fixed"] > v1["still_failing"] // 2
    assert v3["newly_broken"] > 5
    assert max(v3["newly_broken_by_label"], key=v3["newly_broken_by_label"].get) == "2"


def test_replay_selects_by_time_and_model_version(capsys, demo_db: Path):
    store = Store(demo_db)
    try:
        stamps = sorted(s.capture.ts_ns for s in store.select_captures(failed=True, limit=10_000))
    finally:
        store.close()
    mid = stamps[len(stamps) // 2]
    code, doc = run_json(capsys, ["replay", "--db", str(demo_db), "--since", f"{mid / 1e9:.9f}",
                                  "--controls", "0", "--versions", str(DEMO / "wine-v1.onnx"),
                                  "--json"])
    later = sum(1 for t in stamps if t >= mid - 1000)  # float seconds round to ~µs
    assert code == 0 and 0 < doc["versions"][0]["cases"] <= later < len(stamps)
    assert main(["replay", "--db", str(demo_db), "--until", "2000-01-01T00:00"]) == 2
    assert "no failures to replay" in capsys.readouterr().err
    assert main(["replay", "--db", str(demo_db), "--model-version", "9.9.9"]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["replay", "--db", str(demo_db), "--since", "yesterday"])
    assert "not a time" in capsys.readouterr().err


def test_a_version_whose_server_is_down_is_reported_not_judged(capsys, demo_db: Path, versions):
    port = free_port()  # nobody listens there once the probe socket is closed
    down = f"v2+http://127.0.0.1:{port}/models/wine-v2?connect_timeout_s=1"
    assert main(["replay", "--db", str(demo_db), "--versions", str(versions[0]), down,
                 "--limit", "20", "--controls", "10"]) == 1
    captured = capsys.readouterr()
    assert "wine-v2: 30 of 30 cases got no answer (cannot connect" in captured.out
    assert "wine-v2 could not be asked about every case" in captured.err
    row = next(line for line in captured.out.splitlines() if line.startswith("wine-v2 "))
    assert row.split()[1:5] == ["30", "0", "0", "0"]  # cases, fixed, still failing, broken


def test_saved_replays_are_listed_and_shown_again_as_they_were(capsys, demo_db: Path, versions):
    db = ["replay", "--db", str(demo_db)]
    assert main([*db, "--list"]) == 0
    assert "no saved replays" in capsys.readouterr().out
    _, first = run_json(capsys, [*db, "--versions", *map(str, versions), "--limit", "40",
                                 "--controls", "20", "--json"])
    _, listed = run_json(capsys, [*db, "--list", "--json"])
    (entry,) = listed["replays"]
    assert entry["id"] == first["replay_id"]
    assert entry["versions"] == ["wine-v1", "wine-v2", "wine-v3"] and not entry["cancelled"]
    _, shown = run_json(capsys, [*db, "--show", "latest", "--json"])
    assert shown == first
    assert main([*db, "--show", str(first["replay_id"])]) == 0
    out = capsys.readouterr().out
    assert "40 failures, 20 controls" in out
    assert out.rstrip().endswith(f"replay {first['replay_id']}") and "saved as" not in out
    assert main([*db, "--show", "999"]) == 2
    assert "no replay 999" in capsys.readouterr().err
    assert main([*db, "--show", "yesterday"]) == 2
    assert "takes a replay id or 'latest'" in capsys.readouterr().err


def test_ctrl_c_stops_a_replay_and_keeps_the_versions_it_finished(capsys, demo_db: Path,
                                                                  versions):
    from tests.replay.conftest import replay_interrupted_on_a_slow_server

    code, asked = replay_interrupted_on_a_slow_server(demo_db, versions[0], "--json")
    captured = capsys.readouterr()
    assert code == 130
    assert "stopped by Ctrl+C after 1 of 2 versions; the finished ones are saved" in captured.err
    doc = json.loads(captured.out)
    assert doc["cancelled"] and [v["version"] for v in doc["versions"]] == ["wine-v1"]
    # Stopped after the batch under way (tried whole, then row by row), not after all 40 rows.
    assert len(asked) < 20
    store = Store(demo_db)
    try:
        saved = store.replays()[0]
    finally:
        store.close()
    assert saved["id"] == doc["replay_id"] and saved["cancelled"]


def test_slow_failures_are_judged_on_one_request_against_the_endpoints_slo(capsys, tmp_path,
                                                                           versions):
    from app.core.replay import Criteria, Selection, replay, select_case_set, select_cases
    from app.core.replay_targets import LocalOnnxTarget
    from tests.replay.conftest import record_stream

    db = tmp_path / "slow.db"
    # An SLO no request can meet: every correct answer is captured SLOW.
    endpoint = record_stream(db, versions[0], rows=400, extra="&slo_ms=0.000001")
    store = Store(db)
    try:
        cases = select_case_set(store, Selection(kinds=("slow",), limit=100, controls=0))
    finally:
        store.close()
    assert cases.slow.all() and len(cases) > 50
    # The endpoint's own SLO: one request never meets it, so no version "fixes" them.
    for chosen in (["--endpoint", endpoint], []):
        _, doc = run_json(capsys, ["replay", "--db", str(db), *chosen, "--versions",
                                   str(versions[0]), "--kind", "slow", "--controls", "0",
                                   "--json"])
        assert doc["versions"][0]["still_failing"] == doc["versions"][0]["cases"]
    _, doc = run_json(capsys, ["replay", "--db", str(db), "--versions", str(versions[0]),
                               "--kind", "slow", "--slo-ms", "1000", "--controls", "0", "--json"])
    import sqlite3

    # Fast enough for 1000 ms, every one; but the probe (min_confidence=0.6) would have
    # flagged those it answered below 0.6, had they not been slow: those are no fix.
    with sqlite3.connect(db) as conn:
        unsure = conn.execute("SELECT count(*) FROM (SELECT confidence FROM captures "
                              "WHERE status = 'slow' ORDER BY ts_ns DESC LIMIT 1000) "
                              "WHERE confidence < 0.6").fetchone()[0]
    assert doc["versions"][0]["fixed"] == doc["versions"][0]["cases"] - unsure
    _, doc = run_json(capsys, ["replay", "--db", str(db), "--versions", str(versions[0]),
                               "--kind", "slow", "--slo-ms", "1000", "--min-confidence", "0",
                               "--controls", "0", "--json"])
    assert doc["versions"][0]["fixed"] == doc["versions"][0]["cases"]

    with sqlite3.connect(db) as conn:  # as if recorded by a probe without an SLO
        conn.execute("UPDATE endpoints SET slo_ms = NULL")
    code = main(["replay", "--db", str(db), "--versions", str(versions[0]), "--kind", "slow",
                 "--controls", "0", "--no-save"])
    assert code == 0
    assert f"{doc['versions'][0]['cases']} SLOW failures were judged on their outputs only" in (
        capsys.readouterr().err)
    # The window's path (Case objects) holds each case to its own endpoint's SLO too.
    store = Store(db)
    try:
        objects = select_cases(store, Selection(kinds=("slow",), limit=100, controls=0))
    finally:
        store.close()
    for slos, verdict in (({endpoint: 1e-6}, "still_failing"), ({"onnx:other": 1e-6}, "fixed")):
        judged = replay(objects, [LocalOnnxTarget(versions[0])],
                        criteria=Criteria(endpoint_slo_ms=slos))
        assert {judged.verdict(i, 0) for i in range(len(objects))} == {verdict}
    # Mixed with other failures, the summary's percentiles are the batched rows' alone, and a
    # reopened replay gives the same.
    from app.core.replay_store import load_replay, save_replay

    store = Store(db)
    try:
        mixed = select_case_set(store, Selection(limit=300, controls=0))
        assert 0 < np.count_nonzero(mixed.slow) < len(mixed)
        result = replay(mixed, [LocalOnnxTarget(versions[0])], batch_size=64,
                        criteria=Criteria(endpoint_slo_ms={endpoint: 1e-6}))
        lat = result.runs[0].latency_ms[~mixed.slow]
        (summary,) = result.summaries()
        assert summary.latency_p95_ms == pytest.approx(np.percentile(lat[np.isfinite(lat)], 95))
        assert load_replay(store, save_replay(store, result)).summaries() == [summary]
    finally:
        store.close()
    # Timed alone, each SLOW case's latency is one call's, far above a share of a batch.
    alone = replay(cases, [LocalOnnxTarget(versions[0])], criteria=Criteria(slo_ms=1000.0),
                   batch_size=512).runs[0].latency_ms
    shared = replay(cases, [LocalOnnxTarget(versions[0])], batch_size=512,
                    requests=0).runs[0].latency_ms
    assert np.median(alone) > 5 * np.median(shared)


def test_every_case_can_be_exported_as_csv_from_a_run_and_from_a_saved_replay(
        capsys, demo_db: Path, versions, tmp_path):
    import csv

    from app.core.replay_store import load_replay

    out = tmp_path / "cases.csv"
    _, doc = run_json(capsys, ["replay", "--db", str(demo_db), "--versions", *map(str, versions),
                               "--limit", "60", "--controls", "30", "--export", str(out),
                               "--json"])
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    store = Store(demo_db)
    try:
        result = load_replay(store, doc["replay_id"])
    finally:
        store.close()
    assert len(rows) == 90 and [r["role"] for r in rows].count("control") == 30
    for i, row in enumerate(rows):
        assert row["kind"] == str(result.cases[i].capture.status)
        assert int(row["capture_id"]) == result.cases[i].capture_id
        for j, name in enumerate(["wine-v1", "wine-v2", "wine-v3"]):
            assert row[f"{name}:verdict"] == result.verdict(i, j)
            # Why, where it fails: the rules it broke, for a notebook to group by.
            assert row[f"{name}:why"] == "; ".join(result.reasons(i, j))
            assert bool(row[f"{name}:why"]) == (row[f"{name}:verdict"] in (
                "still_failing", "newly_broken") and not row[f"{name}:error"])
    assert any("class " in r["wine-v3:why"] for r in rows)
    fixed = {v["version"]: v["fixed"] for v in doc["versions"]}
    assert sum(r["wine-v2:verdict"] == "fixed" for r in rows) == fixed["wine-v2"]
    again = tmp_path / "again.csv"
    assert main(["replay", "--db", str(demo_db), "--show", "latest", "--export",
                 str(again)]) == 0
    assert again.read_text() == out.read_text()  # the saved replay exports the same table
    assert main(["replay", "--db", str(demo_db), "--show", "latest", "--export",
                 str(tmp_path / "no" / "x.csv")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_a_replay_that_cannot_be_saved_is_still_printed_and_exported(capsys, demo_db: Path,
                                                                    versions, tmp_path):
    import sqlite3

    out = tmp_path / "cases.csv"
    other = sqlite3.connect(demo_db, isolation_level=None)  # another writer holds the lock
    other.execute("BEGIN IMMEDIATE")
    try:
        code = main(["replay", "--db", str(demo_db), "--versions", *map(str, versions),
                     "--limit", "20", "--export", str(out), "--json"])
    finally:
        other.execute("ROLLBACK")
        other.close()
    printed = capsys.readouterr()
    assert code == 1
    doc = json.loads(printed.out)
    assert doc["replay_id"] is None and [v["version"] for v in doc["versions"]] == [
        "wine-v1", "wine-v2", "wine-v3"]
    assert "not saved" in printed.err and "database is locked" in printed.err
    assert len(out.read_text().splitlines()) == 1 + doc["versions"][0]["cases"]
    store = Store(demo_db)
    try:
        assert store.replays() == []  # nothing half-written either
    finally:
        store.close()


def test_export_never_replaces_a_file_that_is_not_an_export(capsys, demo_db: Path, versions,
                                                            tmp_path):
    before = demo_db.read_bytes()
    notes = tmp_path / "notes.csv"
    notes.write_text("my own notes\n")
    for target in (demo_db, versions[0], notes):
        assert main(["replay", "--db", str(demo_db), "--show", "latest", "--export",
                     str(target)]) == 2
        assert "is not a replay export" in capsys.readouterr().err
        # Refused before any work: a run is not even started, so nothing new is saved.
        assert main(["replay", "--db", str(demo_db), "--versions", str(versions[0]),
                     "--export", str(target)]) == 2
        assert "nothing was overwritten" in capsys.readouterr().err
    assert demo_db.read_bytes() == before and notes.read_text() == "my own notes\n"
    store = Store(demo_db)
    try:
        assert store.replays() == []
    finally:
        store.close()
    # An earlier export is replaced, and is an ordinary readable file.
    out = tmp_path / "cases.csv"
    for _ in range(2):
        assert main(["replay", "--db", str(demo_db), "--versions", str(versions[0]),
                     "--limit", "5", "--export", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o644 and out.read_text().startswith("case,")


@pytest.mark.parametrize("argv, message", [
    (["--show", ""], "--show takes a replay id or 'latest', not ''"),
    (["--show", "99999999999999999999"], "no saved replay 99999999999999999999"),
    (["--list", "--export", "x.csv"], "not with --list"),
    (["--limit", "99999999999999999999"], "too large"),
])
def test_replay_options_that_would_do_something_else_are_refused(capsys, demo_db, argv,
                                                                 message):
    try:
        code = main(["replay", "--db", str(demo_db), *argv])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_ctrl_c_stops_a_replay_stuck_on_a_silent_server_at_once(demo_db: Path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import wait_until
    from tests.remote.fault_server import FaultServer

    root = Path(__file__).resolve().parents[2]
    silent = FaultServer().start()
    silent.mode, silent.delay_s = "hang", 60.0
    proc = subprocess.Popen(
        [sys.executable, "main.py", "replay", "--db", str(demo_db), "--versions",
         f"v2+http://127.0.0.1:{silent.port}/models/m?timeout_s=60", "--limit", "5"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert wait_until(lambda: silent.bodies, timeout_s=60)  # waiting on the server now
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)  # once: the call under way is not waited out
        _, err = proc.communicate(timeout=30)
        waited = time.monotonic() - t0
    finally:
        proc.kill()
        silent.release.set()
        silent.stop()
    assert proc.returncode == 130 and waited < 20, (waited, err)
    assert "stopped by Ctrl+C after 0 of 1 versions" in err and "Traceback" not in err


def test_slow_failures_stay_slow_on_the_version_that_recorded_them(capsys, tmp_path, versions):
    import sqlite3

    from tests.replay.conftest import record_stream

    db = tmp_path / "slow.db"
    record_stream(db, versions[0], rows=200, extra="&slo_ms=0.000001")
    # As production records them: paced, cold, beside other work: many times a warm call
    # here. Replay's back-to-back calls would make every one of them meet a 0.1 ms SLO.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE captures SET latency_ms = 0.25 WHERE status = 'slow'")
        conn.execute("UPDATE endpoints SET slo_ms = 0.1")
    _, doc = run_json(capsys, ["replay", "--db", str(db), "--versions", str(versions[0]),
                               "--kind", "slow", "--controls", "0", "--no-save", "--json"])
    (v1,) = doc["versions"]
    assert v1["cases"] > 20 and v1["still_failing"] == v1["cases"] and v1["fixed"] == 0
    # Asked why, a case names its time alone and the limit it was held to.
    from app.core.replay import Criteria, Selection, replay, select_case_set
    from app.core.replay_targets import LocalOnnxTarget

    store = Store(db)
    try:
        cases = select_case_set(store, Selection(kinds=("slow",), controls=0))
        criteria = Criteria(0.0, None, store.slo_by_endpoint())
    finally:
        store.close()
    result = replay(cases, [LocalOnnxTarget(versions[0])], criteria=criteria)
    why = result.reasons(0, 0)
    assert len(why) == 1 and why[0].startswith("slow: ") and "ms alone, over " in why[0]
    assert "its 0.1 ms SLO scaled to this machine, less 10%" in why[0]
    # Without the recording version, there is nothing to read the recorded latency against.
    code = main(["replay", "--db", str(db), "--versions", str(versions[1]), "--kind", "slow",
                 "--controls", "0", "--no-save"])
    assert code == 0
    err = capsys.readouterr().err
    assert f"{v1['cases']} SLOW failures were judged on their outputs only" in err
    assert "the version that recorded them was not replayed (recorded by model version " \
        "1.0.0)" in err


def test_a_copy_of_the_recording_version_does_not_fix_slow_failures_on_timing_noise(
        capsys, tmp_path, versions):
    import shutil
    import sqlite3

    from tests.replay.conftest import record_stream

    db = tmp_path / "slow.db"
    record_stream(db, versions[0], rows=300, extra="&slo_ms=0.000001")
    twin = shutil.copy(versions[0], tmp_path / "twin.onnx")  # the same model, bit for bit
    with sqlite3.connect(db) as conn:  # recorded a hair over the SLO
        conn.execute("UPDATE captures SET latency_ms = 0.1001 WHERE status = 'slow'")
        conn.execute("UPDATE endpoints SET slo_ms = 0.1")
    _, doc = run_json(capsys, ["replay", "--db", str(db), "--versions", str(versions[0]),
                               str(twin), "--kind", "slow", "--controls", "0",
                               "--min-confidence", "0", "--no-save", "--json"])
    v1, copy = doc["versions"]
    assert v1["fixed"] == 0 and copy["cases"] > 100
    # Timed against each other a copy is faster on about half the cases, by noise alone;
    # only a version that beats the SLO by a margin fixes one.
    assert copy["fixed"] <= copy["cases"] // 10, copy


def test_a_workspace_on_a_read_only_disk_can_be_replayed_without_saving(capsys, demo_db: Path,
                                                                        versions):
    from tests.core.test_store import read_only_copy

    Store(demo_db).close()  # its write-ahead log folded in: the copy is whole
    with read_only_copy(demo_db, size="64m") as db:
        code, doc = run_json(capsys, ["replay", "--db", str(db), "--versions",
                                      *map(str, versions), "--no-save", "--json"])
        assert code == 0 and doc["replay_id"] is None
        assert [v["version"] for v in doc["versions"]] == ["wine-v1", "wine-v2", "wine-v3"]
        assert main(["replay", "--db", str(db), "--versions", str(versions[1])]) == 2
        assert "read-only" in capsys.readouterr().err  # saving is asked for: said why not
