"""Tap overhead: median latency of an Open Inference (v2) call through ``probescope tap``
divided by the same call made directly, measured in the same run against the same server.

The server (tools/onnx_http_server.py, its own process) serves an ONNX MLP sized at start so
one inference takes about 1 ms; the tap runs as ``probescope tap`` in its own process, as a
user would run it. Direct and tapped calls are interleaved in short rounds so drift in machine
load falls on both alike. Target: ratio <= 1.10.

    python bench/tap_overhead.py [--requests 2000] [--model-ms 1.0]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
FEATURES = 16


def build_mlp(path: Path, layers: int, width: int = 1024, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    dims = [FEATURES] + [width] * (layers + 1) + [4]
    nodes, inits, prev = [], [], "features"
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        prev = f"m{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("Softmax", [prev], ["probabilities"], axis=-1))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                                     ["batch", FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 4])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def model_ms(path: Path, n: int = 300) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), sess_options=options,
                             providers=["CPUExecutionProvider"])
    x = {"features": np.ones((1, FEATURES), np.float32)}
    for _ in range(20):
        s.run(None, x)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        s.run(None, x)
        times.append(time.perf_counter() - t0)
    return min(times) * 1000  # the floor: calibration must not chase machine load


def sized_model(folder: Path, target_ms: float) -> tuple[Path, float]:
    """An MLP whose inference takes about ``target_ms``: resize until it does (caches make
    the time per layer depend on how many layers there are)."""
    path = folder / "mlp.onnx"
    layers, ms = 2, 0.0
    for _ in range(4):
        build_mlp(path, layers)
        ms = model_ms(path)
        if abs(ms - target_ms) < 0.1 * target_ms:
            break
        layers = max(1, round((layers + 1) * target_ms / ms) - 1)
    return path, ms


def start(cmd: list[str]) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    url = next(w for w in line.split() if w.startswith("http://"))
    return proc, url


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000, help="per path (direct, tap)")
    p.add_argument("--model-ms", type=float, default=1.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, ms = sized_model(folder, args.model_ms)
        server, server_url = start([sys.executable, "tools/onnx_http_server.py",
                                    "--model", str(model)])
        tap, tap_url = start([sys.executable, "-m", "app.cli", "tap", "--listen",
                              "127.0.0.1:0", "--upstream", server_url,
                              "--db", str(folder / "tap.db")])
        body = json.dumps({"inputs": [{"name": "features", "datatype": "FP32",
                                       "shape": [1, FEATURES],
                                       "data": [0.5] * FEATURES}]}).encode()
        path = f"/v2/models/{model.stem}/infer"
        times: dict[str, list[float]] = {"direct": [], "tap": []}
        try:
            with httpx.Client(base_url=server_url) as direct, \
                    httpx.Client(base_url=tap_url) as tapped:
                clients = {"direct": direct, "tap": tapped}
                for c in clients.values():  # warm up pools, sessions, caches
                    for _ in range(100):
                        c.post(path, content=body).raise_for_status()
                rounds, per_round = args.requests // 50, 50
                for _ in range(rounds):
                    for name, c in clients.items():
                        for _ in range(per_round):
                            t0 = time.perf_counter()
                            c.post(path, content=body).raise_for_status()
                            times[name].append((time.perf_counter() - t0) * 1000)
        finally:
            tap.terminate()
            tap.wait(30)
            server.terminate()
            server.wait(30)
    d, t = statistics.median(times["direct"]), statistics.median(times["tap"])
    p90 = {k: float(np.percentile(v, 90)) for k, v in times.items()}
    print(f"model alone: {ms:.3f} ms (fastest of 300, onnxruntime, 1 thread)")
    print(f"direct: median {d:.3f} ms, p90 {p90['direct']:.3f} ms ({len(times['direct'])} calls)")
    print(f"tap:    median {t:.3f} ms, p90 {p90['tap']:.3f} ms ({len(times['tap'])} calls)")
    print(f"tap added {t - d:.3f} ms at the median; ratio tap/direct = {t / d:.3f} "
          f"(target <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
