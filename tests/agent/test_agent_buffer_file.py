"""The agent's buffer file in the user's hands: deleted or moved away under a running agent, its
folder gone or not writable, replaced while the dashboard was closed. Real agent processes, real
workspaces; the dashboard is a Monitor pulling as the window's does."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from app.core.agent_buffer import AgentBuffer
from app.core.domain import Metric
from app.core.monitor import Monitor
from probes.agent import buffer_key, committed_cursor, committed_place
from tests.agent.conftest import NO_QT_MAIN, ROOT, Proc, env_with
from tests.agent.test_agent import (
    MODEL,
    _agent_pulled_by_a_monitor,
    agent_args,
    buffer_items,
    store_items,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(180)


class Stderr:
    """What a process writes on stderr, line by line as it comes (``Proc.stop`` reads it only
    once the process has ended)."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        stream = self.proc.popen.stderr
        assert stream is not None
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def saying(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]

    def stop(self) -> int:
        """SIGTERM, and the exit code once everything it wrote is read."""
        self.proc.popen.send_signal(signal.SIGTERM)
        code = self.proc.popen.wait(30)
        self._thread.join(10)
        return code


def agent_id(buffer: Path) -> str:
    opened = AgentBuffer(buffer, readonly=True)
    try:
        return opened.agent_id
    finally:
        opened.close()


def pulling_from(db: Path, endpoint: str, buffer: Path) -> bool:
    """Whether the workspace's place is in the agent buffer now at ``buffer``."""
    return committed_place(db, endpoint)[1] == buffer_key(agent_id(buffer))


def test_a_buffer_deleted_under_a_running_agent_is_started_again_and_pulled_from_its_start(
        tmp_path, token_file, token, procs, monkeypatch):
    monkeypatch.setenv("PROBESCOPE_AGENT_TOKEN", token)
    buffer = tmp_path / "agent.sqlite"
    agent, _, db, monitor, probe = _agent_pulled_by_a_monitor(tmp_path, token_file, procs)
    try:
        assert wait_until(lambda: probe.pulled > 100, 20), probe.last_error
        old_id = agent_id(buffer)
        buffer.unlink()  # `rm agent.sqlite`: SQLite's -wal and -shm stay behind
        # It went on writing into the deleted file, all lost at its stop; now it starts a
        # new one there.
        assert wait_until(buffer.exists, 20)
        assert agent_id(buffer) != old_id
        # The dashboard, on the same connection, is served the new buffer and pulls it all.
        assert wait_until(lambda: pulling_from(db, probe.endpoint, buffer), 20), \
            probe.last_error
        # Pulled up to what the new buffer held a moment ago, while the agent still serves
        # (it writes on until it stops, and what it wrote last cannot be pulled after that).
        new, _, new_last = buffer_items(buffer)
        assert wait_until(lambda: committed_cursor(db, probe.endpoint) >= new_last, 20), \
            probe.last_error
        err = agent.stop()
        assert agent.popen.returncode == 0
    finally:
        monitor.close()
    said = [line for line in err.splitlines() if str(buffer) in line]
    assert len(said) == 1 and "was deleted or moved away; started a new one there" in said[0]
    assert "Traceback" not in err
    got, _ = store_items(db, probe.endpoint)
    missing = new - got
    assert not missing, f"{sum(missing.values())} items of the new buffer were never pulled"


def test_a_buffer_folder_gone_under_a_running_agent_is_said_once_and_it_goes_on_serving(
        tmp_path, token_file, token, procs, monkeypatch):
    monkeypatch.setenv("PROBESCOPE_AGENT_TOKEN", token)
    box = tmp_path / "box"
    box.mkdir()
    buffer = box / "agent.sqlite"
    agent = Proc(agent_args(tmp_path, token_file, 0, "--buffer", str(buffer)))
    procs.append(agent)
    stderr = Stderr(agent)
    db = tmp_path / "ws.db"
    monitor = Monitor(db)
    try:
        probe = monitor.attach(f"agent+{agent.url}?interval=0.05&timeout_s=1")
        assert wait_until(lambda: probe.pulled > 50, 20), probe.last_error
        shutil.rmtree(box)
        assert wait_until(lambda: stderr.saying("a new one cannot be made there"), 20)
        # Meanwhile it still measures and serves what it has (the dashboard's connection
        # keeps the old file); it keeps trying, and says nothing more, write after write.
        pulled = probe.pulled
        assert wait_until(lambda: probe.pulled > pulled + 500, 30), probe.last_error
        box.mkdir()
        assert wait_until(lambda: stderr.saying("started a new one there"), 20)
        assert wait_until(lambda: pulling_from(db, probe.endpoint, buffer), 20), \
            probe.last_error
        # Pulled up to what the new buffer held a moment ago, while the agent still serves.
        new, _, new_last = buffer_items(buffer)
        assert wait_until(lambda: committed_cursor(db, probe.endpoint) >= new_last, 20), \
            probe.last_error
        assert stderr.stop() == 0
    finally:
        monitor.close()
    stuck = stderr.saying("a new one cannot be made there")
    assert len(stuck) == 1, stuck
    assert f"there is no folder {box}" in stuck[0] and "going on in the deleted file" in stuck[0]
    assert len(stderr.saying("started a new one there")) == 1
    assert not stderr.saying("Traceback")
    got, _ = store_items(db, probe.endpoint)
    assert sum(new.values()) > 0 and not new - got


def _read_only(folder: Path) -> tuple[list[str], str]:
    """Make ``folder`` one the agent cannot write: the command to start it under, and the
    reason it should give. chmod does not stop root: as root, the agent runs in a mount
    namespace of its own where the folder is mounted read-only (a read-only root file system
    is what an edge box often has)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return [], f"the folder {folder} is not writable by this user"
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("root, and no mount namespace to make a read-only folder in")
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"'
    return (["unshare", "--mount", "sh", "-c", script, str(folder)],
            f"the folder {folder} is on a read-only file system")


@pytest.mark.parametrize("where", ["no folder", "a file for a folder", "read-only folder"])
def test_a_buffer_it_cannot_create_is_said_in_one_line_and_exit_code_2(tmp_path, token_file,
                                                                        where):
    under: list[str] = []
    if where == "no folder":
        buffer = tmp_path / "nowhere" / "agent.sqlite"
        reason = f"there is no folder {tmp_path / 'nowhere'}"
    elif where == "a file for a folder":
        (tmp_path / "notes").write_text("x")
        buffer = tmp_path / "notes" / "agent.sqlite"
        reason = f"{tmp_path / 'notes'} is a file, not a folder"
    else:
        (tmp_path / "ro").mkdir()
        buffer = tmp_path / "ro" / "agent.sqlite"
        under, reason = _read_only(buffer.parent)
    result = subprocess.run(
        [*under, sys.executable, "-c", NO_QT_MAIN, "agent", "--listen", "127.0.0.1:0",
         "--token-file", str(token_file), "--model", str(MODEL), "--buffer", str(buffer),
         "--seconds", "5"],
        cwd=ROOT, env=env_with(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"probescope: cannot create the agent buffer {buffer}: {reason}; "
                             "give --buffer a file in a folder this user can write\n")
    assert not buffer.exists()


def test_a_restarted_dashboard_pulls_a_new_agent_buffer_from_its_start_past_its_old_place(
        tmp_path, token_file, token, procs, monkeypatch):
    """The workspace remembers which buffer its place is in: the agent's new buffer had
    numbered past the dashboard's old place before the dashboard came back, and everything
    below that place was never pulled."""
    monkeypatch.setenv("PROBESCOPE_AGENT_TOKEN", token)
    buffer = tmp_path / "agent.sqlite"
    agent, port, db, monitor, probe = _agent_pulled_by_a_monitor(tmp_path, token_file, procs)
    try:
        assert wait_until(lambda: probe.pulled > 100, 20), probe.last_error
    finally:
        monitor.close()
    place = committed_cursor(db, probe.endpoint)
    agent.stop()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{buffer}{suffix}").unlink(missing_ok=True)
    fresh = Proc(agent_args(tmp_path, token_file, port))
    procs.append(fresh)
    auth = {"Authorization": f"Bearer {token}"}
    assert wait_until(lambda: httpx.get(f"{fresh.url}/v1/info", headers=auth, timeout=5)
                      .json()["last_seq"] > place + 50, 30)
    monitor = Monitor(db)
    try:
        probe = monitor.attach(f"agent+{fresh.url}?interval=0.05&timeout_s=1")
        assert wait_until(lambda: probe.pulled > 0, 20), probe.last_error
        fresh.stop()
        new, _, new_last = buffer_items(buffer)
        assert wait_until(lambda: committed_cursor(db, probe.endpoint) == new_last, 20), \
            probe.last_error
    finally:
        monitor.close()
    got, _ = store_items(db, probe.endpoint)
    missing = new - got
    assert not missing, f"{sum(missing.values())} items of the new buffer were never pulled"


def test_the_dashboard_counts_the_model_requests_the_agent_recorded(tmp_path, token_file,
                                                                    token, procs, monkeypatch):
    """Its pulls are counted apart (``requests``: `watch` tells by it whether the agent
    answered at all); the endpoint list shows the model's requests."""
    monkeypatch.setenv("PROBESCOPE_AGENT_TOKEN", token)
    agent, _, db, monitor, probe = _agent_pulled_by_a_monitor(tmp_path, token_file, procs)
    try:
        assert wait_until(lambda: probe.pulled > 100, 20), probe.last_error
        agent.stop()
        samples, _, last = buffer_items(tmp_path / "agent.sqlite")
        assert wait_until(lambda: committed_cursor(db, probe.endpoint) == last, 20)
    finally:
        monitor.close()
    recorded = sum(n for (_, metric, _), n in samples.items() if metric == Metric.LATENCY_MS)
    assert recorded > 0 and probe.requests > 0
    assert probe.model_requests == recorded
    assert probe.info()["model requests"] == f"{recorded:,}"
