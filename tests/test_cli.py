"""The headless CLI as a user runs it: watch, demo, and its errors."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import build_parser, main
from app.commands import COMMANDS
from app.core.domain import Metric
from app.core.store import Store
from app.core.summary import table_names
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent


def test_watch_records_an_onnx_model_and_reports_from_the_store(demo_model, workspace, capsys):
    uri = f"onnx:{demo_model}"
    assert main(["watch", uri, "--seconds", "1.5", "--rate", "100", "--db", str(workspace),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (endpoint,) = report["endpoints"]
    assert endpoint["uri"] == uri
    assert endpoint["requests"] > 0
    assert 0 < endpoint["latency_ms"]["p50"] <= endpoint["latency_ms"]["p95"] \
        <= endpoint["latency_ms"]["p99"]
    assert endpoint["peak_rss_mb"] > 10
    store = Store(workspace)
    assert store.count_samples(uri, Metric.LATENCY_MS) == endpoint["requests"]
    assert store.count_captures(uri) == endpoint["requests"]
    store.close()


def test_watch_prints_a_table_for_people(demo_model, workspace, capsys):
    assert main(["watch", f"onnx:{demo_model}", "system:", "--seconds", "1",
                 "--db", str(workspace)]) == 0
    out = capsys.readouterr().out
    assert "p95 ms" in out and "system:" in out and "wine-v1.onnx" in out


def test_demo_runs_headless_and_captures_failures(workspace, capsys):
    assert main(["demo", "--db", str(workspace), "--seconds", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failures_captured"] > 0
    uris = [e["uri"] for e in report["endpoints"]]
    assert any("wine-v1" in u for u in uris) and "system:" in uris
    store = Store(workspace)
    before = store.count_captures(failed=True)
    assert before == report["failures_captured"]
    store.close()
    assert report["versions_registered"] == report["versions_in_workspace"] == 3
    # Drift works on what the run recorded, as in the window: the demo's reference is set.
    assert main(["drift", "--db", str(workspace), "--endpoint", "wine-v1", "--window", "10m",
                 "--json"]) == 0
    drift = json.loads(capsys.readouterr().out)
    assert drift["rows"]["current"] > 0 and drift["columns"]
    assert main(["replay", "--db", str(workspace), "--limit", "20", "--json"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in replayed["versions"]] == ["wine-v1", "wine-v2", "wine-v3"]
    # A second run into the same workspace counts its own failures, not the first run's too.
    assert main(["demo", "--db", str(workspace), "--seconds", "2", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    again = second["failures_captured"]
    assert second["versions_registered"] == 0  # already there: left as they were
    assert second["versions_in_workspace"] == 3  # and said so, not read as a failure
    store = Store(workspace)
    assert again == store.count_captures(failed=True) - before
    store.close()


def test_demo_table_names_each_endpoint_by_model_and_parameters(workspace, capsys):
    # The demo's URIs are longer than the column: the model (at the head) and the rate that
    # tells the two endpoints apart (in the middle) must both survive the cut.
    assert main(["demo", "--db", str(workspace), "--seconds", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("onnx:")]
    assert len(rows) == 2
    assert any("wine-v1.onnx" in r and "rate=50" in r for r in rows)
    assert any("wine-v2.onnx" in r and "rate=10" in r for r in rows)


def test_table_names_keep_what_tells_endpoints_apart():
    a = "onnx:/models/a.onnx?provider=cpu&payload=/data/some/long/path/production.csv&rate=5"
    b = "onnx:/models/b.onnx?provider=cpu&payload=/data/some/long/path/production.csv&rate=9"
    names, shared = table_names([a, b, "system:"])
    assert names == ["onnx:/models/a.onnx?rate=5&…", "onnx:/models/b.onnx?rate=9&…", "system:"]
    assert shared == "provider=cpu&payload=/data/some/long/path/production.csv"
    lone = "v2+http://" + "h" * 80 + "/models/m"  # nothing to share: cut in the middle
    (name,), shared = table_names([lone])
    assert len(name) == 60 and name.startswith("v2+http://") and name.endswith("/models/m")
    assert shared == ""
    assert table_names(["onnx:m.onnx"]) == (["onnx:m.onnx"], "")


@pytest.mark.parametrize("args, message", [
    (["watch", "onnx:no/such.onnx"], "model file no/such.onnx does not exist"),
    (["watch", "onnx:assets/demo"], "assets/demo is a folder, not a model file"),
    (["watch", "onnx:assets/demo/wine-v1.onnx?payload=assets"],
     "assets is a folder, not a payload file"),
    (["watch", "gopher:x"], "unknown endpoint kind 'gopher'"),
    (["watch", "nonsense"], "is not an endpoint URI"),
    (["watch", "onnx:{model}?provider=tensorrt"], "provider 'tensorrt' is not installed here"),
])
def test_user_errors_are_one_line_and_exit_2(args, message, demo_model, workspace):
    args = [a.replace("{model}", str(demo_model)) for a in args]
    result = subprocess.run(
        [sys.executable, "main.py", *args, "--seconds", "1", "--db", str(workspace)],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_corrupt_model_and_an_unwritable_db_are_one_line_errors(tmp_path, demo_model):
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 50)
    for args, message in [
        (["watch", f"onnx:{corrupt}", "--db", str(tmp_path / "w.db")], "as an ONNX model"),
        (["watch", f"onnx:{demo_model}", "--db", str(tmp_path / "missing" / "w.db")],
         "does not exist"),
    ]:
        result = subprocess.run([sys.executable, "main.py", *args, "--seconds", "1"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


def test_version_is_printed():
    result = subprocess.run([sys.executable, "main.py", "--version"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("probescope ")


def test_a_reader_that_is_gone_ends_a_command_quietly(workspace):
    # `probescope demo ... | head -1`: the reader leaves with what it wanted. The command
    # ends as a tool killed by SIGPIPE does, without a line of its own.
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before a byte is written
    try:
        done = subprocess.run([sys.executable, "main.py", "demo", "--db", str(workspace),
                               "--seconds", "1", "--json"], cwd=ROOT, stdin=subprocess.DEVNULL,
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.stderr == "" and done.returncode == 128 + signal.SIGPIPE


def test_help_lists_every_command_without_importing_any():
    """``probescope --help`` answers from the help lines alone: importing the commands took
    two seconds (pandas, scipy, Evidently, onnxruntime)."""
    code = ("import sys, contextlib, io\n"
            "from app.cli import main\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
            "    main(['--help'])\n"
            "print(out.getvalue())\n"
            "print('LOADED', sorted(m for m in sys.modules if m.startswith('app.commands.')\n"
            "                       or m in ('pandas', 'onnxruntime', 'evidently')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=True)
    help_text, loaded = done.stdout.rsplit("LOADED", 1)
    assert loaded.strip() == "[]"
    for command, line in COMMANDS.items():
        assert command in help_text and line.split()[0] in help_text


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_parses_with_its_listed_help(command):
    """The command's own parser, loaded when the command is named, has the help line that
    ``--help`` lists, and parses its own ``--help``."""
    parser = build_parser([command])
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert {c.dest: c.help for c in sub._choices_actions}[command] == COMMANDS[command]
    assert sub.choices[command].format_help().startswith(f"usage: probescope {command}")


def test_kill_9_loses_no_committed_batch(demo_model, workspace):
    """Whatever a reader saw committed before SIGKILL is still there after it."""
    proc = subprocess.Popen(
        [sys.executable, "main.py", "watch", f"onnx:{demo_model}", "--rate", "0",
         "--capture-rate", "0.1", "--seconds", "120", "--db", str(workspace)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        def committed() -> int:
            if not workspace.exists():
                return 0
            try:
                conn = sqlite3.connect(f"file:{workspace}?mode=ro", uri=True, timeout=5)
                try:
                    return conn.execute("SELECT count(*) FROM samples").fetchone()[0]
                finally:
                    conn.close()
            except sqlite3.OperationalError:
                return 0  # schema not created yet

        assert wait_until(lambda: committed() > 5000, timeout_s=60), proc.stderr
        seen = committed()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    store = Store(workspace)  # opens, replays the WAL, and is whole
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert store.count_samples() >= seen
    store.close()


@pytest.mark.parametrize(("argv", "option", "words"), [
    (["watch", "onnx:m.onnx", "--db", "w.db", "--seconds", "inf"], "--seconds", "not a finite"),
    (["watch", "onnx:m.onnx", "--db", "w.db", "--seconds", "1e12"], "--seconds",
     "not a duration"),
    (["watch", "onnx:m.onnx", "--db", "w.db", "--seconds", "-1"], "--seconds", "not a duration"),
    (["watch", "onnx:m.onnx", "--db", "w.db", "--rate", "-2"], "--rate", "must be 0 or more"),
    (["watch", "onnx:m.onnx", "--db", "w.db", "--capture-rate", "1.5"], "--capture-rate",
     "must be from 0 to 1"),
    (["watch", "onnx:m.onnx", "--db", "w.db", "--slo-ms", "nan"], "--slo-ms", "not a finite"),
    (["demo", "--db", "w.db", "--seconds", "0"], "--seconds", "not a duration"),
    (["tap", "--upstream", "http://127.0.0.1:1", "--db", "w.db", "--timeout", "-1"],
     "--timeout", "not a duration"),
    (["tap", "--upstream", "http://127.0.0.1:1", "--db", "w.db", "--max-record-bytes", "-5"],
     "--max-record-bytes", "must be 0 or more"),
    (["agent", "--model", "m.onnx", "--max-items", "0"], "--max-items", "must be at least 1"),
    (["agent", "--model", "m.onnx", "--system-rate", "0"], "--system-rate", "must be above 0"),
    (["replay", "--db", "w.db", "--versions", "a.onnx", "--limit", "-1"], "--limit",
     "must be at least 1"),
    (["replay", "--db", "w.db", "--versions", "a.onnx", "--controls", "x"], "--controls",
     "not a whole number"),
    (["replay", "--db", "w.db", "--versions", "a.onnx", "--min-confidence", "7"],
     "--min-confidence", "must be from 0 to 1"),
    (["contract", "check", "m.onnx", "--runs", "5"], "--runs", "must be at least 20"),
    (["replay", "--db", "w.db", "--versions", "a.onnx", "--since", "99999999999999"], "--since",
     "outside 1970 to 2262"),
    (["replay", "--db", "w.db", "--versions", "a.onnx", "--until", "inf"], "--until",
     "outside 1970 to 2262"),
])
def test_nonsense_numbers_are_a_usage_error_naming_the_option(argv, option, words, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and words in err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and "--help)" in err  # one line, not the usage first


def test_a_drift_window_past_ten_years_is_refused(workspace, capsys):
    Store(workspace).close()
    assert main(["drift", "--db", str(workspace), "--endpoint", "x", "--window",
                 "99999999999h"]) == 2
    assert "longer than ten years" in capsys.readouterr().err


def test_ctrl_c_while_a_command_loads_is_quiet(tmp_path):
    # The command's imports take a second or more, so the signal lands among them; on a
    # machine fast enough to be past them, watch stops on it as it should. Either way: quiet.
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "watch", "system:",
                             "--seconds", "30", "--db", str(tmp_path / "w.db")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    import time

    time.sleep(0.4)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert proc.returncode in (0, 130, -signal.SIGINT)


def test_sigterm_stops_watch_as_ctrl_c_does_with_its_summary_and_samples(tmp_path):
    """A service manager or `timeout` sends SIGTERM: the run is flushed and summarised."""
    db = tmp_path / "w.db"
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "watch", "system:?rate=20",
                             "--seconds", "60", "--db", str(db), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)

    def recorded() -> int:
        if not db.exists():
            return 0
        try:
            with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as conn:
                return conn.execute("SELECT count(*) FROM samples").fetchone()[0]
        except sqlite3.Error:
            return 0

    try:
        assert wait_until(lambda: recorded() > 0, timeout_s=60)
    finally:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["endpoints"][0]["uri"].startswith("system:")
    assert "Traceback" not in err


def test_a_workspace_another_writer_holds_is_one_line_and_exit_2(tmp_path, capsys):
    db = tmp_path / "w.db"
    Store(db).close()
    holder = sqlite3.connect(db)
    holder.execute("BEGIN IMMEDIATE")  # another program writing, for longer than we wait
    try:
        assert main(["watch", "system:", "--seconds", "1", "--db", str(db)]) == 2
    finally:
        holder.rollback()
        holder.close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write to" in err and "locked" in err
    assert "internal error" not in err


def test_ctrl_c_inside_a_native_import_is_quiet_too(tmp_path):
    """onnxruntime interrupted while it initialises raises "ImportError: initialization
    failed" with the KeyboardInterrupt as its context: that is a Ctrl+C, not a traceback.
    The interrupt is placed there by an import hook, so the test does not rely on timing."""
    script = (
        "import sys\n"
        "class Interrupted:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'onnxruntime':\n"
        "            try:\n"
        "                raise KeyboardInterrupt\n"
        "            except KeyboardInterrupt:\n"
        "                raise ImportError('initialization failed')\n"
        "sys.meta_path.insert(0, Interrupted())\n"
        "sys.argv = ['main.py', 'watch', 'system:', '--seconds', '1', '--db', sys.argv[1]]\n"
        "exec(open('main.py').read(), {'__name__': '__main__'})\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "w.db")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "ImportError" not in done.stderr


def test_no_display_is_one_line_not_a_qt_abort(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "--db", str(tmp_path / "w.db")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no display to open the window on" in done.stderr
    assert not (tmp_path / "w.db").exists()


def test_a_db_before_the_command_is_that_commands_db(tmp_path, capsys):
    db = tmp_path / "w.db"
    store = Store(db)
    store.endpoint_id("onnx:models/wine-v1.onnx", "onnx")
    store.close()
    for argv, out in [(["incidents"], "no incidents\n"),
                      (["incidents", "list", "--json"], ""),
                      (["replay", "--list"], "no saved replays"),
                      (["versions", "list"], "no versions registered"),
                      (["incidents", "rules", "wine-v1", "error_rate=0.3"],
                       "error_rate = 0.3 (set)"),
                      (["incidents", "--db", str(db), "rules", "wine-v1"],  # given twice, alike
                       "error_rate = 0.3 (set)")]:
        for given in (["--db", str(db)], [f"--db={db}"]):
            assert main([*given, *argv]) == 0, capsys.readouterr().err
            assert out in capsys.readouterr().out
    # Its errors are the command's own, about the workspace given, not a missing --db.
    assert main(["--db", str(db), "drift", "--endpoint", "resnet"]) == 2
    assert f"no endpoint matching 'resnet' in {db}" in capsys.readouterr().err
    missing = tmp_path / "typo.db"
    assert main(["--db", str(missing), "report", "--out", str(tmp_path / "r.pdf")]) == 2
    assert capsys.readouterr().err == f"probescope: no workspace at {missing}\n"
    assert not missing.exists()


@pytest.mark.parametrize("argv, message", [
    (["contract", "check", "m.onnx"],
     "contract takes no --db; drop it (with no command, --db opens that workspace in the "
     "window)"),
    (["incidents", "--db", "{other}"],
     "--db is given twice, as {db} before incidents and as {other} after it; give it once"),
    (["versions", "list", "--db={other}"],
     "--db is given twice, as {db} before versions and as {other} after it; give it once"),
])
def test_a_db_before_a_command_that_cannot_take_it_is_one_line(tmp_path, capsys, argv, message):
    db, other = tmp_path / "w.db", tmp_path / "other.db"
    Store(db).close()
    argv = [a.format(other=other) for a in argv]
    assert main(["--db", str(db), *argv]) == 2
    assert capsys.readouterr().err == f"probescope: {message.format(db=db, other=other)}\n"


def test_a_db_with_no_command_still_opens_the_window(tmp_path, capsys, monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert main(["--db", str(tmp_path / "w.db")]) == 2  # the window's path: no display here
    assert "no display to open the window on" in capsys.readouterr().err


def test_a_uri_to_attach_at_start_is_checked_before_the_window_opens(tmp_path, capsys,
                                                                    monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    db = ["--db", str(tmp_path / "w.db")]
    assert main([*db, "--attach", "onx:model.onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--attach onx:model.onnx: unknown endpoint kind 'onx'" in err
    # A well-formed one goes on to the window (none here: said as without --attach).
    assert main([*db, "--attach", "system:"]) == 2
    assert "no display to open the window on" in capsys.readouterr().err
    assert main(["--attach", "system:", "incidents", *db]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--attach opens the window" in err
