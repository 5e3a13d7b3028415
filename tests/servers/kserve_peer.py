"""KServe's own model server (the `kserve` package's ModelServer, v2 REST) serving the demo's
wine-v2 through onnxruntime: a second real implementation of the Open Inference Protocol
beside MLServer, with an ONNX model whose answers can be checked against a local session.

Its virtual environment is built once like MLServer's; the server runs
``tests/servers/kserve_model.py`` on an ephemeral 127.0.0.1 port. (This module is not named
``kserve``: the script's folder comes first on its path, and would shadow the package.)
Thread: the test's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx

from tests.servers.mlserver import free_port
from tests.servers.venvs import ROOT, ServerUnavailable, ensure_venv

VERSION = "0.21.0"
REQUIREMENTS = (f"kserve=={VERSION}", "onnxruntime>=1.17")
MODEL = "wine"
MODEL_VERSION = "2.0.0"
MODEL_PATH = ROOT / "assets" / "demo" / "wine-v2.onnx"
SCRIPT = Path(__file__).with_name("kserve_model.py")


def venv() -> Path:
    return ensure_venv(f"kserve-{VERSION}", REQUIREMENTS)


class KServe:
    def __init__(self, workdir: Path, env_dir: Path) -> None:
        self.venv = env_dir
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.ready_after_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def v2_uri(self) -> str:
        return f"v2+http://127.0.0.1:{self.port}/models/{MODEL}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "kserve.log"

    def start(self, timeout_s: float = 90.0) -> KServe:
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.venv / "bin" / "python"), str(SCRIPT), str(MODEL_PATH), MODEL,
                 MODEL_VERSION, str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        pause = threading.Event()
        while time.monotonic() - t0 < timeout_s:
            if self.process.poll() is not None:
                raise ServerUnavailable(f"KServe exited with {self.process.returncode}: "
                                        f"{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v2/models/{MODEL}/ready", timeout=1.0).is_success:
                    self.ready_after_s = time.monotonic() - t0
                    return self
            except httpx.HTTPError:
                pass
            pause.wait(0.1)
        self.stop()
        raise ServerUnavailable(f"KServe not ready within {timeout_s:g} s: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
