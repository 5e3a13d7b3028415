"""Handover contracts: parsing, measuring each clause on each target, honest unreachables."""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import pytest

from app.core.agent_server import AgentHttpServer
from app.core.contract import (
    FAIL,
    PASS,
    UNREACHABLE,
    UNSUPPORTED,
    ContractError,
    check_contract,
    contract_path_for,
    load_contract,
)
from tests.conftest import DEMO

RUNS = 50  # latency runs; figures are not asserted against thresholds, only against limits


def clauses(check) -> dict:
    return {c.name: c for c in check.clauses}


def test_the_demo_contracts_pass_v1_and_fail_v3_on_accuracy_on_cpu():
    v1 = check_contract(DEMO / "wine-v1.onnx", ["cpu"], runs=RUNS)
    v3 = check_contract(DEMO / "wine-v3.onnx", ["cpu"], runs=RUNS)
    assert v1.targets[0].status == PASS and v1.passed
    c1, c3 = clauses(v1.targets[0]), clauses(v3.targets[0])
    assert set(c1) == {"accuracy", "latency_p95_ms", "peak_memory_mb", "parameters",
                       "framework", "version"}
    assert c1["accuracy"].measured == pytest.approx(0.963, abs=0.001)  # models.json's figure
    assert c1["parameters"].measured == v1.model.parameters
    assert c1["latency_p95_ms"].measured > 0 and c1["peak_memory_mb"].measured >= 0
    assert v3.targets[0].status == FAIL and c3["accuracy"].status == FAIL
    assert c3["accuracy"].measured < c3["accuracy"].limit


def test_targets_that_cannot_be_reached_are_never_passes(tmp_path, monkeypatch):
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from app.core.agent_auth import TOKEN_ENV
    from app.core.agent_buffer import AgentBuffer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    AgentBuffer(tmp_path / "buf").close()  # the agent makes its buffer before it serves
    agent = AgentHttpServer(("127.0.0.1", 0), token="t" * 32, buffer_path=tmp_path / "buf",
                            info={"agent": "test"})
    agent.serve_in_thread()
    other = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)  # not an agent
    threading.Thread(target=other.serve_forever, daemon=True).start()
    agent_uri = f"agent+http://127.0.0.1:{agent.server_address[1]}"
    try:
        monkeypatch.setenv(TOKEN_ENV, "t" * 32)
        report = check_contract(
            DEMO / "wine-v1.onnx",
            ["cuda", f"agent+http://127.0.0.1:{port}", agent_uri,
             f"agent+http://127.0.0.1:{other.server_address[1]}", "quantum"], runs=RUNS)
        monkeypatch.setenv(TOKEN_ENV, "w" * 32)
        (refused,) = check_contract(DEMO / "wine-v1.onnx", [agent_uri], runs=RUNS).targets
    finally:
        agent.shutdown()
        agent.server_close()
        other.shutdown()
        other.server_close()
    cuda, dead, alive, stranger, unknown = report.targets
    assert cuda.status == UNREACHABLE and "cuda" in cuda.reason and not cuda.clauses
    assert dead.status == UNREACHABLE and "cannot connect" in dead.reason
    assert alive.status == UNSUPPORTED and "runs no model file" in alive.reason
    assert stranger.status == UNREACHABLE and "not a ProbeScope agent" in stranger.reason
    assert refused.status == UNREACHABLE and f"give its token: set {TOKEN_ENV}" in refused.reason
    assert unknown.status == UNSUPPORTED
    assert not report.passed


def test_contract_files_are_found_beside_the_model_and_checked_for_mistakes(tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copy(DEMO / "wine-v1.onnx", model)
    assert contract_path_for(model) is None
    with pytest.raises(ContractError, match=r"m\.contract\.toml or model\.contract\.toml"):
        check_contract(model, ["cpu"])
    (tmp_path / "model.contract.toml").write_text("[contract]\nmax_parameters = 10\n")
    assert contract_path_for(model) == tmp_path / "model.contract.toml"
    report = check_contract(model, ["cpu"], runs=RUNS)
    assert report.targets[0].status == FAIL
    assert clauses(report.targets[0])["parameters"].status == FAIL
    assert clauses(report.targets[0])["latency_p95_ms"].status == "no_limit"
    (tmp_path / "m.contract.toml").write_text("[accuracy]\nmin = 0.9\n")
    with pytest.raises(ContractError, match="needs a validation file"):
        load_contract(contract_path_for(model))
    bad = tmp_path / "bad.toml"
    bad.write_text("[contract\n")
    with pytest.raises(ContractError, match="not valid TOML"):
        load_contract(bad)
    bad.write_text('[latency_p95_ms]\ncpu = "fast"\n')
    with pytest.raises(ContractError, match="must be a number"):
        load_contract(bad)
    # A misspelt key would be a limit never checked: every one is named, with the likely fix.
    for text, words in [
        ("[contract]\nmax_paramters = 10\n",
         r"unknown key \[contract\] max_paramters; did you mean max_parameters\?"),
        ("[accuracy]\nmin = 0.9\nvalidation = 'v.csv'\n", r"validation file .*v\.csv does not "
                                                          r"exist \(the path is relative"),
        ("[accuracy]\nminimum = 0.9\nvalidation = 'v.csv'\n", r"unknown key \[accuracy\] "
                                                             r"minimum; did you mean min\?"),
        ("[latency_p95_ms]\ncpuu = 1.0\n", r"\[latency_p95_ms\] cpuu; did you mean cpu\?"),
        ("[latency]\ncpu = 1.0\n", r"unknown key latency; did you mean latency_p95_ms\?"),
        ("", "sets no limit on a measured figure, so it would pass a model on nothing"),
        ("[accuracy]\nmin = 95\nvalidation = 'bad.toml'\n", "share from 0 to 1, not 95"),
        ("[contract]\nmax_peak_memory_mb = -1\n", "limits cannot be negative"),
    ]:
        bad.write_text(text)
        with pytest.raises(ContractError, match=words):
            load_contract(bad)
    bad.write_text("[latency_p95_ms]\ncpu = 1.0\n'agent+http://10.0.0.7:7070' = 3.0\n")
    assert load_contract(bad).max_latency_p95_ms == {"cpu": 1.0, "agent+http://10.0.0.7:7070": 3.0}


def test_each_demo_model_has_its_own_contract():
    for v in (1, 2, 3):
        c = load_contract(contract_path_for(DEMO / f"wine-v{v}.onnx"))
        assert c.version == f"{v}.0.0" and c.validation == DEMO / "validation.csv"
        assert Path(c.validation).is_file() and "cpu" in c.max_latency_p95_ms


def test_peak_memory_is_the_models_not_the_validation_files(tmp_path):
    import pandas as pd

    small = pd.read_csv(DEMO / "validation.csv")
    for name, rows in (("small", small), ("large", pd.concat([small] * (400_000 // len(small))))):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(DEMO / "wine-v1.onnx", folder / "m.onnx")
        rows.to_csv(folder / "validation.csv", index=False)
        (folder / "model.contract.toml").write_text(
            "[contract]\nmax_peak_memory_mb = 1000\n[accuracy]\nmin = 0.5\n"
            "validation = 'validation.csv'\n")
    figures = {}
    for name in ("small", "large"):
        (check,) = check_contract(tmp_path / name / "m.onnx", ["cpu"], runs=RUNS).targets
        figures[name] = clauses(check)
    # 400,000 rows are 21 MB as float32 (more as float64): none of it may count as the model's.
    assert figures["large"]["peak_memory_mb"].measured < figures["small"][
        "peak_memory_mb"].measured + 8
    assert figures["large"]["accuracy"].measured == pytest.approx(
        figures["small"]["accuracy"].measured, abs=0.02)


def _model(path: Path, *, inputs: list, outputs: list, nodes: list, initializers=(),
           meta: dict | None = None) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(helper.make_graph(nodes, "m", inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, path)
    return path


def _write(folder: Path, stem: str, contract: str, rows: list[tuple]) -> None:
    (folder / f"{stem}.contract.toml").write_text(contract)
    lines = ["a,b,label"] + [",".join(map(str, r)) for r in rows]
    (folder / "validation.csv").write_text("\n".join(lines) + "\n")


# A target passes only on a latency limit of its own; 1 s is no test of speed.
ACCURACY_ONLY = ('[accuracy]\nvalidation = "validation.csv"\nmin = 0.9\n'
                 '[latency_p95_ms]\ncpu = 1000.0\n')


def _two_feature_rows() -> list[tuple]:
    # Class 1 exactly when a > b; a and b are whole numbers so every model below is exact.
    return [(a, b, int(a > b)) for a in range(6) for b in range(6) if a != b]


def test_accuracy_reads_the_class_from_any_common_output_form(tmp_path):
    """A class-index first output (sklearn's), one sigmoid column, one logit column, and a
    model exported with a fixed batch of 1 are all measured right, against the same rows."""
    import numpy as np
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 1], [1.0, -1.0])
    diff = helper.make_node("MatMul", ["x", "w"], ["d"])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])
    prob = helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch", 1])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    models = {
        "labelfirst": dict(outputs=[label, prob], nodes=[
            diff, helper.make_node("Greater", ["d", "zero"], ["g"]),
            helper.make_node("Cast", ["g"], ["c"], to=TensorProto.INT64),
            helper.make_node("Flatten", ["c"], ["f"], axis=0),
            helper.make_node("Squeeze", ["f", "axes0"], ["label"]),
            helper.make_node("Sigmoid", ["d"], ["p"])],
            initializers=[w, zero, helper.make_tensor("axes0", TensorProto.INT64, [1], [0])]),
        "sigmoid": dict(outputs=[prob], nodes=[diff, helper.make_node("Sigmoid", ["d"], ["p"])],
                        initializers=[w]),
        "logit": dict(outputs=[prob], nodes=[diff, helper.make_node("Identity", ["d"], ["p"])],
                      initializers=[w]),
    }
    rows = _two_feature_rows()
    for stem, parts in models.items():
        folder = tmp_path / stem
        folder.mkdir()
        _model(folder / f"{stem}.onnx", inputs=[x], **parts)
        _write(folder, stem, ACCURACY_ONLY, rows)
        check = check_contract(folder / f"{stem}.onnx", ["cpu"], runs=RUNS).targets[0]
        assert clauses(check)["accuracy"].measured == 1.0, stem
        assert check.status == PASS, stem
    # A fixed batch of 1 (an export without dynamic axes): fed one row at a time.
    folder = tmp_path / "batch1"
    folder.mkdir()
    one = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    _model(folder / "batch1.onnx", inputs=[one], outputs=[prob],
           nodes=[diff, helper.make_node("Sigmoid", ["d"], ["p"])], initializers=[w])
    _write(folder, "batch1", ACCURACY_ONLY, rows)
    check = check_contract(folder / "batch1.onnx", ["cpu"], runs=RUNS).targets[0]
    assert check.status == PASS and clauses(check)["accuracy"].measured == 1.0
    # NaN in the validation rows: no class, counted as wrong and said so.
    folder = tmp_path / "nan"
    folder.mkdir()
    _model(folder / "nan.onnx", inputs=[x], **models["sigmoid"])
    nan_rows = [("nan", b, lab) if k < 10 else (a, b, lab)
                for k, (a, b, lab) in enumerate(rows)]
    _write(folder, "nan", ACCURACY_ONLY, nan_rows)
    acc = clauses(check_contract(folder / "nan.onnx", ["cpu"], runs=RUNS).targets[0])[
        "accuracy"]
    assert acc.measured == pytest.approx((len(rows) - 10) / len(rows), abs=1e-4)
    assert "10 gave no class" in acc.detail
    assert not np.isnan(acc.measured)


def test_labels_by_name_and_files_that_cannot_give_a_fair_accuracy(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])
    y = helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch", 2])
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [-1.0, 1.0, 1.0, -1.0])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["d"]),
             helper.make_node("Softmax", ["d"], ["p"], axis=1)]
    model = _model(tmp_path / "named.onnx", inputs=[x], outputs=[y], nodes=nodes,
                   initializers=[w], meta={"classes": "small,large"})
    named = [(a, b, "large" if a > b else "small") for a, b, _ in _two_feature_rows()]
    _write(tmp_path, "named", ACCURACY_ONLY, named)
    check = check_contract(model, ["cpu"], runs=RUNS).targets[0]
    assert clauses(check)["accuracy"].measured == 1.0  # read through the 'classes' metadata
    _write(tmp_path, "named", ACCURACY_ONLY, [(a, b, f"class_{c}") for a, b, c in
                                              _two_feature_rows()])
    with pytest.raises(ContractError, match="labels such as 'class_0' are neither class"):
        check_contract(model, ["cpu"], runs=RUNS)
    # The ground truth under another name would be fed to the model as a third feature.
    (tmp_path / "validation.csv").write_text("a,b,target\n1,2,0\n")
    with pytest.raises(ContractError, match="has 3 feature columns; named takes 2"):
        check_contract(model, ["cpu"], runs=RUNS)
    (tmp_path / "validation.csv").write_text("a,b,label\n")
    with pytest.raises(ContractError, match="holds no rows"):
        check_contract(model, ["cpu"], runs=RUNS)


def test_limits_are_judged_unrounded_and_a_target_without_one_is_not_a_pass(tmp_path):
    from app.core.contract import _limit_clause

    just_short = _limit_clause("accuracy", 0.94996, 0.95, at_most=False, digits=4)
    assert just_short.status == FAIL and just_short.measured == 0.94996  # not shown as 0.95
    assert _limit_clause("accuracy", 0.96001, 0.95, at_most=False, digits=4).measured == 0.96
    model = tmp_path / "wine-v1.onnx"
    shutil.copy(DEMO / "wine-v1.onnx", model)
    (tmp_path / "wine-v1.contract.toml").write_text("[latency_p95_ms]\ncuda = 0.5\n")
    (check,) = check_contract(model, ["cpu"], runs=RUNS).targets
    assert check.status == UNSUPPORTED and "sets no latency limit for cpu" in check.reason
    for bad in ("max_parameters = inf", "max_peak_memory_mb = nan"):
        (tmp_path / "wine-v1.contract.toml").write_text(f"[contract]\n{bad}\n")
        with pytest.raises(ContractError, match="must be a finite number"):
            check_contract(model, ["cpu"], runs=RUNS)


def test_models_it_cannot_feed_and_the_framework_named_by_its_exporter(tmp_path):
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 2])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    two = _model(tmp_path / "two.onnx", inputs=[a, b], outputs=[y],
                 nodes=[helper.make_node("Add", ["a", "b"], ["y"])])
    (tmp_path / "two.contract.toml").write_text("[latency_p95_ms]\ncpu = 5\n")
    (check,) = check_contract(two, ["cpu"], runs=RUNS).targets
    assert check.status == UNSUPPORTED and "takes 2 inputs (a, b)" in check.reason
    import onnx

    m = onnx.load(two)
    del m.graph.input[1]
    m.graph.node[0].input[1] = "a"
    for producer, framework, ok in (("pytorch", "pytorch", True), ("pytorch", "2.1.0", False),
                                    ("skl2onnx", "sklearn", True), ("tf2onnx", "tensorflow", True),
                                    ("tf2onnx", "pytorch", False)):
        m.producer_name, m.producer_version = producer, "2.1.0"
        onnx.save(m, tmp_path / "one.onnx")
        (tmp_path / "one.contract.toml").write_text(
            f'[contract]\nframework = "{framework}"\nmax_parameters = 100\n')
        (check,) = check_contract(tmp_path / "one.onnx", ["cpu"], runs=RUNS).targets
        assert (clauses(check)["framework"].status == PASS) is ok, (producer, framework)


def test_a_mistyped_target_and_a_numeric_model_version(tmp_path, capsys):
    import onnx

    from app.cli import main
    from app.core.versions import inspect_onnx

    assert main(["contract", "check", str(DEMO / "wine-v1.onnx"), "--targets", "cpu,CPU"]) == 2
    assert "unknown target 'CPU'" in capsys.readouterr().err
    m = onnx.load(DEMO / "wine-v1.onnx")
    del m.metadata_props[:]
    m.model_version = 3  # the ModelProto field, an integer
    onnx.save(m, tmp_path / "m.onnx")
    assert inspect_onnx(tmp_path / "m.onnx").version == "3"
    (tmp_path / "m.contract.toml").write_text('[contract]\nversion = "3"\nmax_parameters = 1000\n')
    (check,) = check_contract(tmp_path / "m.onnx", ["cpu"], runs=RUNS).targets
    assert clauses(check)["version"].status == PASS
