"""A Prometheus page's endpoint in the window: its panel draws the server's own figures
(latency quantiles and mean, request and failure rates, GPU load and memory) and its header
says them; the endpoint list does not count scrapes as requests."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.core import triton_page as tp
from tests.core.triton_page import TritonPage

pytestmark = pytest.mark.timeout(90)


def _legend(plot) -> list[str]:
    return [label.text for _, label in plot.legend.items]


def _finite(plot, key: str) -> np.ndarray:
    _, v = plot._data.get(key, (np.empty(0), np.empty(0)))
    return v[np.isfinite(v)]


def test_a_triton_page_fills_the_panel_header_and_list_live_and_in_history(window, qtbot):
    with TritonPage() as page:
        probe = window.attach(f"{page.uri}?interval_s=0.2")
        panel = window.panels[probe.endpoint]
        lat, rate = panel.latency_plot, panel.rate_plot
        qtbot.waitUntil(lambda: len(_finite(lat, "latency_p95_ms")) >= 5
                        and len(_finite(rate, "failures_per_s")) >= 5
                        and panel.load_plot is not None
                        and len(_finite(panel.load_plot, "gpu_util_percent")) >= 5,
                        timeout=15_000)
        qtbot.waitUntil(lambda: "failed" in panel.stats.text(), timeout=5_000)
        header = panel.stats.text()
        row = window.endpoint_list.row_texts(probe.endpoint)

        window.set_time_window("all")  # the same figures, read back from the store
        qtbot.waitUntil(lambda: len(_finite(lat, "latency_mean_ms")) >= 5
                        and len(_finite(rate, "requests_per_s")) >= 5
                        and panel.load_plot.point_count("gpu_util_percent") >= 5, timeout=10_000)
        history = {key: _finite(lat, key) for key in ("latency_p50_ms", "latency_mean_ms")}
        window.set_time_window("1 min")

    # One curve per series the server reports, each named in the legend; the probe's own
    # request dots and percentiles (there are none) are not listed.
    assert {"p50", "p95", "p99", "mean", "queue mean"} <= set(_legend(lat))
    assert "request" not in _legend(lat)
    assert np.allclose(_finite(lat, "latency_p95_ms"), tp.P95_MS)
    assert np.allclose(_finite(lat, "latency_mean_ms"), tp.MEAN_MS)
    assert np.allclose(_finite(lat, "queue_mean_ms"), tp.QUEUE_MS)
    assert set(_legend(rate)) >= {"requests", "failed"}
    served = tp.OK_PER_S + tp.FAILED_PER_S
    assert np.median(_finite(rate, "requests_per_s")) == pytest.approx(served, rel=0.1)
    assert np.median(_finite(rate, "failures_per_s")) == pytest.approx(tp.FAILED_PER_S, rel=0.2)
    assert np.allclose(_finite(panel.load_plot, "gpu_util_percent"), 100 * tp.GPU_UTIL)
    assert np.allclose(_finite(panel.memory_plot, "gpu_mem_used_mb"), tp.GPU_MEM_MB)
    assert panel.load_plot in window.live.x_link.plots  # on the shared time axis

    # The header: the server's rate, its p95 and share failed, its GPU.
    shown_rate = re.search(r"([\d.]+) req/s", header)
    assert shown_rate and float(shown_rate[1]) == pytest.approx(served, rel=0.1), header
    assert f"p95 {tp.P95_MS:.2f} ms" in header and "failed 2%" in header
    assert "GPU 42 %" in header
    # The list's count is of scrapes, and says so.
    assert row["Requests"].endswith("scrapes"), row

    assert np.allclose(history["latency_p50_ms"], tp.P50_MS)
    assert np.allclose(history["latency_mean_ms"], tp.MEAN_MS)


def test_a_page_with_means_only_heads_its_panel_with_the_mean(qtbot, tmp_path):
    """Triton exposes no quantiles unless told to: the header falls back on the mean."""
    from app.core.bus import Bus
    from app.core.store import Store
    from probes import open_probe
    from widgets.endpoint_panel import EndpointPanel
    from widgets.theme import theme_named

    with TritonPage(with_quantiles=False) as page:
        probe = open_probe(page.uri, Bus())
        try:
            samples = []
            for _ in range(4):
                qtbot.wait(60)
                samples += probe.scrape_once()
        finally:
            probe.close()
    store = Store(tmp_path / "w.db")
    try:
        store.write_batch(samples, [])
        metrics = {m: store.values(probe.endpoint, m) for m in
                   ("requests_per_s", "failures_per_s", "latency_mean_ms", "up", "scrape_ms")}
    finally:
        store.close()
    panel = EndpointPanel(probe.endpoint, "prom+http", theme_named("dark"))
    qtbot.addWidget(panel)
    panel.ingest({m: (t / 1e9, v) for m, (t, v) in metrics.items()})
    panel.set_state("up")
    panel.redraw(samples[0].ts_ns / 1e9 - 1)
    assert f"mean {tp.MEAN_MS:.2f} ms" in panel.stats.text()
    assert "req/s" in panel.stats.text() and "p95" not in panel.stats.text()
    assert _legend(panel.latency_plot) == ["mean"]
    assert np.allclose(_finite(panel.latency_plot, "latency_mean_ms"), tp.MEAN_MS)


def test_a_page_without_model_server_series_says_so_and_draws_the_series_picked(qtbot):
    """Prometheus's own page: none of the stable names. The header says why the plots stay
    empty; a family picked with ?series= is drawn, named, on a plot of its own."""
    from app.core.bus import Bus
    from app.core.domain import Batch
    from app.gui.bridge import regroup
    from probes import open_probe
    from tests.remote.fault_server import FaultServer
    from widgets.endpoint_panel import EndpointPanel
    from widgets.theme import theme_named

    server = FaultServer().start()
    try:
        server.metrics_text = "# TYPE demo_total counter\ndemo_total 1\n"
        plain = open_probe(f"prom+http://127.0.0.1:{server.port}/metrics", Bus())
        picked = open_probe(f"prom+http://127.0.0.1:{server.port}/metrics?series=demo_total",
                            Bus())
        samples = {plain.endpoint: [], picked.endpoint: []}
        for n in (20, 40, 60):
            qtbot.wait(50)
            server.metrics_text = f"# TYPE demo_total counter\ndemo_total {n}\n"
            for probe in (plain, picked):
                samples[probe.endpoint] += probe.scrape_once()
        plain.close()
        picked.close()
    finally:
        server.stop()

    panels = {}
    for endpoint, got in samples.items():
        panel = panels[endpoint] = EndpointPanel(endpoint, "prom+http", theme_named("dark"))
        qtbot.addWidget(panel)
        panel.ingest(regroup(Batch(samples=tuple(got), captures=())).series[endpoint])
        panel.set_state("up")
        panel.redraw(got[0].ts_ns / 1e9 - 1)
    assert "no model-server series" in panels[plain.endpoint].stats.text()
    other = panels[picked.endpoint].other_plot
    assert other is not None and _legend(other) == ["demo/s"]
    assert len(_finite(other, "demo_per_s")) == 3 and np.all(_finite(other, "demo_per_s") > 0)
