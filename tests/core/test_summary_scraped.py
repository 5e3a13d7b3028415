"""``watch`` on a Prometheus page: the summary reads the server's own figures (its request
and failure counts while watched, its latest latencies), not the probe's requests, of which
a scraping probe sends none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from app.core.store import Store
from app.core.summary import summarize
from tests.core import triton_page as tp
from tests.core.triton_page import TritonPage

pytestmark = pytest.mark.timeout(60)


def _watch(uri: str, workspace: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["watch", uri, "--seconds", "2", "--db", str(workspace), *args]) == 0
    return capsys.readouterr().out


def test_watch_json_of_a_metrics_page_gives_the_servers_rate_failures_and_latency(
        workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with TritonPage() as page:
        uri = f"{page.uri}?interval_s=0.2"
        report = json.loads(_watch(uri, workspace, capsys, "--json"))
    (endpoint,) = report["endpoints"]
    assert endpoint["source"] == "server"
    assert endpoint["scrapes"] >= 8
    served = tp.OK_PER_S + tp.FAILED_PER_S
    assert endpoint["requests_per_s"] == pytest.approx(served, rel=0.05)
    # Counted back from the rates: what the server served between the first and last scrape.
    assert endpoint["requests"] == pytest.approx(served * 1.9, rel=0.15)
    assert endpoint["errors"] / endpoint["requests"] == pytest.approx(1 / served, rel=0.2)
    assert endpoint["latency_ms"] == pytest.approx(
        {"p50": tp.P50_MS, "p95": tp.P95_MS, "p99": tp.P99_MS, "mean": tp.MEAN_MS})
    # The keys a script already reads are all still there.
    assert {"uri", "requests", "errors", "latency_ms", "peak_rss_mb",
            "failures_captured"} <= set(endpoint)

    store = Store(workspace, readonly=True)
    try:
        again = summarize(store, endpoint["uri"])
    finally:
        store.close()
    assert again.requests == endpoint["requests"]  # the same figures from the store alone


def test_watch_table_of_a_page_with_means_only_shows_the_rate_and_mean_not_dashes(
        workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with TritonPage(with_quantiles=False) as page:  # Triton's default: no summary quantiles
        out = _watch(f"{page.uri}?interval_s=0.2", workspace, capsys)
    header, _, row, *notes = out.splitlines()
    assert header.split()[1:] == ["requests", "failed", "req/s", "p50", "ms", "p95", "ms",
                                  "p99", "ms", "mean", "ms", "peak", "RSS", "MB"]
    cells = row.split()
    requests, failed, rate, p50, p95, p99, mean = cells[1:8]
    assert int(requests) > 50 and int(failed) >= 1
    assert float(rate) == pytest.approx(tp.OK_PER_S + tp.FAILED_PER_S, rel=0.05)
    assert (p50, p95, p99) == ("-", "-", "-")  # not exposed: not made up
    assert float(mean) == pytest.approx(tp.MEAN_MS)
    assert any("the server's own figures" in n and "scrapes" in n for n in notes)


def test_a_probed_endpoints_summary_keeps_its_figures_and_adds_rate_and_mean(
        demo_model: Path, workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = json.loads(_watch(f"onnx:{demo_model}", workspace, capsys, "--json",
                               "--rate", "50"))
    (endpoint,) = report["endpoints"]
    assert endpoint["source"] == "probe" and endpoint["scrapes"] is None
    lat = endpoint["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] and lat["mean"] > 0
    assert endpoint["requests_per_s"] == pytest.approx(50, rel=0.2)
