"""MLServer 1.7.1 with its scikit-learn runtime, serving a model trained on the demo data.

The model is trained by the server's own Python (so the joblib file matches the server's
scikit-learn), written into a fresh model folder, and served on ephemeral 127.0.0.1 ports.
Thread: the test's; the server is a child process group that ``stop``/``kill`` end by its id.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx

from tests.servers.venvs import ROOT, ServerUnavailable, ensure_venv

VERSION = "1.7.1"
REQUIREMENTS = (f"mlserver=={VERSION}", f"mlserver-sklearn=={VERSION}",
                # with worker processes MLServer 1.7.1 breaks on uvloop 0.22's event loop policy
                "uvloop<0.22")
MODEL = "wine"
MODEL_VERSION = "v1"
DATA = ROOT / "assets" / "demo" / "reference.csv"

_TRAIN = """
import sys, joblib, pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
frame = pd.read_csv(sys.argv[1])
x = frame.drop(columns=["id", "label"]).to_numpy()
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, frame["label"])
joblib.dump(model, sys.argv[2])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv() -> Path:
    return ensure_venv(f"mlserver-{VERSION}", REQUIREMENTS)


class MLServer:
    """One MLServer process serving ``wine`` over REST, gRPC and a metrics port."""

    def __init__(self, workdir: Path, env_dir: Path | None = None) -> None:
        self.venv = env_dir or venv()
        self.workdir = workdir
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.process: subprocess.Popen | None = None
        self.ready_after_s: float | None = None
        model_dir = workdir / MODEL
        model_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(self.venv / "bin" / "python"), "-c", _TRAIN, str(DATA),
                        str(model_dir / "model.joblib")], check=True, timeout=120)
        (model_dir / "model-settings.json").write_text(json.dumps({
            "name": MODEL, "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": MODEL_VERSION}}))
        (workdir / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1", "http_port": self.http_port, "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            "parallel_workers": 0,  # inference in the server process: ready in ~2 s
        }))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def v2_uri(self) -> str:
        return f"v2+http://127.0.0.1:{self.http_port}/models/{MODEL}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mlserver.log"

    def start(self, timeout_s: float = 60.0) -> MLServer:
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.venv / "bin" / "mlserver"), "start", str(self.workdir)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        pause = threading.Event()
        while time.monotonic() - t0 < timeout_s:
            if self.process.poll() is not None:
                raise ServerUnavailable(f"MLServer exited with {self.process.returncode}: "
                                        f"{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v2/models/{MODEL}/ready", timeout=1.0).is_success:
                    self.ready_after_s = time.monotonic() - t0
                    return self
            except httpx.HTTPError:
                pass
            pause.wait(0.1)
        self.stop()
        raise ServerUnavailable(f"MLServer not ready within {timeout_s:g} s: {self.log_tail()}")

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
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
