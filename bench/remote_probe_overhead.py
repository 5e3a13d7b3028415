"""v2 probe cost against a real MLServer: what the probe records as latency, and what one probe
request costs in all (encode, HTTP, decode, judge, capture), each divided by a bare httpx call
with the same body, measured in the same run against the same server.

Calls are interleaved in short rounds so drift in machine load falls on both alike. Needs the
cached MLServer 1.7.1 environment (built on first use, as the tests do).

    python bench/remote_probe_overhead.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test helpers that build and run MLServer

from app.core.bus import Bus  # noqa: E402
from probes import ProbeOptions, open_probe  # noqa: E402
from tests.servers.mlserver import MLServer  # noqa: E402
from tests.servers.venvs import ServerUnavailable  # noqa: E402

ROUND = 50


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            server = MLServer(Path(tmp)).start()
        except ServerUnavailable as exc:
            print(f"skipped: {exc}")
            return 0
        try:
            return run(server, args.requests)
        finally:
            server.stop()


def run(server: MLServer, requests: int) -> int:
    bus = Bus(capacity=10 * requests + 1000)
    probe = open_probe(server.v2_uri, bus,
                       ProbeOptions(payload=ROOT / "assets" / "demo" / "reference.csv"))
    body = probe.requests_ready[0].body
    path = probe.infer_path()
    direct_ms: list[float] = []
    probe_wall_ms: list[float] = []
    probe_recorded_ms: list[float] = []
    with httpx.Client(base_url=server.url) as client:
        for _ in range(20):  # warm both paths
            client.post(path, content=body, headers={"content-type": "application/json"})
            probe.measure_one()
        for _ in range(max(1, requests // ROUND)):
            for _ in range(ROUND):
                t0 = time.perf_counter_ns()
                r = client.post(path, content=body, headers={"content-type": "application/json"})
                r.read()
                direct_ms.append((time.perf_counter_ns() - t0) / 1e6)
            for _ in range(ROUND):
                t0 = time.perf_counter_ns()
                capture = probe.measure_one()
                probe_wall_ms.append((time.perf_counter_ns() - t0) / 1e6)
                probe_recorded_ms.append(capture.latency_ms)
            bus.drain()
    probe.close()
    direct = statistics.median(direct_ms)
    recorded = statistics.median(probe_recorded_ms)
    wall = statistics.median(probe_wall_ms)
    print(f"MLServer ready after {server.ready_after_s:.2f} s; {len(direct_ms)} calls each")
    print(f"median bare httpx call        {direct:8.3f} ms")
    print(f"median latency probe records  {recorded:8.3f} ms  ratio {recorded / direct:.3f}")
    print(f"median probe request, all in  {wall:8.3f} ms  ratio {wall / direct:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
