"""Production logs and late labels: import a log, join labels, and find the right failures."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from app.cli import main
from app.core.domain import CaptureStatus, Metric
from app.core.store import Store
from tests.agent.conftest import ROOT

DEMO = ROOT / "assets" / "demo"


@pytest.fixture
def log_and_labels(tmp_path):
    """300 production rows, predicted by the real wine-v1 model; labels kept apart."""
    frame = pd.read_csv(DEMO / "production.csv").iloc[:300].dropna()
    features = frame.drop(columns=["id", "label"])
    session = ort.InferenceSession(str(DEMO / "wine-v1.onnx"),
                                   providers=["CPUExecutionProvider"])
    probs = session.run(None, {"features": features.to_numpy(np.float32)})[0]
    log = features.copy()
    log.insert(0, "request_id", frame["id"])
    log.insert(1, "timestamp", pd.date_range("2026-11-01", periods=len(frame), freq="s"))
    log["prediction"] = probs.argmax(axis=1)
    labels = pd.DataFrame({"request_id": frame["id"], "label": frame["label"].astype(int)})
    wrong = set(log["request_id"][log["prediction"].to_numpy() != labels["label"].to_numpy()])
    assert 0 < len(wrong) < len(log)
    return log, labels, wrong


def failures(db):
    store = Store(db, readonly=True)
    try:
        return store.captures(failed=True, limit=10_000, with_tensors=False)
    finally:
        store.close()


def test_import_then_late_labels_turn_disagreements_into_failures(tmp_path, log_and_labels,
                                                                  capsys):
    log, labels, wrong = log_and_labels
    db = tmp_path / "ws.db"
    log.to_csv(tmp_path / "log.csv", index=False)
    labels.to_parquet(tmp_path / "labels.parquet")
    assert main(["import", str(tmp_path / "log.csv"), "--db", str(db), "--endpoint", "prod",
                 "--model-version", "wine-v1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == {"endpoint": "log:prod", "rows": len(log), "imported": len(log),
                      "skipped": 0, "failures": 0}
    store = Store(db, readonly=True)
    try:
        first = store.captures("log:prod", limit=1)[0].capture
    finally:
        store.close()
    assert first.request_id == log["request_id"].iloc[0]
    assert first.ts_ns == pd.Timestamp("2026-11-01", tz="UTC").value
    assert first.inputs[0].name == "features" and first.inputs[0].shape == (1, 13)
    np.testing.assert_array_equal(first.inputs[0].to_array()[0],
                                  log.iloc[0, 2:15].to_numpy(np.float32))

    assert main(["label", str(tmp_path / "labels.parquet"), "--db", str(db), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == {"rows": len(labels), "matched": len(labels), "unknown": 0, "blank": 0,
                      "new_failures": len(wrong), "cleared": 0}
    failed = failures(db)
    assert {c.capture.request_id for c in failed} == wrong
    assert all(c.capture.status is CaptureStatus.MISMATCH for c in failed)
    assert all(c.capture.label != c.capture.prediction for c in failed)
    store = Store(db, readonly=True)
    try:
        assert store.count_samples("log:prod", Metric.FAILURE) == len(wrong)
    finally:
        store.close()

    # The same log again adds nothing; a corrected label clears its mismatch.
    assert main(["import", str(tmp_path / "log.csv"), "--db", str(db), "--endpoint", "prod",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == len(log)
    one = sorted(wrong)[0]
    fixed = log.loc[log["request_id"] == one, ["request_id", "prediction"]].rename(
        columns={"prediction": "truth"})
    fixed.to_csv(tmp_path / "fix.csv", index=False)
    assert main(["label", str(tmp_path / "fix.csv"), "--db", str(db),
                 "--label-column", "truth", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cleared"] == 1
    assert {c.capture.request_id for c in failures(db)} == wrong - {one}

    def failure_samples() -> int:
        store = Store(db, readonly=True)
        try:
            return store.count_samples("log:prod", Metric.FAILURE)
        finally:
            store.close()

    # Its failure is gone from the rates too (incidents and reports count samples), and the
    # wrong label given again counts it once, not twice.
    assert failure_samples() == len(wrong) - 1
    assert main(["label", str(tmp_path / "labels.parquet"), "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["new_failures"] == 1
    assert failure_samples() == len(wrong)

    # Rows with nothing to join are counted, not passed over in silence.
    with_blanks = pd.concat([labels.iloc[:3], pd.DataFrame({"request_id": ["x", None],
                                                            "label": [None, 1]})])
    with_blanks.to_csv(tmp_path / "blanks.csv", index=False)
    assert main(["label", str(tmp_path / "blanks.csv"), "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["blank"] == 2


def test_json_lines_with_list_features_and_inline_labels(tmp_path, log_and_labels, capsys):
    log, labels, wrong = log_and_labels
    rows = [{"id": r.request_id, "x": list(map(float, r[2:15])), "predicted": int(r.prediction),
             "label": int(lab), "latency_ms": 2.5}
            for r, lab in zip(log.itertuples(index=False), labels["label"], strict=True)]
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    db = tmp_path / "ws.db"
    assert main(["import", str(path), "--db", str(db), "--endpoint", "edge", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["imported"] == len(log) and result["failures"] == len(wrong)
    assert {c.capture.request_id for c in failures(db)} == wrong
    store = Store(db, readonly=True)
    try:
        assert store.count_samples("log:edge", Metric.LATENCY_MS) == len(log)
        assert store.captures("log:edge", limit=1)[0].capture.inputs[0].shape == (1, 13)
    finally:
        store.close()


def test_a_missing_column_is_one_clear_line(tmp_path, log_and_labels, capsys):
    log, _, _ = log_and_labels
    log.to_csv(tmp_path / "log.csv", index=False)
    code = main(["import", str(tmp_path / "log.csv"), "--db", str(tmp_path / "ws.db"),
                 "--endpoint", "p", "--label-column", "truth"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "no column 'truth'" in err


def _stamps(db) -> list[int]:
    store = Store(db, readonly=True)
    try:
        return [c.capture.ts_ns for c in store.captures(limit=100, with_tensors=False)]
    finally:
        store.close()


def test_epoch_stamps_in_any_unit_and_mixed_with_dates_land_on_the_same_instant(tmp_path):
    instant_s = 1_764_000_000  # 2025-11-24T16:00:00Z
    for unit, factor in (("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9)):
        log = tmp_path / f"{unit}.csv"
        log.write_text(f"request_id,timestamp,f1,prediction\na,{instant_s * factor},1.0,0\n")
        db = tmp_path / f"{unit}.db"
        assert main(["import", str(log), "--db", str(db), "--endpoint", "p"]) == 0
        assert _stamps(db) == [instant_s * 10**9], unit
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("request_id,timestamp,f1,prediction\n"
                     "a,2025-11-24T16:00:00Z,1.0,0\nb,1764000001,2.0,0\n")
    assert main(["import", str(mixed), "--db", str(tmp_path / "m.db"), "--endpoint", "p"]) == 0
    assert sorted(_stamps(tmp_path / "m.db")) == [instant_s * 10**9, (instant_s + 1) * 10**9]


@pytest.mark.parametrize(("text", "extra", "words"), [
    ("request_id,f1,prediction,latency_ms\na,1.0,0,3\nb,2.0,0,fast\n", [],
     "latency column 'latency_ms' holds 'fast' in row 2, which is not a number"),
    ("request_id,timestamp,f1,prediction\na,2025-11-24,1,0\nb,yesterday,2,0\n", [],
     "timestamp 'yesterday' in row 2 cannot be read"),
    ("request_id,f1,prediction\na,300,0\n", ["--dtype", "int8"],
     "feature 'f1' holds '300' in row 1, which is not a whole number from -128 to 127"),
    ("request_id,f1,prediction\na,1.5,0\n", ["--dtype", "int32"],
     "feature 'f1' holds '1.5' in row 1"),
])
def test_a_bad_cell_is_named_by_column_and_row_and_nothing_is_imported(tmp_path, capsys, text,
                                                                     extra, words):
    log = tmp_path / "log.csv"
    log.write_text(text)
    db = tmp_path / "ws.db"
    assert main(["import", str(log), "--db", str(db), "--endpoint", "p", *extra]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Warning" not in err
    assert not db.exists() or _stamps(db) == []


def test_labels_for_an_endpoint_that_is_not_there_are_refused_not_dropped(tmp_path, capsys):
    log = tmp_path / "log.csv"
    log.write_text("request_id,f1,prediction\na,1.0,0\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label\na,1\n")
    db = tmp_path / "ws.db"
    assert main(["import", str(log), "--db", str(db), "--endpoint", "prod"]) == 0
    capsys.readouterr()
    assert main(["label", str(labels), "--db", str(db), "--endpoint", "prdo"]) == 2
    assert "no endpoint matching 'prdo'" in capsys.readouterr().err
    assert main(["label", str(labels), "--db", str(db), "--endpoint", "prod", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["new_failures"] == 1


def test_a_folder_given_as_the_log_is_named_as_a_folder(tmp_path, capsys):
    assert main(["import", str(tmp_path), "--db", str(tmp_path / "ws.db"), "--endpoint", "p"]) == 2
    assert f"{tmp_path} is a folder, not a file" in capsys.readouterr().err


def test_logs_as_spreadsheets_and_scripts_write_them(tmp_path, capsys):
    def imported(text: str, *extra: str) -> tuple[int, list]:
        path = tmp_path / "log.csv"
        path.write_text(text)
        db = tmp_path / f"ws{len(list(tmp_path.glob('ws*.db')))}.db"
        code = main(["import", str(path), "--db", str(db), "--endpoint", "p", *extra])
        if code != 0:
            return code, [capsys.readouterr().err]
        capsys.readouterr()
        store = Store(db, readonly=True)
        try:
            return code, [s.capture for s in store.captures("log:p", limit=100)]
        finally:
            store.close()

    # A European spreadsheet: semicolons, decimal commas.
    code, caps = imported("request_id;timestamp;f1;f2;label;prediction\n"
                          "a;2024-03-30T12:00:00Z;1,5;2,25;1;1\n"
                          "b;2024-03-30T12:00:01Z;3,5;4,75;0;1\n")
    assert code == 0 and len(caps) == 2
    by_id = {c.request_id: c for c in caps}
    np.testing.assert_array_equal(by_id["a"].inputs[0].to_array()[0], [1.5, 2.25])
    assert by_id["b"].status is CaptureStatus.MISMATCH
    # Epoch units mixed row by row (seconds, then milliseconds): one instant, not 1970.
    code, caps = imported("timestamp,f1\n1711800000,1\n1711800000000,2\n")
    assert code == 0 and {c.ts_ns for c in caps} == {1_711_800_000 * 10**9}
    # Numbers that are not times are refused, never stored as 1970 or as garbage.
    for stamp, shown in (("20240330", "20240330"), ("1e20", "1e+20")):
        code, (err,) = imported(f"timestamp,f1\n1711800000,1\n{stamp},2\n")
        assert code == 2 and f"timestamp '{shown}' in row 2 is not a time" in err
    # Ids read as floats because one is blank: refused, with the row; whole ones stay whole.
    code, (err,) = imported("request_id,f1\n1000,1\n,2\n")
    assert code == 2 and "request id column 'request_id' is empty in row 2" in err
    code, caps = imported("request_id,f1,f2\n1000,1,\n1001,2,3\n")
    assert code == 0 and {c.request_id for c in caps} == {"1000", "1001"}
    code, (err,) = imported("f1\n1\n", "--dtype", "object")
    assert code == 2 and "--dtype object is not a number type" in err
    # A file saved by pandas with its index: the row numbers are not a feature.
    code, caps = imported(",request_id,f1,f2\n0,a,1,2\n1,b,3,4\n")
    assert code == 0 and caps[0].inputs[0].shape == (1, 2)
    (tmp_path / "dupes.csv").write_text("request_id,f1\na,1\na,2\nb,3\n")
    assert main(["import", str(tmp_path / "dupes.csv"), "--db", str(tmp_path / "d.db"),
                 "--endpoint", "p"]) == 0
    assert "1 rows share their request id with another row" in capsys.readouterr().err
    (tmp_path / "noid.csv").write_text("f1\n1\n")
    assert main(["import", str(tmp_path / "noid.csv"), "--db", str(tmp_path / "n.db"),
                 "--endpoint", "p"]) == 0
    assert "importing it again would add every row twice" in capsys.readouterr().err


def test_ctrl_c_during_an_import_says_how_far_it_got(tmp_path):
    import signal
    import sqlite3
    import subprocess
    import sys

    from tests.helpers import wait_until

    rows = 300_000
    pd.DataFrame({"request_id": [f"r{i}" for i in range(rows)], "f1": 1.0, "f2": 2.0}).to_csv(
        tmp_path / "big.csv", index=False)
    db = tmp_path / "ws.db"
    proc = subprocess.Popen([sys.executable, "main.py", "import", str(tmp_path / "big.csv"),
                             "--db", str(db), "--endpoint", "p"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def some_in() -> bool:
        try:
            with sqlite3.connect(db) as conn:
                return conn.execute("SELECT count(*) FROM captures").fetchone()[0] > 0
        except sqlite3.Error:
            return False

    try:
        assert wait_until(some_in, 60)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err
    assert "stopped by Ctrl+C with" in err and "importing the file again adds the rest" in err
    with sqlite3.connect(db) as conn:  # whole batches only, and the workspace still opens
        n = conn.execute("SELECT count(*) FROM captures").fetchone()[0]
    assert 0 < n < rows
