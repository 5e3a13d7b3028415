"""TorchServe 0.12 serving a small TorchScript classifier trained on the demo data.

Its venv takes the CPU torch wheel from local disk (never a CUDA build from an index), plus
pyyaml and numpy that TorchServe's Python worker imports. Java 17 must be on PATH. The server
runs in the foreground of its own process group, with its own temp folder so that its pid
file does not collide with another TorchServe on the machine. Thread: the test's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx

from tests.servers.mlserver import DATA
from tests.servers.process import ServerProcess, free_port
from tests.servers.venvs import ServerUnavailable, ensure_venv

VERSION = "0.12.0"
TORCH_WHEEL_GLOB = "torch-2.13.0+cpu-*.whl"
WHEEL_DIRS = (Path("/opt/wheels"),)
MODEL = "wine"

_TRAIN = """
import csv, sys, torch
rows = list(csv.DictReader(open(sys.argv[1])))
names = [k for k in rows[0] if k not in ("id", "label")]
x = torch.tensor([[float(r[k]) for k in names] for r in rows])
y = torch.tensor([int(r["label"]) for r in rows])
mean, std = x.mean(0), x.std(0)
torch.manual_seed(0)

class Wine(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = torch.nn.Linear(len(names), 3)

    def forward(self, x):
        return torch.softmax(self.linear((x - self.mean) / self.std), dim=1)

model = Wine()
opt = torch.optim.Adam(model.parameters(), lr=0.05)
for _ in range(300):
    opt.zero_grad()
    loss = torch.nn.functional.nll_loss(torch.log(model(x) + 1e-9), y)
    loss.backward()
    opt.step()
torch.jit.trace(model.eval(), x[:1]).save(sys.argv[2])  # trace: no source file needed
"""

_HANDLER = '''
import json
import torch
from ts.torch_handler.base_handler import BaseHandler


class WineHandler(BaseHandler):
    """One JSON row per request ({"data": [13 numbers]}); answers {class: probability}."""

    def preprocess(self, data):
        rows = []
        for item in data:
            body = item.get("body") if item.get("body") is not None else item.get("data")
            if isinstance(body, (bytes, bytearray)):
                body = json.loads(body)
            if isinstance(body, dict):
                body = body["data"]
            rows.append(body)
        return torch.tensor(rows, dtype=torch.float32)

    def postprocess(self, output):
        return [{str(i): float(p) for i, p in enumerate(row)} for row in output.tolist()]
'''


def torch_wheel() -> Path:
    for folder in WHEEL_DIRS:
        found = sorted(folder.glob(TORCH_WHEEL_GLOB))
        if found:
            return found[-1]
    raise ServerUnavailable(f"no local CPU torch wheel ({TORCH_WHEEL_GLOB}) in "
                            f"{', '.join(map(str, WHEEL_DIRS))}; a CUDA build is never pulled")


def venv() -> Path:
    if shutil.which("java") is None:
        raise ServerUnavailable("TorchServe needs Java 17 on PATH")
    return ensure_venv(f"torchserve-{VERSION}", (
        str(torch_wheel()), f"torchserve=={VERSION}", f"torch-model-archiver=={VERSION}",
        "pyyaml>=6", "numpy>=1.26"))


class TorchServe(ServerProcess):
    """One TorchServe with ``wine`` loaded; inference, management and metrics ports."""

    label = "TorchServe"
    log_name = "torchserve.log"
    stop_grace_s = 20.0

    def __init__(self, workdir: Path, env_dir: Path | None = None) -> None:
        super().__init__(workdir)
        self.venv = env_dir or venv()
        self.port, self.management_port, self.metrics_port = free_port(), free_port(), free_port()
        store = workdir / "model_store"
        store.mkdir(parents=True, exist_ok=True)
        (workdir / "tmp").mkdir(exist_ok=True)
        bin_dir = self.venv / "bin"
        subprocess.run([str(bin_dir / "python"), "-c", _TRAIN, str(DATA), str(workdir / "wine.pt")],
                       check=True, timeout=300, cwd=workdir)
        (workdir / "handler.py").write_text(_HANDLER)
        subprocess.run([str(bin_dir / "torch-model-archiver"), "--model-name", MODEL,
                        "--version", "1.0", "--serialized-file", str(workdir / "wine.pt"),
                        "--handler", str(workdir / "handler.py"), "--export-path", str(store),
                        "--force"], check=True, timeout=120, cwd=workdir,
                       env=self._env())
        (workdir / "config.properties").write_text("\n".join([
            f"inference_address=http://127.0.0.1:{self.port}",
            f"management_address=http://127.0.0.1:{self.management_port}",
            f"metrics_address=http://127.0.0.1:{self.metrics_port}",
            f"grpc_inference_port={free_port()}", f"grpc_management_port={free_port()}",
            "grpc_inference_address=127.0.0.1", "grpc_management_address=127.0.0.1",
            "metrics_mode=prometheus", "disable_token_authorization=true",
            # the worker's socket is /tmp/.ts.sock.PORT: a port of our own avoids other servers
            f"initial_worker_port={free_port()}",
            "default_workers_per_model=1", "install_py_dep_per_model=false",
            f"model_store={store}", "load_models=wine.mar", ""]))

    def _env(self) -> dict[str, str]:
        bin_dir = str(self.venv / "bin")
        return {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
                "TMPDIR": str(self.workdir / "tmp"), "PYTHONUNBUFFERED": "1"}

    @property
    def uri(self) -> str:
        return f"torchserve+http://127.0.0.1:{self.port}/{MODEL}"

    @property
    def metrics_uri(self) -> str:
        return f"prom+http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout_s: float = 120.0) -> TorchServe:
        url = f"http://127.0.0.1:{self.management_port}/models/{MODEL}"

        def ready() -> bool:
            answer = httpx.get(url, timeout=1.0)
            workers = answer.json()[0].get("workers", []) if answer.is_success else []
            return any(w.get("status") == "READY" for w in workers)

        self.launch([str(self.venv / "bin" / "torchserve"), "--start", "--foreground", "--ncs",
                     "--ts-config", str(self.workdir / "config.properties"),
                     "--disable-token-auth"],
                    ready, timeout_s=timeout_s, env=self._env(), poll_s=0.2)
        return self
