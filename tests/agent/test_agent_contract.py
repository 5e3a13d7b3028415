"""A contract checked on an edge agent: a real agent (its probes, buffer and HTTP server on
127.0.0.1) started with --model measures that very file on its side; anything else it is
asked about is never a pass."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.cli import main
from app.core.agent import Agent, AgentConfig
from app.core.agent_auth import TOKEN_ENV
from app.core.contract import PASS, UNREACHABLE, UNSUPPORTED, check_contract
from app.core.versions import inspect_onnx
from tests.conftest import DEMO

RUNS = 40


@pytest.fixture
def agent(tmp_path: Path, token: str):
    """An agent running a copy of wine-v1 (a copy, so a test may change the file)."""
    model = tmp_path / "wine-v1.onnx"
    shutil.copy(DEMO / "wine-v1.onnx", model)
    running = Agent(AgentConfig(token=token, buffer_path=tmp_path / "agent.sqlite", port=0,
                                model=model))
    running.start()
    yield running
    running.close()


def target(agent: Agent, query: str = "") -> str:
    host, port = agent.address
    return f"agent+http://{host}:{port}{query}"


def by_name(check) -> dict:
    return {c.name: c for c in check.clauses}


def test_the_agent_measures_the_model_it_runs_and_only_that(agent, token, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, token)
    report = check_contract(DEMO / "wine-v1.onnx", ["cpu", target(agent)], runs=RUNS)
    here, there = report.targets
    assert there.status == PASS, there.reason
    clauses, local = by_name(there), by_name(here)
    # The same file on the same validation rows: the same accuracy, to the last digit.
    assert clauses["accuracy"].measured == local["accuracy"].measured > 0.95
    assert clauses["latency_p95_ms"].limit == 2.0  # the contract's `agent` limit
    assert clauses["latency_p95_ms"].measured > 0
    assert "on the agent at http://127.0.0.1:" in clauses["latency_p95_ms"].detail
    assert clauses["peak_memory_mb"].measured >= 0 and clauses["parameters"].status == PASS

    (other,) = check_contract(DEMO / "wine-v3.onnx", [target(agent)], runs=RUNS).targets
    assert other.status == UNSUPPORTED and not other.clauses
    assert "runs wine-v1 (sha256" in other.reason and "not wine-v3" in other.reason


def test_the_token_comes_from_a_file_named_in_the_target_and_a_wrong_one_is_refused(
        agent, token_file, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    (kept,) = check_contract(DEMO / "wine-v1.onnx", [target(agent, f"?token_file={token_file}")],
                             runs=RUNS).targets
    assert kept.status == PASS, kept.reason
    monkeypatch.setenv(TOKEN_ENV, "w" * 32)
    (refused,) = check_contract(DEMO / "wine-v1.onnx", [target(agent)], runs=RUNS).targets
    assert refused.status == UNREACHABLE and "refused us (HTTP 401)" in refused.reason
    (typo,) = check_contract(DEMO / "wine-v1.onnx", [target(agent, "?tokenfile=x")],
                             runs=RUNS).targets
    assert typo.status == UNSUPPORTED and "unknown parameter 'tokenfile'" in typo.reason


def test_the_cli_prints_the_agents_figures(agent, token, monkeypatch, capsys):
    monkeypatch.setenv(TOKEN_ENV, token)
    assert main(["contract", "check", str(DEMO / "wine-v1.onnx"), "--targets", target(agent),
                 "--runs", str(RUNS), "--json"]) == 0
    (model,) = json.loads(capsys.readouterr().out)["models"]
    (cell,) = model["targets"]
    assert cell["status"] == PASS
    assert {c["clause"] for c in cell["clauses"]} >= {"accuracy", "latency_p95_ms",
                                                      "peak_memory_mb"}


def test_a_model_file_replaced_under_the_agent_is_not_measured(agent, token, tmp_path,
                                                               monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, token)
    shutil.copy(DEMO / "wine-v3.onnx", tmp_path / "wine-v1.onnx")  # the agent's own file
    (cell,) = check_contract(DEMO / "wine-v1.onnx", [target(agent)], runs=RUNS).targets
    assert cell.status == UNSUPPORTED and "changed since this agent started" in cell.reason


def npy_base64(rows: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, rows, allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode()


def huge_request_status(agent: Agent, token: str) -> int:
    """The status a POST declaring a terabyte body gets (sent by hand: httpx would not lie
    about a Content-Length)."""
    with socket.create_connection(agent.address, timeout=30) as conn:
        conn.sendall(f"POST /v1/contract HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer "
                     f"{token}\r\nContent-Length: {1 << 40}\r\n\r\n".encode())
        return int(conn.makefile("rb").readline().split()[1])


def test_the_contract_endpoint_refuses_what_it_must(agent, token):
    sha = inspect_onnx(DEMO / "wine-v1.onnx").sha256
    url = f"http://{agent.address[0]}:{agent.address[1]}/v1/contract"
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=60) as client:
        assert client.post(url, json={"sha256": sha, "runs": 5}).status_code == 401
        assert client.post(url, content=b"{not json", headers=auth).status_code == 400
        wrong = client.post(url, json={"sha256": "0" * 64, "runs": 5}, headers=auth)
        assert wrong.status_code == 409 and "runs wine-v1" in wrong.json()["error"]
        assert client.post(url, json={"sha256": sha, "runs": 0}, headers=auth).status_code == 400
        # An object array would need pickle to load: refused, never unpickled.
        pickled = io.BytesIO()
        np.save(pickled, np.array([[{"x": 1}]], dtype=object), allow_pickle=True)
        bad = client.post(url, headers=auth, json={
            "sha256": sha, "runs": 5,
            "validation": {"features": base64.b64encode(pickled.getvalue()).decode(),
                           "labels": [None]}})
        assert bad.status_code == 400 and "not a .npy array" in bad.json()["error"]
        assert huge_request_status(agent, token) == 413  # refused before a byte is read
        rows = np.loadtxt(DEMO / "validation.csv", delimiter=",", skiprows=1,
                          usecols=range(1, 14))[:20]
        ok = client.post(url, headers=auth, json={
            "sha256": sha, "runs": 5,
            "validation": {"features": npy_base64(rows), "labels": ["1"] * 20}})
        assert ok.status_code == 200 and ok.json()["validation_rows"] == 20
        assert client.post(url.replace("contract", "items"), headers=auth).status_code == 405


def test_an_agent_probing_a_server_measures_nothing_and_says_so(tmp_path, token, monkeypatch):
    from app.core.agent_buffer import AgentBuffer
    from app.core.agent_server import AgentHttpServer

    AgentBuffer(tmp_path / "buf").close()
    forwarding = AgentHttpServer(("127.0.0.1", 0), token=token, buffer_path=tmp_path / "buf",
                                 info={"agent": "probescope",
                                       "sources": ["v2+http://127.0.0.1:9/models/wine"]})
    forwarding.serve_in_thread()
    port = forwarding.server_address[1]
    try:
        monkeypatch.setenv(TOKEN_ENV, token)
        (cell,) = check_contract(DEMO / "wine-v1.onnx", [f"agent+http://127.0.0.1:{port}"],
                                 runs=RUNS).targets
        asked = httpx.post(f"http://127.0.0.1:{port}/v1/contract", json={"runs": 5},
                           headers={"Authorization": f"Bearer {token}"}, timeout=30)
    finally:
        forwarding.shutdown()
        forwarding.server_close()
    assert cell.status == UNSUPPORTED and not cell.clauses
    assert "probes v2+http://127.0.0.1:9/models/wine, not a model file" in cell.reason
    assert asked.status_code == 409 and "nothing to measure here" in asked.json()["error"]


@pytest.mark.parametrize("given", [
    "agent+http://bob:pw_SECRETVALUE@127.0.0.1:1",  # refused: credentials in a URI
    "agent+http://127.0.0.1:1?bearer_value=SECRETVALUE",  # refused: a key it does not take
])
def test_contract_check_does_not_repeat_the_credentials_it_refuses(capsys, given):
    """Its text and --json printed the target whole: a CI log kept the password."""
    for json_flag in ([], ["--json"]):
        code = main(["contract", "check", str(DEMO / "wine-v1.onnx"), "--targets", given,
                     "--runs", "20", *json_flag])
        out = capsys.readouterr()
        assert code != 0
        assert "SECRETVALUE" not in out.out + out.err
        assert "UNSUPPORTED" in out.out or '"unsupported"' in out.out
