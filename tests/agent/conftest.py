"""Fixtures for the agent, tap and import tests: tokens, and real subprocesses on 127.0.0.1."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.core.domain import Capture
from app.core.store import Store

ROOT = Path(__file__).resolve().parents[2]

# Runs the real CLI with PySide6 made unimportable: any Qt import on the path kills the process.
NO_QT = ("PySide6", "pyqtgraph")
NO_QT_MAIN = ("import sys; sys.modules['PySide6'] = None; sys.modules['pyqtgraph'] = None; "
              "from app.cli import main; sys.exit(main(sys.argv[1:]))")


def main_without(modules: tuple[str, ...]) -> str:
    """``python -c`` code running the CLI with these modules made unimportable."""
    return (f"import sys; sys.modules.update(dict.fromkeys({list(modules)!r})); "
            "from app.cli import main; sys.exit(main(sys.argv[1:]))")


def env_with(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROBESCOPE_AGENT_TOKEN"}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


class Proc:
    """A CLI subprocess whose first stdout line says where it listens; ``nofile``: at most
    that many open file descriptors (soft and hard RLIMIT_NOFILE)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None,
                 no_qt: bool = True, unimportable: tuple[str, ...] = (),
                 nofile: int | None = None) -> None:
        blocked = (*NO_QT, *unimportable) if no_qt else unimportable
        cmd = ([sys.executable, "-c", main_without(blocked), *args] if blocked
               else [sys.executable, "-m", "app.cli", *args])
        if nofile is not None:  # set in the child itself, before the CLI starts
            assert blocked, "nofile needs the python -c form"
            cmd[2] = (f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, "
                      f"({nofile}, {nofile})); {cmd[2]}")
        self.popen = subprocess.Popen(cmd, cwd=ROOT, env=env or env_with(),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.first_line = ""
        got = threading.Event()

        def read_first() -> None:
            assert self.popen.stdout is not None
            self.first_line = self.popen.stdout.readline().strip()
            got.set()

        threading.Thread(target=read_first, daemon=True).start()
        if not got.wait(30):
            self.kill()
            raise AssertionError(f"{args[0]} printed nothing within 30 s")
        if not self.first_line:
            err = self.popen.stderr.read() if self.popen.stderr else ""
            raise AssertionError(f"{args[0]} exited early: {err}")

    @property
    def url(self) -> str:
        return self.first_line.split()[3]

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Stop gracefully and return stderr."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        _, err = self.popen.communicate(timeout=30)
        return err


@pytest.fixture
def token() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def token_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "agent.token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


def through_the_tap(upstream: str, db: Path, calls: list[tuple[str, bytes, dict[str, str]]]
                    ) -> tuple[list[tuple[httpx.Response, httpx.Response]], list[Capture]]:
    """Each call (path, body, headers) POSTed to ``upstream`` directly and through a
    ``probescope tap`` process recording into ``db``, which is then stopped: the
    (direct, tapped) answers and the captures it recorded. The tap must exit cleanly."""
    tap = Proc(["tap", "--listen", "127.0.0.1:0", "--upstream", upstream, "--db", str(db)])
    pairs = []
    try:
        with httpx.Client(base_url=upstream) as direct, httpx.Client(base_url=tap.url) as tapped:
            for path, body, headers in calls:
                pairs.append((direct.post(path, content=body, headers=headers),
                              tapped.post(path, content=body, headers=headers)))
    finally:
        tap.stop()
    assert tap.popen.returncode == 0
    store = Store(db, readonly=True)
    try:
        return pairs, [c.capture for c in store.captures()]
    finally:
        store.close()
