"""Tap overhead: median latency of an Open Inference (v2) call through ``probescope tap``
divided by the same call made directly, measured in the same run against the same server.

The server (tools/onnx_http_server.py, its own process) serves a compute-bound ONNX MLP sized
at start so one inference takes about 1 ms (and, for the tap's fixed cost, the 5 µs demo
model); the tap runs as ``probescope tap`` in its own process, as a
user would run it. Direct and tapped calls are interleaved in short rounds so drift in machine
load falls on both alike. Target: ratio <= 1.10.

    python bench/tap_overhead.py [--requests 2000] [--model-ms 1.0]
"""

from __future__ import annotations

import argparse
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
import onnxruntime as ort
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.store import Store
from bench._common import write_deep_mlp

ROOT = Path(__file__).resolve().parents[1]
FEATURES = 16
WIDTH = 256


def model_ms(path: Path, n: int = 300) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), sess_options=options,
                             providers=["CPUExecutionProvider"])
    x = {"x": np.ones((1, FEATURES), np.float32)}
    for _ in range(20):
        s.run(None, x)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        s.run(None, x)
        times.append(time.perf_counter() - t0)
    return min(times) * 1000  # the floor: calibration must not chase machine load


def sized_model(folder: Path, target_ms: float) -> tuple[Path, float]:
    """16 features in, 4 class probabilities out (small JSON, like most classifiers), and
    shared 256x256 MatMul+Relu layers between, deepened until one inference takes about
    ``target_ms``."""
    path = folder / "mlp.onnx"
    depth, ms = 16, 0.0
    for _ in range(5):
        write_deep_mlp(path, WIDTH, depth, features=FEATURES, classes=4)
        ms = model_ms(path)
        if abs(ms - target_ms) < 0.1 * target_ms:
            break
        depth = max(1, round(depth * target_ms / ms))
    return path, ms


def start(cmd: list[str]) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    url = next(w for w in line.split() if w.startswith("http://"))
    return proc, url


def measure(model: Path, features: int, requests: int, folder: Path
            ) -> tuple[dict[str, list[float]], int, float]:
    """Per-call latencies (ms) direct, through a fresh tap, and as the tap recorded them
    ("recorded": its captures' latency_ms, warm-up calls included), how many captures it
    kept, and the tap's CPU time per call (ms; proxying, and decoding and recording in its
    recording process, together)."""
    db = folder / f"tap-{model.stem}.db"
    server, server_url = start([sys.executable, "tools/onnx_http_server.py",
                                "--model", str(model)])
    tap, tap_url = start([sys.executable, "-m", "app.cli", "tap", "--listen", "127.0.0.1:0",
                          "--upstream", server_url, "--db", str(db)])
    body = json.dumps({"inputs": [{"name": "features", "datatype": "FP32",
                                   "shape": [1, features], "data": [0.5] * features}]}).encode()
    path = f"/v2/models/{model.stem}/infer"
    times: dict[str, list[float]] = {"direct": [], "tap": []}
    tap_process = psutil.Process(tap.pid)

    def tap_cpu_s() -> float:
        """The tap's CPU time with its recording process's (user + system)."""
        procs = [tap_process, *tap_process.children(recursive=True)]
        return sum(sum(p.cpu_times()[:2]) for p in procs)

    time.sleep(0.5)  # the recording process is up
    cpu0 = tap_cpu_s()
    try:
        with httpx.Client(base_url=server_url) as direct, \
                httpx.Client(base_url=tap_url) as tapped:
            clients = {"direct": direct, "tap": tapped}
            for c in clients.values():  # warm up pools, sessions, caches
                for _ in range(100):
                    c.post(path, content=body).raise_for_status()
            for _ in range(requests // 50):
                for name, c in clients.items():
                    for _ in range(50):
                        t0 = time.perf_counter()
                        c.post(path, content=body).raise_for_status()
                        times[name].append((time.perf_counter() - t0) * 1000)
        cpu_ms = (tap_cpu_s() - cpu0) * 1000
    finally:
        tap.terminate()  # SIGTERM: the tap records everything it forwarded, then exits
        tap.wait(30)
        server.terminate()
        server.wait(30)
    store = Store(db, readonly=True)
    try:
        recorded = store.count_captures()
        times["recorded"] = [c.capture.latency_ms
                             for c in store.captures(limit=recorded, with_tensors=False)]
    finally:
        store.close()
    return times, recorded, cpu_ms / (len(times["tap"]) + 100)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000, help="per path (direct, tap)")
    p.add_argument("--model-ms", type=float, default=1.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mlp, ms = sized_model(folder, args.model_ms)
        rows = [("demo wine-v1 (~5 us)", ROOT / "assets" / "demo" / "wine-v1.onnx", 13),
                (f"MLP, {ms:.2f} ms alone", mlp, FEATURES)]
        print(f"{'model':<24}{'direct p50':>11}{'tap p50':>9}{'added':>8}{'ratio':>7}"
              f"{'direct p90':>11}{'tap p90':>9}{'tap CPU/call':>13}  recorded"
              f"{'rec p10':>9}{'rec p50':>9}")
        for label, model, features in rows:
            times, recorded, cpu = measure(model, features, args.requests, folder)
            d, t = statistics.median(times["direct"]), statistics.median(times["tap"])
            p90 = {k: float(np.percentile(v, 90)) for k, v in times.items()}
            expected = len(times["tap"]) + 100
            # What the tap recorded, next to what its clients saw: the recorded latency is
            # the upstream's part of the call, so it should sit a little under "tap p50",
            # never near zero (a clock started after the request's send returned did).
            rec10, rec50 = (float(np.percentile(times["recorded"], q)) for q in (10, 50))
            print(f"{label:<24}{d:>9.3f}ms{t:>7.3f}ms{t - d:>6.3f}ms{t / d:>7.3f}"
                  f"{p90['direct']:>9.3f}ms{p90['tap']:>7.3f}ms{cpu:>11.3f}ms"
                  f"  {recorded}/{expected}{rec10:>7.3f}ms{rec50:>7.3f}ms")
    print(f"target for the ~{args.model_ms:g} ms model: ratio <= 1.10")
    return 0


if __name__ == "__main__":
    sys.exit(main())
