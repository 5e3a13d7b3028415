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
    assert alive.status == UNSUPPORTED and "runs no models" in alive.reason
    assert stranger.status == UNREACHABLE and "not a ProbeScope agent" in stranger.reason
    assert refused.status == UNREACHABLE and f"set {TOKEN_ENV} to its token" in refused.reason
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
        ("", "sets no limit, so every model would pass it"),
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
