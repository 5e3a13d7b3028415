"""KServe's own model server (the `kserve` package's ModelServer, v2 REST) serving the demo's
wine-v2 through onnxruntime: a second real implementation of the Open Inference Protocol
beside MLServer, with an ONNX model whose answers can be checked against a local session.

Its virtual environment is built once like MLServer's; the server runs
``tests/servers/kserve_model.py`` on an ephemeral 127.0.0.1 port. (This module is not named
``kserve``: the script's folder comes first on its path, and would shadow the package.)
Thread: the test's.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.servers.process import ServerProcess, free_port
from tests.servers.venvs import ROOT, ensure_venv

VERSION = "0.21.0"
REQUIREMENTS = (f"kserve=={VERSION}", "onnxruntime>=1.17")
MODEL = "wine"
MODEL_VERSION = "2.0.0"
MODEL_PATH = ROOT / "assets" / "demo" / "wine-v2.onnx"
SCRIPT = Path(__file__).with_name("kserve_model.py")


def venv() -> Path:
    return ensure_venv(f"kserve-{VERSION}", REQUIREMENTS)


class KServe(ServerProcess):
    label = "KServe"
    log_name = "kserve.log"
    stop_grace_s = 15.0

    def __init__(self, workdir: Path, env_dir: Path) -> None:
        super().__init__(workdir)
        self.venv = env_dir
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def v2_uri(self) -> str:
        return f"v2+http://127.0.0.1:{self.port}/models/{MODEL}"

    def start(self, timeout_s: float = 90.0) -> KServe:
        self.launch([str(self.venv / "bin" / "python"), str(SCRIPT), str(MODEL_PATH), MODEL,
                     MODEL_VERSION, str(self.port)],
                    lambda: httpx.get(f"{self.url}/v2/models/{MODEL}/ready",
                                      timeout=1.0).is_success,
                    timeout_s=timeout_s)
        return self
