"""The prom+http probe: MLServer's real metrics port, Debian's Prometheus server exposing its
own metrics, and known servers' series formats."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from app.core.bus import Bus
from app.core.domain import Sample
from probes import EndpointState, Probe, ProbeError, ProbeOptions, open_probe
from tests.helpers import wait_until
from tests.remote.fault_server import FaultServer

pytestmark = pytest.mark.timeout(120)


def _values(samples: list[Sample]) -> dict[str, float]:
    return {s.metric: s.value for s in samples}


def _timed_scrape(probe: Probe) -> tuple[dict[str, float], float, float]:
    before = time.monotonic()
    values = _values(probe.scrape_once())
    return values, before, time.monotonic()


def test_mlserver_metrics_become_rates_and_latency_quantiles(opened, mlserver, demo_dir):
    bus = Bus()
    traffic = opened(mlserver.v2_uri, bus, ProbeOptions(payload=demo_dir / "reference.csv"))
    prom = opened(f"prom+http://127.0.0.1:{mlserver.metrics_port}/metrics?window_s=600"
                      "&series=process_resident_memory_bytes,rest_server_requests", bus)
    _, b1, a1 = _timed_scrape(prom)
    sent = 40
    for _ in range(sent):
        traffic.measure_one()
    values, b2, a2 = _timed_scrape(prom)

    # the counter rose by exactly the requests sent, over the time between the two scrapes
    assert sent / (a2 - b1) <= values["requests_per_s"] <= sent / (b2 - a1)
    assert values["failures_per_s"] == 0.0
    assert values["up"] == 1.0 and values["scrape_ms"] > 0
    assert 0 < values["latency_p50_ms"] <= values["latency_p95_ms"] <= values["latency_p99_ms"]
    assert values["latency_mean_ms"] > 0
    assert values["process_resident_memory_bytes"] > 1e6  # a picked gauge, as the server says
    assert values["rest_server_requests_per_s"] >= values["requests_per_s"]  # a picked counter
    assert prom.state is EndpointState.UP and prom.last_error is None


def test_debian_prometheus_own_metrics_counter_histogram_summary_and_gauge(opened, prometheus):
    """client_golang's format from the real server: a labelled counter becomes the rate of
    the queries sent, a histogram becomes mean and quantiles, a summary keeps the quantiles
    it has, and the memory gauge matches what the kernel says of the process."""
    series = ("prometheus_http_requests_total,prometheus_http_request_duration_seconds,"
              "go_gc_duration_seconds,process_resident_memory_bytes")
    prom = opened(f"prom+http://127.0.0.1:{prometheus.port}/metrics?window_s=600"
                  f"&series={series}", Bus())
    _, b1, a1 = _timed_scrape(prom)
    sent = 25
    for _ in range(sent):
        prometheus.query("up")
    values, b2, a2 = _timed_scrape(prom)
    rss = prometheus.rss_bytes()

    # Every handler's requests, summed: the queries sent plus the probe's own scrapes
    # (client_golang counts a scrape once it has answered it, so one or two of them).
    assert sent / (a2 - b1) <= values["prometheus_http_requests_per_s"] <= \
        (sent + 2) / (b2 - a1)
    mean = values["prometheus_http_request_duration_seconds_mean"]
    p50, p95, p99 = (values[f"prometheus_http_request_duration_seconds_{q}"]
                     for q in ("p50", "p95", "p99"))
    assert 0 < mean < 0.1 and p50 <= p95 <= p99 <= 0.2  # seconds
    # Queries this small finish inside Prometheus's first bucket (<= 0.1 s), in which
    # PromQL's histogram_quantile interpolates linearly: the median reads 0.05 s exactly.
    assert p50 == pytest.approx(0.05)
    # Go's GC summary carries quantiles 0, 0.25, 0.5, 0.75 and 1: the median, and nothing
    # the server did not compute.
    assert values["go_gc_duration_seconds_p50"] >= 0
    assert "go_gc_duration_seconds_p95" not in values
    assert 0.7 * rss <= values["process_resident_memory_bytes"] <= 1.3 * rss
    assert values["up"] == 1.0 and prom.state is EndpointState.UP and prom.last_error is None


def test_model_filter_and_a_missing_series(opened, mlserver):
    base = f"prom+http://127.0.0.1:{mlserver.metrics_port}/metrics"
    other = opened(f"{base}?model=not-served&series=no_such_series", Bus())
    values = _values(other.scrape_once())
    assert "requests_per_s" not in values  # every model series was filtered out
    assert other.state is EndpointState.DEGRADED
    assert "no_such_series not found" in other.last_error


def test_a_page_that_is_not_prometheus_text_is_refused_at_attach(fault_server):
    fault_server.mode = "garbage"
    with pytest.raises(ProbeError, match="not Prometheus text format"):
        open_probe(f"prom+http://127.0.0.1:{fault_server.port}/metrics", Bus())


def test_scraping_goes_down_and_up_with_the_server(opened, fault_server):
    bus = Bus()
    probe = opened(f"prom+http://127.0.0.1:{fault_server.port}/metrics?interval_s=0.05",
                       bus)
    probe.start()
    try:
        assert wait_until(lambda: probe.requests >= 3)
        fault_server.stop()
        assert wait_until(lambda: probe.state is EndpointState.DOWN)
        assert "connection refused" in probe.last_error
        fault_server.start()
        assert wait_until(lambda: probe.state is EndpointState.UP and probe.last_error is None)
    finally:
        probe.stop()
    ups = [s.value for s in bus.drain()[0] if isinstance(s, Sample) and s.metric == "up"]
    assert 0.0 in ups and ups[-1] == 1.0


TRITON = """\
# TYPE nv_inference_request_success counter
nv_inference_request_success{{model="resnet",version="1"}} {ok}
nv_inference_request_success{{model="bert",version="1"}} 1000
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{{model="resnet",version="1"}} {bad}
# TYPE nv_inference_count counter
nv_inference_count{{model="resnet",version="1"}} {ok}
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{{model="resnet",version="1"}} {dur}
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{{model="resnet",version="1"}} {queue}
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{{gpu_uuid="GPU-1"}} 0.25
"""

VLLM = """\
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{{le="0.1",model_name="llama"}} {b1}
vllm:e2e_request_latency_seconds_bucket{{le="0.5",model_name="llama"}} {b2}
vllm:e2e_request_latency_seconds_bucket{{le="1.0",model_name="llama"}} {b3}
vllm:e2e_request_latency_seconds_bucket{{le="+Inf",model_name="llama"}} {b3}
vllm:e2e_request_latency_seconds_count{{model_name="llama"}} {b3}
vllm:e2e_request_latency_seconds_sum{{model_name="llama"}} {total}
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{model_name="llama"}} 3
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{{model_name="llama"}} {tokens}
"""

TORCHSERVE = """\
# TYPE ts_inference_requests_total counter
ts_inference_requests_total{{model_name="mnist",model_version="default",hostname="h"}} {n}
# TYPE ts_inference_latency_microseconds counter
ts_inference_latency_microseconds{{model_name="mnist",model_version="default",hostname="h"}} {us}
"""


def _two_scrapes(opened: Callable[..., Probe], fault_server: FaultServer, uri_suffix: str,
                 first: str, second: str) -> dict[str, float]:
    fault_server.metrics_text = first
    probe = opened(f"prom+http://127.0.0.1:{fault_server.port}/metrics{uri_suffix}",
                       Bus())
    fault_server.metrics_text = second
    return _values(probe.scrape_once())


def test_triton_series_under_stable_names(opened, fault_server):
    values = _two_scrapes(
        opened, fault_server, "?model=resnet",
        TRITON.format(ok=100, bad=0, dur=100 * 2000, queue=100 * 500),
        TRITON.format(ok=300, bad=10, dur=100 * 2000 + 200 * 4000, queue=100 * 500 + 200 * 100))
    assert values["latency_mean_ms"] == pytest.approx(4.0)  # 800 ms over 200 new requests
    assert values["queue_mean_ms"] == pytest.approx(0.1)
    assert values["requests_per_s"] > values["failures_per_s"] > 0
    assert values["gpu_util_percent"] == pytest.approx(25.0)


def test_vllm_histograms_give_quantiles_over_the_window(opened, fault_server):
    values = _two_scrapes(
        opened, fault_server, "",
        VLLM.format(b1=10, b2=10, b3=10, total=0.5, tokens=0),
        VLLM.format(b1=60, b2=100, b3=110, total=0.5 + 30.0, tokens=5000))
    # 100 new requests: 50 under 0.1 s, 40 in (0.1, 0.5], 10 in (0.5, 1.0]
    assert values["latency_p50_ms"] == pytest.approx(100.0)
    assert values["latency_p95_ms"] == pytest.approx(750.0)
    assert values["latency_mean_ms"] == pytest.approx(300.0)
    assert values["running"] == 3.0 and values["generation_tokens_per_s"] > 0


def test_torchserve_series_and_a_counter_reset(opened, fault_server):
    values = _two_scrapes(
        opened, fault_server, "",
        TORCHSERVE.format(n=500, us=500 * 1000),
        TORCHSERVE.format(n=20, us=20 * 3000))  # restarted: counts began again from zero
    assert values["latency_mean_ms"] == pytest.approx(3.0)
    assert values["requests_per_s"] > 0


PICKED = """\
# TYPE my_latency_seconds histogram
my_latency_seconds_bucket{{le="0.2"}} {a}
my_latency_seconds_bucket{{le="+Inf"}} {a}
my_latency_seconds_count {a}
my_latency_seconds_sum {s}
# TYPE my_rpc summary
my_rpc{{quantile="0.5"}} 0.03
my_rpc{{quantile="0.99"}} 0.4
my_rpc_count {a}
my_rpc_sum {s}
"""


def test_picked_histograms_and_summaries_keep_their_own_units(opened, fault_server):
    values = _two_scrapes(opened, fault_server, "?series=my_latency_seconds,my_rpc",
                          PICKED.format(a=0, s=0), PICKED.format(a=10, s=1.0))
    assert values["my_latency_seconds_p50"] == pytest.approx(0.1)  # seconds, as exposed
    assert values["my_latency_seconds_mean"] == pytest.approx(0.1)
    assert values["my_rpc_p50"] == pytest.approx(0.03)
    assert values["my_rpc_p99"] == pytest.approx(0.4)
    assert values["my_rpc_mean"] == pytest.approx(0.1)
    assert "my_rpc_p95" not in values  # the server does not expose it: not made up
