"""A third-party server run as a child process group for the tests, its output in a log file:
started, waited on until it answers, stopped (or killed, as a crash would be). Thread: the
test's."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from tests.servers.venvs import ServerUnavailable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    label = "server"  # in messages: "MLServer exited with 1: ..."
    log_name = "server.log"
    stop_grace_s = 10.0

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process: subprocess.Popen | None = None
        self.ready_after_s: float | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / self.log_name

    def launch(self, command: Sequence[str], ready: Callable[[], bool], *, timeout_s: float,
               env: dict[str, str] | None = None, poll_s: float = 0.1) -> None:
        """Start ``command`` in ``workdir`` and wait until ``ready()`` says it serves.
        ``ready`` may raise an HTTP error or stumble on a half-started server's answer."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                list(command), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                env=env or {**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        pause = threading.Event()
        while time.monotonic() - t0 < timeout_s:
            if self.process.poll() is not None:
                raise ServerUnavailable(f"{self.label} exited with {self.process.returncode}: "
                                        f"{self.log_tail()}")
            try:
                if ready():
                    self.ready_after_s = time.monotonic() - t0
                    return
            except (httpx.HTTPError, ValueError, IndexError, KeyError):
                pass
            pause.wait(poll_s)
        self.stop()
        raise ServerUnavailable(f"{self.label} not ready within {timeout_s:g} s: "
                                f"{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """kill -9 the server (its whole process group), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(self.stop_grace_s)
        except subprocess.TimeoutExpired:
            self.kill()
