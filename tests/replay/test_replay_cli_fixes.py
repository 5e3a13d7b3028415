"""The replay command's answers to the CLI audit: Ctrl+C during a slow batch, names that tell
versions apart, hints that fit the case, a cancelled replay shown again, one model registered
under two names, and a reader that stops reading. Real sessions, workspaces, subprocesses and
signals throughout."""

from __future__ import annotations

import csv
import json
import math
import os
import pty
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.cli import main
from app.core.store import Store
from tests.conftest import DEMO, ROOT
from tests.helpers import wait_until
from tests.replay.conftest import replay_interrupted_on_a_slow_server

CALL_S = 6.0  # how long one call of the slow model takes: far longer than an answer may


def run_json(capsys, argv: list[str]) -> tuple[int, dict, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def saved_replays(db: Path) -> list[dict]:
    store = Store(db)
    try:
        return store.replays()
    finally:
        store.close()


def _slow_graph(layers: int, k: int = 1024) -> onnx.ModelProto:
    """Takes the wine features, answers three class probabilities, and spends ``layers``
    k-by-k MatMuls on every call, however many rows it has. The chain starts from the input's
    shape, so onnxruntime cannot fold it away when it loads the model, and the file is small
    (the weights are made by ConstantOfShape at run time)."""
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 13])
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])
    inits = [numpy_helper.from_array(np.array([k, k], np.int64), "k_by_k"),
             numpy_helper.from_array(np.random.default_rng(0).normal(size=(13, 3))
                                     .astype(np.float32), "head"),
             numpy_helper.from_array(np.array(1e-30, np.float32), "tiny")]
    nodes = [helper.make_node("Shape", ["features"], ["shape"]),
             helper.make_node("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["shape_f"], ["rows"], keepdims=0),
             helper.make_node("ConstantOfShape", ["k_by_k"], ["ones"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0 / k])),
             helper.make_node("Div", ["ones", "rows"], ["h0"])]
    nodes += [helper.make_node("MatMul", [f"h{i}", "ones"], [f"h{i + 1}"]) for i in range(layers)]
    nodes += [helper.make_node("ReduceSum", [f"h{layers}"], ["total"], keepdims=0),
              helper.make_node("Mul", ["total", "tiny"], ["nudge"]),  # tied to the output
              helper.make_node("MatMul", ["features", "head"], ["logits0"]),
              helper.make_node("Add", ["logits0", "nudge"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "slow", [features], [out], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _one_call_s(path: Path) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.zeros((1, 13), np.float32)
    session.run(None, {"features": x})  # the first call allocates
    t0 = time.perf_counter()
    session.run(None, {"features": x})
    return time.perf_counter() - t0


@pytest.fixture(scope="session")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose every call takes about CALL_S on this machine, measured, not guessed."""
    folder = tmp_path_factory.mktemp("slow")
    probe = folder / "probe.onnx"
    onnx.save(_slow_graph(20), probe)
    per_layer = _one_call_s(probe) / 20
    path = folder / "slow.onnx"
    onnx.save(_slow_graph(max(20, math.ceil(CALL_S / per_layer))), path)
    return path


def _wide_model(path: Path, width: int = 10) -> Path:
    """A valid classifier that takes ``width`` features, not the 13 the captures hold."""
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", width])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])
    w = numpy_helper.from_array(np.ones((width, 3), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["features", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "wide", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


class _AtTerminal:
    """The CLI in a subprocess with stderr on a pseudo-terminal, as at a shell: the progress
    line shows there, which tells the test which version the replay is on."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "main.py", *argv], cwd=ROOT,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=slave, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        os.close(slave)
        self._master = master
        self._chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()

    def _pump(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 4096)
            except OSError:  # the child's side closed (EIO)
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    @property
    def err(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.reader.join(5)
        os.close(self._master)


@pytest.mark.slow
def test_ctrl_c_answers_during_a_slow_batch_and_again_stops_at_once_saving_nothing(
        demo_db: Path, slow_model: Path):
    term = _AtTerminal(["replay", "--db", str(demo_db), "--versions",
                        str(DEMO / "wine-v1.onnx"), str(slow_model)])
    try:
        # wine-v1 is done; the slow model's first call (about CALL_S) is under way.
        assert wait_until(lambda: "version 2 of 2" in term.err, timeout_s=120), term.err
        time.sleep(0.5)
        t0 = time.monotonic()
        term.proc.send_signal(signal.SIGINT)
        assert wait_until(lambda: "stopping after the batch under way" in term.err,
                          timeout_s=60)
        answered = time.monotonic() - t0
        assert term.proc.poll() is None  # the first one only asks to stop
        t1 = time.monotonic()
        term.proc.send_signal(signal.SIGINT)
        out, _ = term.proc.communicate(timeout=60)
        stopped = time.monotonic() - t1
        term.reader.join(5)
    finally:
        term.close()
    assert answered < 2.5, f"the first Ctrl+C was answered after {answered:.1f} s"
    assert stopped < 5, f"the second Ctrl+C stopped it after {stopped:.1f} s"
    assert term.proc.returncode == 130
    assert "nothing saved" in term.err and "Traceback" not in term.err
    assert "saved as replay" not in out and "finished ones are saved" not in term.err
    assert saved_replays(demo_db) == []  # as the first answer promised


def test_a_cancelled_replay_shown_again_says_it_was_cut_short(capsys, demo_db: Path, versions):
    code, _ = replay_interrupted_on_a_slow_server(demo_db, versions[0])
    live = capsys.readouterr()
    assert code == 130
    assert "stopped by Ctrl+C after 1 of 2 versions; the finished ones are saved" in live.err
    (saved,) = saved_replays(demo_db)
    assert saved["cancelled"]
    assert main(["replay", "--db", str(demo_db), "--show", "latest"]) == 0
    shown = capsys.readouterr().out
    assert shown.rstrip().splitlines()[-1] == (
        f"replay {saved['id']} (cancelled: stopped by Ctrl+C after 1 of 2 versions)")
    # The table is the live one: only the finished version.
    assert shown.split("\n", 1)[1].startswith("wine-v1 ") and "\nm " not in shown


def test_a_cancelled_replay_saved_without_a_title_is_shown_as_cancelled(capsys, demo_db: Path,
                                                                         versions):
    # As the window saves one: its Stop button, no title.
    from app.core.replay import Selection, replay, select_case_set
    from app.core.replay_store import save_replay
    from app.core.replay_targets import LocalOnnxTarget

    store = Store(demo_db)
    try:
        cases = select_case_set(store, Selection(limit=20, controls=10))
        stop = threading.Event()
        result = replay(cases, [LocalOnnxTarget(v) for v in versions],
                        progress=lambda share: share > 0.5 and stop.set(),  # in the 2nd
                        cancelled=stop.is_set, requests=0)
        assert result.cancelled and len(result.runs) == 1
        replay_id = save_replay(store, result)
    finally:
        store.close()
    assert main(["replay", "--db", str(demo_db), "--show", str(replay_id)]) == 0
    shown = capsys.readouterr().out
    assert shown.rstrip().splitlines()[-1] == f"replay {replay_id} (cancelled after 1 version)"


def test_two_models_of_one_name_are_told_apart(capsys, demo_db: Path, versions, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(versions[2], other / "wine-v1.onnx")  # wine-v3's bytes, wine-v1's file name
    assert main(["versions", "add", "--db", str(demo_db), *map(str, versions)]) == 0
    capsys.readouterr()
    export = tmp_path / "cases.csv"
    code, doc, _ = run_json(capsys, ["replay", "--db", str(demo_db), "--versions", "wine-v1",
                                     str(other / "wine-v1.onnx"), "--export", str(export),
                                     "--json"])
    assert code == 0
    v1, copy = doc["versions"]
    assert (v1["version"], copy["version"]) == ("wine-v1", "wine-v1@other")
    assert copy["fixed"] > v1["fixed"]  # wine-v3 fixes what wine-v1 keeps failing
    with export.open(newline="") as f:
        header = next(csv.reader(f))
    assert len(header) == len(set(header))
    assert "wine-v1:verdict" in header and "wine-v1@other:verdict" in header
    main(["replay", "--db", str(demo_db), "--show", "latest"])
    text = capsys.readouterr().out
    assert "first failing version: wine-v1 " in text and "wine-v1@other " in text
    # The registered name stays with its file, whichever comes first.
    _, doc, _ = run_json(capsys, ["replay", "--db", str(demo_db), "--no-save", "--versions",
                                  str(other / "wine-v1.onnx"), str(versions[0]), "--json"])
    assert [v["version"] for v in doc["versions"]] == ["wine-v1@other", "wine-v1"]


def test_a_served_model_and_its_file_are_told_apart(capsys, demo_db: Path, versions,
                                                     v2_server: str):
    port = v2_server.rsplit(":", 1)[1]
    code, doc, _ = run_json(capsys, ["replay", "--db", str(demo_db), "--no-save", "--versions",
                                     str(versions[1]), f"v2+{v2_server}/models/wine-v2",
                                     "--limit", "30", "--controls", "20", "--json"])
    assert code == 0
    local, served = doc["versions"]
    assert (local["version"], served["version"]) == ("wine-v2", f"wine-v2@127.0.0.1:{port}")
    assert (local["fixed"], local["newly_broken"]) == (served["fixed"], served["newly_broken"])


@pytest.fixture
def registered_copy(capsys, demo_db: Path, versions, tmp_path) -> Path:
    """wine-v1's bytes as ch/m.onnx, registered under the name ``mine``."""
    model = tmp_path / "ch" / "m.onnx"
    model.parent.mkdir()
    shutil.copy(versions[0], model)
    assert main(["versions", "add", "--db", str(demo_db), str(model), "--name", "mine"]) == 0
    capsys.readouterr()
    return model


def test_an_onnx_uri_to_a_registered_file_is_that_version(capsys, demo_db: Path,
                                                          registered_copy: Path):
    _, doc, _ = run_json(capsys, ["replay", "--db", str(demo_db), "--no-save", "--versions",
                                  f"onnx:{registered_copy}", "--limit", "5", "--json"])
    assert [v["version"] for v in doc["versions"]] == ["mine"]
    assert main(["replay", "--db", str(demo_db), "--no-save", "--versions", "mine",
                 f"onnx:{registered_copy}?provider=cpu"]) == 2
    assert "are one version; give it once" in capsys.readouterr().err


def test_an_onnx_uri_to_a_registered_file_that_changed_is_refused(capsys, demo_db: Path,
                                                                  versions,
                                                                  registered_copy: Path):
    shutil.copy(versions[2], registered_copy)  # other bytes under the registered path
    assert main(["replay", "--db", str(demo_db), "--no-save", "--versions",
                 f"onnx:{registered_copy}"]) == 2
    err = capsys.readouterr().err
    assert "version mine changed since it was registered" in err and err.count("\n") == 1
    assert saved_replays(demo_db) == []


def test_versions_list_hints_per_state_a_changed_file_and_a_missing_one(
        capsys, demo_db: Path, versions, registered_copy: Path):
    changed = registered_copy.parent / "c.onnx"
    shutil.copy(versions[1], changed)
    assert main(["versions", "add", "--db", str(demo_db), str(changed), "--name", "retrained"]
                ) == 0
    shutil.copy(versions[2], changed)  # other bytes under the registered path
    registered_copy.unlink()
    capsys.readouterr()
    assert main(["versions", "list", "--db", str(demo_db)]) == 0
    out = capsys.readouterr().out
    # Registering again needs the file: for one gone, the way out is to restore or remove it.
    assert ("retrained: the file is not what was registered; replay refuses it until it is "
            "registered again") in out
    assert ("mine: the file is missing; replay asks it nothing, so it gets no verdict: "
            "restore the file, or `probescope versions remove mine`") in out
    assert "mine, retrained" not in out and "retrained, mine" not in out


def test_a_registered_file_that_is_gone_gets_no_verdict_and_the_others_are_replayed(
        capsys, demo_db: Path, versions, registered_copy: Path):
    db = str(demo_db)
    assert main(["versions", "add", "--db", db, *map(str, versions)]) == 0
    registered_copy.unlink()  # mine: wine-v1's bytes, registered first
    capsys.readouterr()
    code, doc, err = run_json(capsys, ["replay", "--db", db, "--no-save", "--limit", "40",
                                       "--controls", "10", "--json"])
    # As for a server that is down: no verdict for that version, exit status 1.
    assert code == 1
    by_name = {v["version"]: v for v in doc["versions"]}
    assert list(by_name) == ["mine", "wine-v1", "wine-v2", "wine-v3"]
    gone = by_name["mine"]
    assert gone["unanswered"] == gone["cases"] == 50
    assert gone["unanswered_reason"] == f"model file {registered_copy} does not exist"
    assert gone["fixed"] == gone["still_failing"] == gone["newly_broken"] == 0
    assert by_name["wine-v1"]["still_failing"] == 40 and by_name["wine-v2"]["fixed"] > 0
    assert (f"mine could not be asked about 50 of 50 cases: model file {registered_copy} does "
            "not exist; restore the file, or `probescope versions remove mine`") in err
    # Named on purpose, it is refused: the replay asked for cannot be run.
    assert main(["replay", "--db", db, "--no-save", "--versions", "mine", "wine-v2"]) == 2
    err = capsys.readouterr().err
    assert err == (f"probescope: version mine: model file {registered_copy} does not exist; "
                   "restore the file, or `probescope versions remove mine`\n")


def test_a_local_model_that_cannot_take_the_captures_is_not_blamed_on_a_server(
        capsys, demo_db: Path, versions, tmp_path):
    wide = _wide_model(tmp_path / "wide10.onnx")
    assert main(["replay", "--db", str(demo_db), "--no-save", "--versions", str(versions[0]),
                 str(wide), "--limit", "20", "--controls", "10"]) == 1
    err = capsys.readouterr().err
    assert ("wide10 could not be asked about 30 of 30 cases: wide10 takes features as "
            "[batch, 10]; the captures hold [13] per row") in err
    assert "server" not in err


@pytest.mark.parametrize("argv, message", [
    (["--since", "2026-11-23T11:40", "--until", "2026-11-23T11:35"],
     "--since (2026-11-23 11:40:00) is after --until (2026-11-23 11:35:00)"),
    (["--versions", "{folder}"], "'{folder}' is a folder, not a model file; give the .onnx "
                                 "file in it, e.g. {folder}/wine-v1.onnx"),
    (["--versions", "{empty}"], "'{empty}' is a folder, not a model file; it holds no .onnx"),
    (["--since", "1796480899123"], "outside 1970 to 2262 as Unix seconds; if it is in "
                                   "milliseconds, give 1796480899.123"),
])
def test_hints_say_what_is_wrong(capsys, demo_db: Path, tmp_path, argv, message):
    folder, empty = tmp_path / "models", tmp_path / "empty"
    folder.mkdir()
    empty.mkdir()
    shutil.copy(DEMO / "wine-v1.onnx", folder)

    def filled(text: str) -> str:
        return text.format(folder=folder, empty=empty)

    try:
        code = main(["replay", "--db", str(demo_db), *map(filled, argv)])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and filled(message) in err and err.count("\n") == 1


def test_a_model_registered_under_two_names_is_replayed_once(capsys, demo_db: Path, versions,
                                                             tmp_path):
    db = str(demo_db)
    assert main(["versions", "add", "--db", db, *map(str, versions)]) == 0
    assert main(["versions", "add", "--db", db, str(versions[0]), "--name", "v1-again"]) == 0
    copy = tmp_path / "copy" / "wine-v2.onnx"  # the same bytes elsewhere: the same model
    copy.parent.mkdir()
    shutil.copy(versions[1], copy)
    assert main(["versions", "add", "--db", db, str(copy), "--name", "v2-copy"]) == 0
    capsys.readouterr()
    code, doc, err = run_json(capsys, ["replay", "--db", db, "--no-save", "--limit", "20",
                                       "--json"])
    assert code == 0
    assert [v["version"] for v in doc["versions"]] == ["wine-v1", "wine-v2", "wine-v3"]
    assert err.count("v1-again is wine-v1 registered again") == 1
    assert err.count("v2-copy is wine-v2 registered again") == 1
    assert "replaying it once, as wine-v1" in err


@pytest.mark.parametrize("argv", [
    ["replay", "--db", "{db}", "--versions", str(DEMO / "wine-v1.onnx"), "--limit", "5"],
    ["replay", "--db", "{db}", "--list", "--json"],
    ["versions", "list", "--db", "{db}", "--json"],
])
def test_a_reader_that_is_gone_gets_no_error_message(demo_db: Path, argv):
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before a byte is written (`| head -1` once it has its line)
    try:
        done = subprocess.run([sys.executable, "main.py",
                               *(a.format(db=demo_db) for a in argv)],
                              cwd=ROOT, stdin=subprocess.DEVNULL, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 128 + signal.SIGPIPE  # as a tool killed by SIGPIPE
