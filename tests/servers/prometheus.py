"""Debian's Prometheus server (the `prometheus` package that .ci/run installs) as a real peer
for the prom+http probe: it exposes its own metrics at /metrics in client_golang's format
(counters with labels, histograms, summaries with quantile labels, process gauges).

Started on an ephemeral 127.0.0.1 port with an empty scrape configuration and a throw-away
data folder. Thread: the test's; the server is a child process that ``stop`` ends.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from tests.servers.process import ServerProcess, free_port
from tests.servers.venvs import ServerUnavailable

BINARY = "prometheus"
CONFIG = "global:\n  scrape_interval: 1h\nscrape_configs: []\n"


def binary() -> str:
    path = shutil.which(BINARY)
    if path is None:
        raise ServerUnavailable("the prometheus binary is not on PATH (Debian package "
                                "`prometheus`; .ci/run installs it)")
    return path


class Prometheus(ServerProcess):
    label = "Prometheus"
    log_name = "prometheus.log"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.port = free_port()

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self, timeout_s: float = 60.0) -> Prometheus:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(CONFIG)
        self.launch([binary(), f"--config.file={config}",
                     f"--storage.tsdb.path={self.workdir / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                    lambda: httpx.get(f"http://127.0.0.1:{self.port}/-/ready",
                                      timeout=1.0).is_success,
                    timeout_s=timeout_s)
        return self

    def query(self, expr: str) -> None:
        """One request to the query API (counted in its own request metrics)."""
        httpx.get(f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": expr},
                  timeout=10.0).raise_for_status()

    def rss_bytes(self) -> float:
        """The server's resident memory as the kernel reports it: an independent check."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")
