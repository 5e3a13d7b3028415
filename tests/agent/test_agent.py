"""The edge agent as a real process: no Qt, bearer token, TLS, and pulls that survive kills."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.core.agent_buffer import AgentBuffer, capture_from_json
from app.core.domain import Metric
from app.core.monitor import Monitor
from app.core.store import Store
from probes import EndpointState
from probes.agent import BUFFER_METRIC, SEQ_METRIC, committed_cursor
from tests.agent.conftest import NO_QT_MAIN, ROOT, Proc, env_with
from tests.helpers import wait_until

MODEL = ROOT / "assets" / "demo" / "wine-v1.onnx"
STREAM = ROOT / "assets" / "demo" / "production.csv"


def agent_args(tmp_path: Path, token_file: Path, port: int = 0, *extra: str) -> list[str]:
    return ["agent", "--listen", f"127.0.0.1:{port}", "--token-file", str(token_file),
            "--model", str(MODEL), "--payload", str(STREAM), "--rate", "100",
            "--system-rate", "5", "--buffer", str(tmp_path / "agent.sqlite"), *extra]


def buffer_items(path: Path) -> tuple[Counter, int, int]:
    """What the agent holds: a multiset of (ts_ns, metric, value), the capture count, last seq."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        samples = Counter(conn.execute(
            "SELECT ts_ns, metric, value FROM items WHERE kind = 's'").fetchall())
        captures = conn.execute("SELECT count(*) FROM items WHERE kind = 'c'").fetchone()[0]
        last = conn.execute("SELECT max(seq) FROM items").fetchone()[0] or 0
    finally:
        conn.close()
    return samples, captures, last


def store_items(db: Path, endpoint: str) -> tuple[Counter, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        samples = Counter(conn.execute(
            "SELECT s.ts_ns, m.name, s.value FROM samples s JOIN metrics m ON m.id = s.metric_id "
            "JOIN endpoints e ON e.id = s.endpoint_id WHERE e.uri = ? "
            "AND m.name NOT IN (?, ?, ?)",
            [endpoint, SEQ_METRIC, BUFFER_METRIC, Metric.DROPPED]).fetchall())
        captures = conn.execute(
            "SELECT count(*) FROM captures c JOIN endpoints e ON e.id = c.endpoint_id "
            "WHERE e.uri = ?", [endpoint]).fetchone()[0]
    finally:
        conn.close()
    return samples, captures


def assert_same(db: Path, endpoint: str, buffer: Path) -> None:
    want, want_captures, _ = buffer_items(buffer)
    got, got_captures = store_items(db, endpoint)
    assert sum(want.values()) > 0
    assert got == want, (f"lost {sum((want - got).values())}, "
                         f"duplicated {sum((got - want).values())}")
    assert got_captures == want_captures


def test_agent_runs_without_qt_and_serves_its_samples(tmp_path, token_file, token, procs):
    agent = Proc(agent_args(tmp_path, token_file))  # PySide6 is unimportable in there
    procs.append(agent)
    auth = {"Authorization": f"Bearer {token}"}
    info = httpx.get(f"{agent.url}/v1/info", headers=auth, timeout=5).json()
    assert any(s.startswith("onnx:") for s in info["sources"])
    assert wait_until(lambda: httpx.get(f"{agent.url}/v1/info", headers=auth,
                                        timeout=5).json()["last_seq"] > 50, 30)
    page = httpx.get(f"{agent.url}/v1/items", params={"after": 10, "limit": 20},
                     headers=auth, timeout=5).json()
    seqs = [s[0] for s in page["samples"]] + [c["seq"] for c in page["captures"]]
    assert sorted(seqs) == list(range(11, 31))
    assert {s[2] for s in page["samples"]} & {"latency_ms", "cpu_percent", "rss_mb"}

    def failures() -> list[dict]:  # beside the random sample of successes (--capture-rate)
        captures = httpx.get(f"{agent.url}/v1/items", params={"after": 0, "limit": 20000},
                             headers=auth, timeout=5).json()["captures"]
        return [c for c in captures if c["status"] != "ok"]

    # The demo stream has wrong predictions: those failures travel with their exact inputs.
    assert wait_until(lambda: len(failures()) > 0, 30)
    capture = capture_from_json("agent+http://x", failures()[0])
    assert capture.failed and capture.request_id.startswith("req-")
    row = capture.inputs[0].to_array()
    assert row.dtype == np.float32 and row.shape == (1, 13)
    stream = {r["id"]: r for r in csv.DictReader(STREAM.open())}
    values = list(stream[capture.request_id].values())[1:14]
    want = [float(v) if v else float("nan") for v in values]  # an empty cell is a NaN row
    np.testing.assert_array_equal(row[0], np.array(want, np.float32))
    assert agent.popen.poll() is None


def test_wrong_or_missing_token_is_refused_and_nothing_leaks(tmp_path, token_file, token,
                                                             procs):
    agent = Proc(agent_args(tmp_path, token_file))
    procs.append(agent)
    good = {"Authorization": f"Bearer {token}"}
    assert wait_until(lambda: httpx.get(f"{agent.url}/v1/info", headers=good,
                                        timeout=5).json()["last_seq"] > 0, 30)
    wrong = ("W" if token[0] != "W" else "V") + token[1:]  # never the token itself
    for headers in ({}, {"Authorization": f"Bearer {wrong}"}, {"Authorization": token},
                    {"Authorization": f"Basic {token}"}, {"Authorization": "Bearer x"}):
        for path in ("/v1/items?after=0", "/v1/info", "/nothing"):
            r = httpx.get(agent.url + path, headers=headers, timeout=5)
            assert r.status_code == 401
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.json() == {"error": "missing or wrong bearer token"}
            assert token not in r.text and wrong not in r.text
    assert httpx.post(f"{agent.url}/v1/items", headers={}, timeout=5).status_code == 401
    assert httpx.post(f"{agent.url}/v1/items", headers=good, timeout=5).status_code == 405
    # `watch` with the wrong token: no answer, said, and the run fails (it exited 0).
    watched = subprocess.run(
        [sys.executable, "-c", NO_QT_MAIN, "watch", f"agent+{agent.url}", "--seconds", "2",
         "--db", str(tmp_path / "w.db")],
        cwd=ROOT, env=env_with(PROBESCOPE_AGENT_TOKEN=wrong), capture_output=True, text=True,
        timeout=60)
    assert watched.returncode == 1 and "refused the token" in watched.stderr
    assert wrong not in watched.stderr and wrong not in watched.stdout
    err = agent.stop()
    assert "refused a request" in err
    assert token not in err and wrong not in err


def test_agent_refuses_to_start_without_a_token(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", NO_QT_MAIN, "agent", "--listen", "127.0.0.1:0",
         "--model", str(MODEL), "--buffer", str(tmp_path / "b.sqlite")],
        cwd=ROOT, env=env_with(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "PROBESCOPE_AGENT_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_said_in_one_line_not_an_internal_error(tmp_path, token_file):
    import socket

    taken = socket.create_server(("127.0.0.1", 0))  # another agent, or anything, is there
    port = taken.getsockname()[1]
    try:
        result = subprocess.run(
            [sys.executable, "-c", NO_QT_MAIN, *agent_args(tmp_path, token_file, port)],
            cwd=ROOT, env=env_with(), capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_token_from_env_and_warning_for_a_readable_token_file(tmp_path, token, procs):
    env_agent = Proc(["agent", "--listen", "127.0.0.1:0", "--model", str(MODEL),
                      "--buffer", str(tmp_path / "env.sqlite")],
                     env=env_with(PROBESCOPE_AGENT_TOKEN=token))
    procs.append(env_agent)
    assert httpx.get(f"{env_agent.url}/v1/info", timeout=5,
                     headers={"Authorization": f"Bearer {token}"}).status_code == 200
    loose = tmp_path / "loose.token"
    loose.write_text(token)
    loose.chmod(0o644)
    agent = Proc(agent_args(tmp_path, loose))
    procs.append(agent)
    err = agent.stop()
    assert "readable by group or others" in err and "chmod 600" in err
    assert token not in err


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_agent_serves_tls_and_the_probe_verifies_it(tmp_path, token_file, token, procs):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    agent = Proc(agent_args(tmp_path, token_file, 0, "--cert", str(cert), "--key", str(key)))
    procs.append(agent)
    assert agent.url.startswith("https://")
    with pytest.raises(httpx.ConnectError):  # not trusted without the CA
        httpx.get(f"{agent.url}/v1/info", timeout=5)
    port = agent.url.rsplit(":", 1)[1]
    # The two usual mistakes are each told what to change.
    for wrong, hint in ((f"agent+https://127.0.0.1:{port}", "with ?ca=PATH"),
                        (f"agent+http://127.0.0.1:{port}", "use agent+https://")):
        monitor = Monitor(tmp_path / "wrong.db")
        try:
            probe = monitor.attach(f"{wrong}?token_file={token_file}&interval=0.05")
            assert wait_until(lambda p=probe, h=hint: h in (p.last_error or ""), 20), \
                probe.last_error
        finally:
            monitor.close()
    uri = f"agent+https://127.0.0.1:{port}?ca={cert}&token_file={token_file}&interval=0.05"
    db = tmp_path / "ws.db"
    monitor = Monitor(db)
    try:
        probe = monitor.attach(uri)
        assert wait_until(lambda: probe.pulled > 20, timeout_s=20), probe.last_error
        assert probe.state is EndpointState.UP
        assert probe.info()["model_version"]  # learnt from the agent
        assert probe.info()["sources"].startswith("onnx:")
    finally:
        monitor.close()
    assert committed_cursor(db, probe.endpoint) > 20


def test_dashboard_kill_9_and_restart_lose_nothing_and_duplicate_nothing(
        tmp_path, token_file, token, procs):
    agent = Proc(agent_args(tmp_path, token_file))
    procs.append(agent)
    uri = f"agent+{agent.url}?interval=0.02&page=50"
    endpoint = f"agent+{agent.url}"  # the agent's name: its settings are not part of it
    db = tmp_path / "ws.db"
    watch = ["watch", uri, "--db", str(db), "--seconds", "120"]
    env = env_with(PROBESCOPE_AGENT_TOKEN=token)
    dash = subprocess.Popen([sys.executable, "-c", NO_QT_MAIN, *watch], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: db.exists() and committed_cursor(db, endpoint) > 300, 30)
        dash.kill()  # kill -9, mid-stream: pages on its bus and in flight are lost with it
        dash.wait(10)
        at_kill = committed_cursor(db, endpoint)
        dash = subprocess.Popen([sys.executable, "-c", NO_QT_MAIN, *watch], cwd=ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert wait_until(lambda: committed_cursor(db, endpoint) > at_kill + 300, 30)
        agent.stop()  # the agent's buffer is now final: that is what the store must hold
        _, _, last = buffer_items(tmp_path / "agent.sqlite")
        assert wait_until(lambda: committed_cursor(db, endpoint) == last, 30)
        dash.send_signal(signal.SIGINT)
        dash.wait(30)
    finally:
        if dash.poll() is None:
            dash.kill()
    assert_same(db, endpoint, tmp_path / "agent.sqlite")


def _agent_pulled_by_a_monitor(tmp_path, token_file, procs):
    """An agent process and a workspace Monitor pulling from it every 50 ms; the caller
    closes the monitor."""
    agent = Proc(agent_args(tmp_path, token_file))
    procs.append(agent)
    port = int(agent.url.rsplit(":", 1)[1])
    db = tmp_path / "ws.db"
    monitor = Monitor(db)
    try:
        probe = monitor.attach(f"agent+{agent.url}?interval=0.05&timeout_s=1")
    except BaseException:
        monitor.close()
        raise
    return agent, port, db, monitor, probe


def test_agent_killed_and_restarted_goes_down_then_up(tmp_path, token_file, token, procs,
                                                      monkeypatch, caplog):
    monkeypatch.setenv("PROBESCOPE_AGENT_TOKEN", token)
    agent, port, db, monitor, probe = _agent_pulled_by_a_monitor(tmp_path, token_file, procs)
    try:
        assert wait_until(lambda: probe.state is EndpointState.UP and probe.pulled > 50, 20)
        agent.kill()
        assert wait_until(lambda: probe.state is EndpointState.DOWN, 20)
        assert "unreachable" in (probe.last_error or "")
        again = Proc(agent_args(tmp_path, token_file, port))
        procs.append(again)
        assert wait_until(lambda: probe.state is EndpointState.UP, 20), probe.last_error
        # The outage's end is said, with its length, as for every other probe.
        assert any(f"{probe.endpoint} is back up after" in r.getMessage()
                   for r in caplog.records)
        again.stop()
        _, _, last = buffer_items(tmp_path / "agent.sqlite")
        assert wait_until(lambda: committed_cursor(db, probe.endpoint) == last, 20)
    finally:
        monitor.close()
    assert_same(db, probe.endpoint, tmp_path / "agent.sqlite")


def test_items_trimmed_before_a_pull_are_counted_as_dropped(tmp_path, token_file, procs,
                                                            monkeypatch, token):
    monkeypatch.setenv("PROBESCOPE_AGENT_TOKEN", token)
    buffer = tmp_path / "agent.sqlite"
    agent = Proc(agent_args(tmp_path, token_file, 0, "--max-items", "100"))
    procs.append(agent)
    assert wait_until(lambda: buffer.exists() and AgentBuffer(buffer, readonly=True)
                      .bounds()[0] > 1, 20)
    db = tmp_path / "ws.db"
    monitor = Monitor(db)
    try:
        probe = monitor.attach(f"agent+{agent.url}?interval=0.05")
        assert wait_until(lambda: probe.pulled > 0, 20)
    finally:
        monitor.close()
    store = Store(db, readonly=True)
    try:
        _, dropped = store.values(probe.endpoint, Metric.DROPPED)
    finally:
        store.close()
    assert dropped.sum() > 0


def test_watch_counts_the_items_an_agent_trimmed_before_they_were_pulled(tmp_path, token_file,
                                                                         token, procs):
    buffer = tmp_path / "agent.sqlite"
    agent = Proc(agent_args(tmp_path, token_file, 0, "--max-items", "100"))
    procs.append(agent)
    assert wait_until(lambda: buffer.exists() and AgentBuffer(buffer, readonly=True)
                      .bounds()[0] > 1, 20)  # it has trimmed items nobody pulled
    db = tmp_path / "ws.db"
    watched = subprocess.run(
        [sys.executable, "-c", NO_QT_MAIN, "watch", f"agent+{agent.url}?interval=0.05",
         "--seconds", "2", "--db", str(db), "--json"],
        cwd=ROOT, env=env_with(PROBESCOPE_AGENT_TOKEN=token), capture_output=True, text=True,
        timeout=60)
    doc = json.loads(watched.stdout)
    store = Store(db, readonly=True)
    try:
        _, dropped = store.values(f"agent+{agent.url}", Metric.DROPPED)
    finally:
        store.close()
    # It said "dropped: 0" while the workspace recorded the loss.
    assert doc["dropped_at_source"] == {f"agent+{agent.url}": int(dropped.sum())}
    assert doc["dropped"] >= dropped.sum() > 0
    assert "items were lost on the way here" in watched.stderr


def test_an_agent_is_one_endpoint_however_the_dashboard_is_given_its_token(
        tmp_path, token_file, token, procs, monkeypatch):
    """The token from the environment, then from a file: the same agent, the same endpoint
    and cursor, so the second pull goes on from the first and stores nothing twice."""
    agent = Proc(agent_args(tmp_path, token_file))
    procs.append(agent)
    db = tmp_path / "ws.db"
    endpoints = []
    for uri, env in ((f"agent+{agent.url}?interval=0.05", token),
                     (f"agent+{agent.url}?token_file={token_file}&interval=0.1", None)):
        if env is None:
            monkeypatch.delenv("PROBESCOPE_AGENT_TOKEN", raising=False)
        else:
            monkeypatch.setenv("PROBESCOPE_AGENT_TOKEN", env)
        monitor = Monitor(db)
        try:
            probe = monitor.attach(uri)
            assert wait_until(lambda p=probe: p.pulled > 20, 30), probe.last_error
        finally:
            monitor.close()
        endpoints.append(probe.endpoint)
    assert endpoints == [f"agent+{agent.url}"] * 2  # no token file, no pace in its name
    got, _ = store_items(db, endpoints[0])
    assert max(got.values()) == 1  # the second pull went on where the first stopped
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM endpoints WHERE uri LIKE 'agent+%'"
                            ).fetchone()[0] == 1
    finally:
        conn.close()


def test_agent_probes_a_local_server_given_as_an_upstream_uri(tmp_path, token_file, token,
                                                              procs):
    from tests.agent.test_tap import ModelServer

    server = ModelServer()
    procs.append(server)
    agent = Proc(["agent", "--listen", "127.0.0.1:0", "--token-file", str(token_file),
                  "--upstream", f"v2+{server.url}/models/wine-v1", "--payload", str(STREAM),
                  "--rate", "50", "--buffer", str(tmp_path / "agent.sqlite")])
    procs.append(agent)
    auth = {"Authorization": f"Bearer {token}"}
    info = httpx.get(f"{agent.url}/v1/info", headers=auth, timeout=5).json()
    assert info["sources"][0].startswith("v2+http://")

    def latencies() -> int:
        page = httpx.get(f"{agent.url}/v1/items", params={"after": 0, "limit": 20000},
                         headers=auth, timeout=5).json()
        return sum(1 for s in page["samples"] if s[2] == Metric.LATENCY_MS)

    assert wait_until(lambda: latencies() >= 20, 30)


def test_an_edge_agent_runs_without_pandas_or_sqlite_utils(tmp_path, token_file, token, procs):
    """An agent with an .npy payload (or none) needs neither: together they cost 0.6 s of
    start-up and 70 MB of memory on the edge box."""
    rows = tmp_path / "rows.npy"
    np.save(rows, np.asarray([[13.0, 2.0, 2.4, 19.0, 100.0, 2.5, 2.5, 0.3, 1.6, 5.0, 1.0, 3.0,
                               1000.0]] * 8, dtype=np.float32))
    agent = Proc(["agent", "--listen", "127.0.0.1:0", "--token-file", str(token_file),
                  "--model", str(MODEL), "--payload", str(rows), "--rate", "100",
                  "--buffer", str(tmp_path / "agent.sqlite")],
                 unimportable=("pandas", "sqlite_utils"))
    procs.append(agent)
    auth = {"Authorization": f"Bearer {token}"}

    def latencies() -> int:
        page = httpx.get(f"{agent.url}/v1/items", params={"after": 0, "limit": 20000},
                         headers=auth, timeout=5).json()
        return sum(1 for s in page["samples"] if s[2] == Metric.LATENCY_MS)

    assert wait_until(lambda: latencies() >= 20, 30)
    assert agent.popen.poll() is None


def test_a_replaced_agent_buffer_is_pulled_from_its_start(tmp_path, token_file, token, procs,
                                                          monkeypatch):
    monkeypatch.setenv("PROBESCOPE_AGENT_TOKEN", token)
    buffer = tmp_path / "agent.sqlite"
    agent, port, db, monitor, probe = _agent_pulled_by_a_monitor(tmp_path, token_file, procs)
    try:
        assert wait_until(lambda: probe.pulled > 100, 20)
        agent.stop()
        old, old_captures, old_last = buffer_items(buffer)
        assert wait_until(lambda: committed_cursor(db, probe.endpoint) == old_last, 20)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{buffer}{suffix}").unlink(missing_ok=True)
        fresh = Proc(agent_args(tmp_path, token_file, port, "--rate", "20"))
        procs.append(fresh)
        # The committed mark goes *down* once pages of the new buffer are committed.
        assert wait_until(lambda: 0 < committed_cursor(db, probe.endpoint) < old_last, 20)
        fresh.stop()
        new, new_captures, new_last = buffer_items(buffer)
        assert new_last < old_last  # numbering started again
        assert wait_until(lambda: committed_cursor(db, probe.endpoint) == new_last, 20)
    finally:
        monitor.close()
    got, got_captures = store_items(db, probe.endpoint)
    assert got == old + new and got_captures == old_captures + new_captures


def test_an_oversized_page_is_refused_without_reading_it_all(monkeypatch):
    import http.server
    import threading

    from app.core.bus import Bus
    from probes import open_probe
    from probes.base import ProbeError

    class Flood(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            chunk = b" " * 2**16
            try:
                for _ in range(3 * 16):  # 3 MiB of nothing useful
                    self.wfile.write(chunk)
            except OSError:
                pass  # the probe hung up: what it should do

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flood)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PROBESCOPE_AGENT_TOKEN", "t" * 32)
    try:
        probe = open_probe(f"agent+http://127.0.0.1:{server.server_port}?max_mb=1", Bus())
        with httpx.Client(base_url=probe.base_url) as client, \
                pytest.raises(ProbeError, match="more than 1 MiB for one page"):
            probe.pull_once(client)
    finally:
        server.shutdown()
        server.server_close()
