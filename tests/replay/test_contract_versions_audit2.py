"""`contract check` with one bad model among good ones, and twice-given models and targets;
`versions list` marking a registered file changed or gone, without hashing every file on every
list. Real models, real measuring children, real workspaces, the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from app.cli import main
from app.core.store import Store
from app.core.versions import CHANGED, MISSING, ModelVersion, file_state
from tests.conftest import DEMO

RUNS = "20"  # latency runs; no figure here is judged against a time


# -- #13 ---------------------------------------------------------------------------------------

def test_one_bad_model_gets_its_own_failed_entry_and_the_others_are_still_measured(
        capsys, tmp_path: Path):
    bare = shutil.copy(DEMO / "wine-v1.onnx", tmp_path / "bare.onnx")  # no contract beside it
    missing = tmp_path / "nope.onnx"
    code = main(["contract", "check", str(DEMO / "wine-v1.onnx"), str(bare), str(missing),
                 "--runs", RUNS, "--json"])
    captured = capsys.readouterr()
    assert code == 2
    good, no_contract, gone = json.loads(captured.out)["models"]  # one JSON object
    assert good["passed"] and good["targets"][0]["status"] == "pass"
    assert good["targets"][0]["clauses"]  # measured, not skipped
    for entry, why in ((no_contract, f"no contract beside {bare}"),
                       (gone, f"model file {missing} does not exist")):
        assert entry["status"] == "failed" and not entry["passed"] and why in entry["reason"]
        (target,) = entry["targets"]  # never an empty list a script could read as passing
        assert target["target"] == "cpu" and target["status"] == "unreachable"
    # Both named at once on stderr, before the measuring; their reasons only in the report.
    assert captured.err == (f"probescope: cannot check {bare}, {missing} (the reason is in the "
                            "report); measuring the other models first\n")
    assert main(["contract", "check", str(DEMO / "wine-v1.onnx"), str(bare),
                 "--runs", RUNS]) == 2
    captured = capsys.readouterr()
    assert "wine-v1 (1.0.0) against" in captured.out and "cpu: PASS" in captured.out
    assert f"{bare}: FAILED — no contract beside {bare}" in captured.out
    assert "no contract beside" not in captured.err


@pytest.mark.parametrize("as_json", [False, True])
def test_a_file_that_is_not_a_model_says_its_error_once(capsys, as_json):
    # The audit's own command: the reason twice, as `probescope: …` and as the FAILED line.
    csv = DEMO / "production.csv"
    assert main(["contract", "check", str(csv), *(["--json"] if as_json else [])]) == 2
    captured = capsys.readouterr()
    said = captured.out + captured.err
    reason = f"cannot read {csv.resolve()} as an ONNX model"
    if as_json:
        (entry,) = json.loads(captured.out)["models"]
        assert entry["status"] == "failed" and entry["reason"].startswith(reason)
        assert captured.err == ""
    else:
        assert said == captured.out and said.count(reason) == 1
        assert said.startswith(f"{csv}: FAILED — {reason}") and said.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    ([str(DEMO / "wine-v1.onnx"), "assets/demo/../demo/wine-v1.onnx"],
     "are one model file; give it once"),
    ([str(DEMO / "wine-v1.onnx"), "--targets", "cpu,cpu"], "target 'cpu' is given twice"),
    ([str(DEMO / "wine-v1.onnx"), "--targets", "cpu,"], "--targets 'cpu,' has an empty entry"),
])
def test_twice_given_models_or_targets_and_empty_targets_are_refused(capsys, argv, message):
    assert main(["contract", "check", *argv, "--runs", RUNS]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and captured.err.count("\n") == 1


# -- #14 ---------------------------------------------------------------------------------------

def _listed(capsys, db: Path) -> tuple[dict, str]:
    assert main(["versions", "list", "--db", str(db), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert main(["versions", "list", "--db", str(db)]) == 0
    return {v["name"]: v["file"] for v in doc["versions"]}, capsys.readouterr().out


def test_versions_list_marks_a_file_changed_since_registered_or_missing(capsys, tmp_path):
    db = tmp_path / "w.db"
    mutable = shutil.copy(DEMO / "wine-v2.onnx", tmp_path / "mut.onnx")
    gone = shutil.copy(DEMO / "wine-v1.onnx", tmp_path / "gone.onnx")
    assert main(["versions", "add", "--db", str(db), str(DEMO / "wine-v1.onnx"), str(mutable),
                 str(gone)]) == 0
    capsys.readouterr()
    files, _ = _listed(capsys, db)
    assert files == {"wine-v1": "unchanged", "mut": "unchanged", "gone": "unchanged"}
    # Other bytes of the same size, with the old modification time kept (as cp -p does).
    before = os.stat(mutable)
    data = bytearray(Path(mutable).read_bytes())
    data[-1] ^= 0xFF
    Path(mutable).write_bytes(bytes(data))
    os.utime(mutable, ns=(before.st_atime_ns, before.st_mtime_ns))
    Path(gone).unlink()
    files, text = _listed(capsys, db)
    assert files == {"wine-v1": "unchanged", "mut": "changed", "gone": "missing"}
    line = {row.split()[1]: row for row in text.splitlines()[1:4]}
    assert "[changed since registered" in line["mut"] and "[file missing" in line["gone"]
    assert "changed since registered" not in line["wine-v1"]
    assert "mut: the file is not what was registered" in text  # register it again
    assert ("gone: the file is missing; replay asks it nothing, so it gets no verdict: restore "
            "the file, or `probescope versions remove gone`") in text


def test_a_file_untouched_since_registration_is_not_read_again(tmp_path: Path):
    """Sizes and file times decide first; the bytes are hashed only when they leave it open.
    Shown with a registered digest that no longer matches (written into the registry): a
    file older than its registration keeps it unread, one touched since is read."""
    path = shutil.copy(DEMO / "wine-v3.onnx", tmp_path / "big.onnx")
    stat = os.stat(path)
    db = tmp_path / "w.db"
    assert main(["versions", "add", "--db", str(db), str(path)]) == 0
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE versions SET sha256 = ?", ["0" * 64])
    store = Store(db, readonly=True)
    try:
        (row,) = store.versions()
    finally:
        store.close()
    version = ModelVersion.from_row(row)
    touched = max(stat.st_mtime_ns, stat.st_ctime_ns)
    # Registered well after the file was last written: not read, taken as unchanged.
    assert file_state(version, touched + 10 * 10**9) is None
    # Registered before its last write (or within the file clock's slack): read, and caught.
    assert file_state(version, touched) == CHANGED
    assert file_state(version, None) == CHANGED
    # A size other than the registered one is a change, whatever the times say.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE versions SET size_bytes = size_bytes + 1")
    store = Store(db, readonly=True)
    try:
        (row,) = store.versions()
    finally:
        store.close()
    assert file_state(ModelVersion.from_row(row), time.time_ns() + 10**12) == CHANGED
    Path(path).unlink()
    assert file_state(version, None) == MISSING
