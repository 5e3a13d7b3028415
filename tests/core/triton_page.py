"""A Triton-style /metrics page whose counters grow with time, served by the fault server
(a real HTTP server on 127.0.0.1): 40 successes and 1 failure a second, 12 ms mean latency
and 2 ms queue time per request, a summary's p50/p95/p99 of 10/20/30 ms, and GPU gauges.
Shared by the GUI and the summary tests."""

from __future__ import annotations

import threading
import time

from tests.remote.fault_server import FaultServer

OK_PER_S, FAILED_PER_S = 40.0, 1.0
MEAN_MS, QUEUE_MS = 12.0, 2.0
P50_MS, P95_MS, P99_MS = 10.0, 20.0, 30.0
GPU_UTIL, GPU_MEM_MB = 0.42, 3072.0

PAGE = """\
# TYPE nv_inference_request_success counter
nv_inference_request_success{{model="wine",version="1"}} {ok}
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{{model="wine",version="1",reason="BACKEND"}} {bad}
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{{model="wine",version="1"}} {dur}
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{{model="wine",version="1"}} {queue}
# TYPE nv_inference_request_summary_us summary
nv_inference_request_summary_us{{model="wine",version="1",quantile="0.5"}} {p50}
nv_inference_request_summary_us{{model="wine",version="1",quantile="0.95"}} {p95}
nv_inference_request_summary_us{{model="wine",version="1",quantile="0.99"}} {p99}
nv_inference_request_summary_us_sum{{model="wine",version="1"}} {dur}
nv_inference_request_summary_us_count{{model="wine",version="1"}} {ok}
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{{gpu_uuid="GPU-1"}} {gpu}
# TYPE nv_gpu_memory_used_bytes gauge
nv_gpu_memory_used_bytes{{gpu_uuid="GPU-1"}} {mem}
"""


class TritonPage:
    """Starts a FaultServer and keeps its page's counters growing, as a serving Triton's do;
    ``with_quantiles=False`` leaves the summary out (Triton's default: means only)."""

    def __init__(self, *, with_quantiles: bool = True) -> None:
        self.with_quantiles = with_quantiles
        self.server = FaultServer()
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._grow, daemon=True)

    @property
    def uri(self) -> str:
        return f"prom+http://127.0.0.1:{self.server.port}/metrics"

    def __enter__(self) -> TritonPage:
        self._write()
        self.server.start()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.stop()

    def _grow(self) -> None:
        while not self._stop.wait(0.002):  # a rate's error is this over the scrape interval
            self._write()

    def _write(self) -> None:
        s = time.monotonic() - self._t0 + 100.0  # a server that has run for a while
        ok = OK_PER_S * s
        text = PAGE.format(ok=ok, bad=FAILED_PER_S * s, dur=ok * MEAN_MS * 1e3,
                           queue=ok * QUEUE_MS * 1e3, p50=P50_MS * 1e3, p95=P95_MS * 1e3,
                           p99=P99_MS * 1e3, gpu=GPU_UTIL, mem=GPU_MEM_MB * 2**20)
        if not self.with_quantiles:
            text = "\n".join(line for line in text.splitlines()
                             if "summary" not in line) + "\n"
        self.server.metrics_text = text
