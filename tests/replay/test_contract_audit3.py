"""Handover-contract fixes from the third audit, on real models built with ``onnx``, real
measuring children, a real agent on 127.0.0.1 and the real CLI: per-agent limits matched on the
agent's address, a target without a latency limit never a pass, limits no target was held to
said, peak memory that is the model's whatever the clauses, weights in Constant nodes counted,
and ``versions add --version`` that contradicts the file refused."""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.cli import main
from app.core.agent import Agent, AgentConfig
from app.core.agent_auth import TOKEN_ENV
from app.core.contract import ContractError, load_contract, target_key
from app.core.versions import inspect_onnx
from tests.conftest import DEMO

RUNS = "20"  # latency runs; the only limit below is 0.0001 ms, which no real run meets
W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
B = np.array([0.1, -0.2, 0.3], dtype=np.float32)


def _tiny(path: Path, *, as_constants: bool = False, version: str | None = "0.1.0") -> Path:
    """x float[N,4] -> logits float[N,3], MatMul + Add: 15 weights, in initializers or, as
    some exporters and constant folding leave them, in Constant nodes."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("Add", ["h", "B"], ["logits"])]
    weights = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")]
    if as_constants:
        nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in weights] + nodes
        weights = []
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], [y], weights),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if version:
        model.metadata_props.add(key="version", value=version)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _validation(path: Path, *, blank_every: int = 0) -> Path:
    """200 rows whose labels are the model's own argmax with 10 flipped: accuracy 0.95."""
    rows = np.random.default_rng(1).standard_normal((200, 4)).astype(np.float32)
    labels = (rows @ W + B).argmax(axis=1)
    labels[:10] = (labels[:10] + 1) % 3
    lines = ["f0,f1,f2,f3,label"]
    for i, (r, lab) in enumerate(zip(rows, labels, strict=True)):
        blank = blank_every and i % blank_every == 0
        lines.append(",".join(repr(float(v)) for v in r) + "," + ("" if blank else str(lab)))
    path.write_text("\n".join(lines) + "\n")
    return path


def _check(capsys, *argv: str) -> tuple[int, str]:
    code = main(["contract", "check", *argv, "--runs", RUNS])
    return code, capsys.readouterr().out


def _json(capsys, *argv: str) -> tuple[int, dict]:
    code, out = _check(capsys, *argv, "--json")
    (model,) = json.loads(out)["models"]
    return code, model


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return _tiny(tmp_path / "tiny.onnx")


@pytest.fixture
def agent(tmp_path: Path, tiny: Path):
    """A real agent on 127.0.0.1 started with --model on the tiny model; its token in a file."""
    token = secrets.token_urlsafe(32)
    (tmp_path / "agent.token").write_text(token + "\n")
    running = Agent(AgentConfig(token=token, buffer_path=tmp_path / "agent.sqlite", port=0,
                                model=tiny))
    running.start()
    yield running
    running.close()


# -- H1: a per-agent limit is matched on the agent's address -----------------------------------

def test_a_per_agent_limit_holds_however_the_target_is_written(agent, tiny, tmp_path, capsys,
                                                              monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    host, port = agent.address
    contract = tmp_path / "agent.toml"
    contract.write_text(f'[contract]\nmax_parameters = 15\n[latency_p95_ms]\n'
                        f'"agent+http://{host}:{port}" = 0.0001\n')
    token_file = tmp_path / "agent.token"
    for written in (f"agent+http://{host}:{port}?token_file={token_file}",
                    f"agent+http://{host}:{port}/?token_file={token_file}"):
        code, model = _json(capsys, str(tiny), "--contract", str(contract), "--targets", written)
        (cell,) = model["targets"]
        latency = {c["clause"]: c for c in cell["clauses"]}["latency_p95_ms"]
        # The README's own form, with ?token_file=, used to read no_limit and PASS, rc 0.
        assert (latency["status"], latency["limit"]) == ("fail", 0.0001), written
        assert cell["status"] == "fail" and code == 1 and model["not_checked"] == []


def test_a_limit_for_another_agent_is_said_and_the_agent_given_is_not_passed(
        agent, tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    host, port = agent.address
    other = f"agent+http://{host}:{port + 1 if port < 65535 else port - 1}"
    contract = tmp_path / "agent.toml"
    contract.write_text(f'[contract]\nmax_parameters = 15\n[latency_p95_ms]\n"{other}" = 5\n')
    code, out = _check(capsys, str(tiny), "--contract", str(contract), "--targets",
                       f"agent+http://{host}:{port}?token_file={tmp_path / 'agent.token'}")
    assert code == 1
    assert f"not checked: {other} (no target given at this address)" in out
    assert ": UNSUPPORTED — not judged: the contract sets no latency limit for" in out


def test_target_keys_drop_the_query_slash_case_and_default_port():
    key = "agent+http://10.0.0.7:7070"
    for written in ("agent+http://10.0.0.7:7070/", "agent+http://10.0.0.7:7070?token_file=/t",
                    "agent+http://user:pw@10.0.0.7:7070/?ca=/c&token_env=T"):
        assert target_key(written) == key
    assert target_key("agent+http://Edge.Local") == "agent+http://edge.local:80"
    assert target_key("agent+https://edge.local/") == "agent+https://edge.local:443"
    assert target_key("cpu") == "cpu"


def test_two_spellings_of_one_agent_in_a_contract_are_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[latency_p95_ms]\n"agent+http://10.0.0.7:7070" = 1\n'
                    '"agent+http://10.0.0.7:7070/" = 2\n')
    with pytest.raises(ContractError, match=r"are one agent .*give its limit once"):
        load_contract(path)


# -- H2: no latency limit for a target, no pass -------------------------------------------------

def test_a_target_the_contract_sets_no_latency_limit_for_is_not_a_pass(tiny, tmp_path, capsys):
    contract = tmp_path / "cudaonly.toml"
    contract.write_text("[contract]\nmax_parameters = 15\n[latency_p95_ms]\ncuda = 0.5\n")
    code, model = _json(capsys, str(tiny), "--contract", str(contract))
    (cell,) = model["targets"]
    # Judged on its parameters alone, cpu used to be a green PASS with exit 0.
    assert cell["status"] == "unsupported" and code == 1 and model["status"] == "failed"
    assert "sets no latency limit for cpu (its latency limits are for: cuda)" in cell["reason"]
    assert {c["clause"]: c["status"] for c in cell["clauses"]}["latency_p95_ms"] == "no_limit"
    assert model["not_checked"] == ["cuda"]


# -- M3: the contract's limits on targets not given are said ------------------------------------

def test_the_default_check_says_the_limits_it_did_not_measure(capsys):
    code, out = _check(capsys, str(DEMO / "wine-v1.onnx"))
    assert code == 0 and "cpu: PASS" in out
    said = [line.strip() for line in out.splitlines() if "not checked" in line]
    assert said == ["not checked: cuda (not in --targets)",
                    "not checked: agent (no agent in --targets)"]
    code, model = _json(capsys, str(DEMO / "wine-v1.onnx"))
    assert code == 0 and model["not_checked"] == ["cuda", "agent"]
    assert model["status"] == "passed"  # every model has a status, measured or not


# -- M1: peak memory is the model's whatever the clauses ----------------------------------------

def test_peak_memory_does_not_depend_on_an_accuracy_clause(tiny, tmp_path, capsys):
    _validation(tmp_path / "val.csv")
    with_accuracy = tmp_path / "a.toml"
    with_accuracy.write_text("[contract]\nmax_peak_memory_mb = 1000\n[accuracy]\n"
                             "validation = \"val.csv\"\nmin = 0.5\n[latency_p95_ms]\ncpu = 1000\n")
    without = tmp_path / "b.toml"
    without.write_text("[contract]\nmax_peak_memory_mb = 1000\n[latency_p95_ms]\ncpu = 1000\n")
    figures = []
    for contract in (with_accuracy, without):
        runs = []
        for _ in range(2):  # the lower of two: a peak read once moves by a megabyte or so
            _, model = _json(capsys, str(tiny), "--contract", str(contract))
            runs.append({c["clause"]: c for c in model["targets"][0]["clauses"]}[
                "peak_memory_mb"]["measured"])
        figures.append(min(runs))
    # Before: 10.3 MB with the accuracy clause, 14.0 MB without (pandas imported or not before
    # the baseline). Now the same imports precede the baseline either way; what is left is the
    # CSV reader's own pages and the allocator's noise (single reads 1.5 MB apart in a CI run).
    assert abs(figures[0] - figures[1]) < 2.0, figures


# -- M4: weights in Constant nodes count --------------------------------------------------------

def test_weights_in_constant_nodes_count_as_parameters(tmp_path, capsys):
    const = _tiny(tmp_path / "const.onnx", as_constants=True)
    model = onnx.load(const)
    held = sum(numpy_helper.to_array(a.t).size for n in model.graph.node
               if n.op_type == "Constant" for a in n.attribute)
    assert held == 15 and not model.graph.initializer
    assert inspect_onnx(const).parameters == 15  # was 0
    (tmp_path / "const.contract.toml").write_text(
        "[contract]\nmax_parameters = 10\n[latency_p95_ms]\ncpu = 1000\n")
    code, out = _check(capsys, str(const))
    assert code == 1 and "fail     parameters      15 (limit 10)" in out


def test_shape_and_condition_tensors_are_not_parameters(tmp_path):
    """int64 shapes (a Reshape's, as a Constant and as an initializer) and a bool are no
    weights; the float ones are, as ``sum(p.numel())`` would count them."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    shape = numpy_helper.from_array(np.array([-1, 3], dtype=np.int64), "shape")
    nodes = [helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(W, "W")),
             helper.make_node("Constant", [], ["s2"], value=shape),
             helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("Reshape", ["h", "s2"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["y"])]
    flag = numpy_helper.from_array(np.array(True), "flag")  # unused, as an If's condition is
    graph = helper.make_graph(nodes, "g", [x], [y], [shape, flag])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, tmp_path / "shapes.onnx")
    assert inspect_onnx(tmp_path / "shapes.onnx").parameters == W.size


# -- finding 6: versions add --version against the file's own -----------------------------------

def test_versions_add_refuses_a_version_the_file_contradicts(tiny, tmp_path, capsys):
    db = str(tmp_path / "w.db")
    assert main(["versions", "add", "--db", db, str(tiny), "--version", "9.9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "names its own version 0.1.0" in err
    assert "which --version 9.9 contradicts; drop --version" in err
    assert main(["versions", "add", "--db", db, str(tiny), "--version", "0.1.0"]) == 0
    bare = _tiny(tmp_path / "bare.onnx", version=None)  # names none: --version stands in
    assert main(["versions", "add", "--db", db, str(bare), "--version", "7.0", "--json"]) == 0
    capsys.readouterr()
    assert main(["versions", "list", "--db", db, "--json"]) == 0
    listed = {v["name"]: v["version"] for v in json.loads(capsys.readouterr().out)["versions"]}
    assert listed == {"tiny": "0.1.0", "bare": "7.0"}


# -- LOW ----------------------------------------------------------------------------------------

def test_rows_without_a_label_are_counted_and_said(tiny, tmp_path, capsys):
    _validation(tmp_path / "val.csv", blank_every=4)  # 50 of 200 blank
    (tmp_path / "tiny.contract.toml").write_text(
        "[accuracy]\nvalidation = \"val.csv\"\nmin = 0.5\n[latency_p95_ms]\ncpu = 1000\n")
    code, out = _check(capsys, str(tiny))
    assert code == 0
    assert "[150 of 200 validation rows; 50 without a label skipped]" in out


@pytest.mark.parametrize("head", ['framework = "onnx"', 'framework = "onnx"\nversion = "1"'])
def test_a_contract_of_labels_alone_is_refused(tiny, tmp_path, capsys, head):
    (tmp_path / "tiny.contract.toml").write_text(f"[contract]\n{head}\n")
    code, out = _check(capsys, str(tiny))
    assert code == 2 and "sets no limit on a measured figure (only framework" in out


def test_refused_arguments_answer_json_on_stdout(capsys):
    code = main(["contract", "check", str(DEMO / "wine-v1.onnx"), "--targets", "cpu,gpu",
                 "--json"])
    captured = capsys.readouterr()
    assert code == 2 and "unknown target 'gpu'" in json.loads(captured.out)["error"]
    assert captured.err.startswith("probescope: unknown target 'gpu'")


def test_clauses_keep_one_order_whatever_the_contract(tiny, tmp_path, capsys):
    shutil.copy(tiny, tmp_path / "t2.onnx")
    (tmp_path / "t2.contract.toml").write_text(
        "[contract]\nmax_parameters = 15\n[latency_p95_ms]\ncpu = 1000\n")
    _, model = _json(capsys, str(tmp_path / "t2.onnx"))
    assert [c["clause"] for c in model["targets"][0]["clauses"]] == [
        "latency_p95_ms", "peak_memory_mb", "parameters"]
