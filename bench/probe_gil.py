"""How much a busy Python thread beside the probes inflates the latency they record.

A probe reads its clock on its own thread; between the answer arriving and the clock being
read it may wait for the interpreter lock. The window's GUI thread (painting, summaries) and
the drift and incident threads are such neighbours. Three runs of the same real probes (the
demo's wine-v1 in-process, and a v2 server of our own in another process), same rate, same
run: alone, beside a busy thread at Python's default 5 ms switch interval, and beside it at
the interval the probes set (``PROBE_SWITCH_INTERVAL_S``). Printed: p50/p95 of each, and the
p95 of each busy run over the p95 alone.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.bus import Bus
from app.core.domain import Metric, Sample
from probes import ProbeOptions, open_probe
from probes.base import PROBE_SWITCH_INTERVAL_S

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "demo"
SECONDS = 6.0
RATE_HZ = 40.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def busy(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for i in range(1000):
            x += i * i


def latencies(uri: str, switch_s: float | None, with_busy: bool) -> list[float]:
    sys.setswitchinterval(0.005)
    bus = Bus()
    probe = open_probe(uri, bus, ProbeOptions(rate_hz=RATE_HZ, payload=DEMO / "reference.csv"))
    stop = threading.Event()
    if with_busy:
        threading.Thread(target=busy, args=(stop,), daemon=True).start()
    probe.start()  # lowers the switch interval, as in every process that runs probes
    if switch_s is not None:
        sys.setswitchinterval(switch_s)
    time.sleep(SECONDS)
    probe.stop()
    stop.set()
    items, _ = bus.drain()
    return [s.value for s in items if isinstance(s, Sample) and s.metric == Metric.LATENCY_MS]


def quantiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=100)
    return q[49], q[94]


def main() -> int:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "onnx_http_server.py"), "--model",
         str(DEMO / "wine-v2.onnx"), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)
        endpoints = {"onnx wine-v1 (in-process)": f"onnx:{DEMO / 'wine-v1.onnx'}",
                     "v2 server (own process)": f"v2+http://127.0.0.1:{port}/models/wine-v2"}
        print(f"{SECONDS:g} s per run at {RATE_HZ:g} req/s; latency recorded by the probe, ms")
        for label, uri in endpoints.items():
            alone = quantiles(latencies(uri, None, False))
            default = quantiles(latencies(uri, 0.005, True))
            probes = quantiles(latencies(uri, None, True))
            print(f"  {label}")
            for name, (p50, p95) in (("alone", alone), ("busy thread, 5 ms switch", default),
                                     (f"busy thread, {PROBE_SWITCH_INTERVAL_S * 1e3:g} ms "
                                      "switch (probes' own)", probes)):
                print(f"    {name:<40} p50 {p50:8.3f}  p95 {p95:8.3f}  "
                      f"p95 / alone {p95 / alone[1]:6.2f}")
    finally:
        server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
