"""``watch`` on a Prometheus page: the summary reads the server's own figures (its request
and failure counts while watched, its latest latencies), not the probe's requests, of which
a scraping probe sends none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from app.core.domain import Sample
from app.core.store import Store
from app.core.summary import format_table, summarize
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


def test_watch_of_system_shows_the_machines_load_not_a_row_of_dashes_and_zero_requests(
        demo_model: Path, workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``system:`` sends no request: its row says what it measured (CPU %, RAM used, the
    process's RSS), and the note how many samples that is, beside a model's usual row."""
    assert main(["watch", f"onnx:{demo_model}", "system:?rate=20", "--seconds", "2",
                 "--db", str(workspace)]) == 0
    out = capsys.readouterr().out
    header, _, model_row, system_row, *notes = out.splitlines()
    assert model_row.startswith("onnx:") and int(model_row.split()[1]) > 0
    assert system_row.startswith("system:?rate=20 ")
    assert "CPU " in system_row and "% peak" in system_row and "% mean" in system_row
    assert "RAM used " in system_row and "MB peak" in system_row
    # The peak RSS stays in its column, under its header.
    rss = system_row.split()[-1]
    assert float(rss) > 0 and system_row.rindex(rss) + len(rss) == len(header)
    (note,) = [n for n in notes if n.startswith("system:?rate=20 sampled this machine")]
    samples = int(note.split(" machine ")[1].split()[0])
    assert samples > 0 and "sends no requests" in note


def test_watch_json_of_system_adds_its_samples_cpu_and_ram_and_keeps_the_old_keys(
        workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = json.loads(_watch("system:?rate=20", workspace, capsys, "--json"))
    (endpoint,) = report["endpoints"]
    assert {"uri", "requests", "errors", "latency_ms", "peak_rss_mb", "failures_captured",
            "source", "requests_per_s", "scrapes", "down_s", "failed_by_kind"} <= set(endpoint)
    assert endpoint["source"] == "system" and endpoint["requests"] == 0
    store = Store(workspace, readonly=True)
    try:
        samples = store.count_samples(endpoint["uri"], "cpu_percent")
        _, ram = store.values(endpoint["uri"], "ram_used_mb")
    finally:
        store.close()
    assert endpoint["samples"] == samples > 0
    cpu = endpoint["cpu_percent"]
    assert 0 <= cpu["mean"] <= cpu["peak"] <= 100
    assert endpoint["ram_used_mb"]["peak"] == pytest.approx(ram.max(), abs=0.5)
    assert 0 < endpoint["ram_percent"]["peak"] <= 100
    assert endpoint["peak_rss_mb"] > 0


def test_a_system_summary_names_each_gpu_nvml_reported(workspace: Path) -> None:
    """GPU series exist only where NVML answers; written here as probes.system writes them."""
    uri, t0 = "system:", 1_700_000_000 * 10**9
    samples = []
    for k, (cpu, util, mem) in enumerate([(10.0, 40.0, 1000.0), (30.0, 95.0, 2048.0)]):
        ts = t0 + k * 10**9
        samples += [Sample(uri, ts, "cpu_percent", cpu), Sample(uri, ts, "ram_used_mb", 4000.0),
                    Sample(uri, ts, "ram_percent", 25.0), Sample(uri, ts, "rss_mb", 200.0),
                    Sample(uri, ts, "gpu0_util_percent", util),
                    Sample(uri, ts, "gpu0_mem_used_mb", mem),
                    Sample(uri, ts, "gpu0_mem_total_mb", 81920.0)]
    store = Store(workspace)
    try:
        store.write_batch(samples, [])
        summary = summarize(store, uri)
    finally:
        store.close()
    assert summary.samples == 2 and summary.cpu_percent == {"peak": 30.0, "mean": 20.0}
    assert summary.gpus == {"0": {"util_percent": {"peak": 95.0, "mean": 67.5},
                                  "mem_used_mb": {"peak": 2048.0, "mean": 1524.0}}}
    table = format_table([summary])
    assert "CPU 30.0 % peak, 20.0 % mean; RAM used 4,000 MB peak (25.0 %)" in table
    assert "GPU 0: busy 95 % peak, memory 2,048 MB peak" in table
