"""MLServer 1.7.1 with its scikit-learn runtime, serving a model trained on the demo data.

The model is trained by the server's own Python (so the joblib file matches the server's
scikit-learn), written into a fresh model folder, and served on ephemeral 127.0.0.1 ports.
Thread: the test's; the server is a child process group that ``stop``/``kill`` end by its id.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from tests.servers.process import ServerProcess, free_port
from tests.servers.venvs import ROOT, ensure_venv

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


def venv() -> Path:
    return ensure_venv(f"mlserver-{VERSION}", REQUIREMENTS)


class MLServer(ServerProcess):
    """One MLServer process serving ``wine`` over REST, gRPC and a metrics port."""

    label = "MLServer"
    log_name = "mlserver.log"

    def __init__(self, workdir: Path, env_dir: Path | None = None) -> None:
        super().__init__(workdir)
        self.venv = env_dir or venv()
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
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

    def start(self, timeout_s: float = 60.0) -> MLServer:
        self.launch([str(self.venv / "bin" / "mlserver"), "start", str(self.workdir)],
                    lambda: httpx.get(f"{self.url}/v2/models/{MODEL}/ready",
                                      timeout=1.0).is_success,
                    timeout_s=timeout_s)
        return self
