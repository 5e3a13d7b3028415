"""Agent pull throughput: samples per second from a ``probescope agent`` process into the
dashboard's store through the ``agent+http://`` probe, bus and recorder.

The agent's buffer is filled beforehand, so the figure is the pull path's own speed, not the
rate at which the agent measures. Baseline in the same run: the same samples written straight
into a store with ``Store.write_batch`` (what the recorder costs with no network at all).

    python bench/agent_pull.py [--samples 200000] [--page 5000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.agent_buffer import AgentBuffer
from app.core.domain import Sample
from app.core.monitor import Monitor
from app.core.store import Store
from probes.agent import committed_cursor

ROOT = Path(__file__).resolve().parents[1]


def samples(n: int) -> list[Sample]:
    t0 = time.time_ns()
    names = ("latency_ms", "cpu_percent", "rss_mb", "ram_used_mb")
    return [Sample("agent", t0 + i, names[i % 4], float(i % 997)) for i in range(n)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=200_000)
    p.add_argument("--page", type=int, default=5000)
    args = p.parse_args()
    data = samples(args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        direct_db = folder / "direct.db"
        store = Store(direct_db)
        t0 = time.perf_counter()
        for i in range(0, len(data), args.page):
            store.write_batch(data[i:i + args.page], [])
        direct_s = time.perf_counter() - t0
        store.close()

        buffer_path = folder / "agent.sqlite"
        buffer = AgentBuffer(buffer_path)
        buffer.write_batch(data, [])
        buffer.close()
        token = secrets.token_urlsafe(32)
        (folder / "token").write_text(token)
        (folder / "token").chmod(0o600)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        agent = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "agent", "--listen", "127.0.0.1:0",
             "--token-file", str(folder / "token"), "--model",
             str(ROOT / "assets" / "demo" / "wine-v1.onnx"), "--rate", "1",
             "--system-rate", "1", "--buffer", str(buffer_path)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        assert agent.stdout is not None
        url = agent.stdout.readline().split()[3]
        os.environ["PROBESCOPE_AGENT_TOKEN"] = token
        db = folder / "ws.db"
        monitor = Monitor(db)
        try:
            uri = f"agent+{url}?interval=0.01&page={args.page}"
            t0 = time.perf_counter()
            probe = monitor.attach(uri)
            while committed_cursor(db, probe.endpoint) < args.samples:
                time.sleep(0.02)
            pull_s = time.perf_counter() - t0
        finally:
            monitor.close()
            agent.terminate()
            agent.wait(30)
    pull_rate, direct_rate = args.samples / pull_s, args.samples / direct_s
    print(f"agent -> store: {args.samples} samples in {pull_s:.2f} s = {pull_rate:,.0f} samples/s "
          f"(pages of {args.page})")
    print(f"baseline, Store.write_batch alone: {direct_rate:,.0f} samples/s")
    print(f"ratio pull/baseline = {pull_rate / direct_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
