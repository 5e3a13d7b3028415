"""Per-endpoint summaries read back from the store: what ``watch`` and ``demo`` print.

A probe that sends requests is summarised from the requests it timed. A metrics page
(``prom+http:``) sends none: it is summarised from what the server reported of its own
requests, under the stable names docs/remote-probes.md lists. ``system:`` sends none either:
it is summarised from what it samples of this machine (CPU %, RAM used, the process's RSS,
GPUs where NVML answers).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np

from app.core.domain import NEWEST_NS, Metric
from app.core.store import Store

SCRAPE_MS = "scrape_ms"  # one per scrape of a metrics page (probes.prometheus)
REQUESTS_PER_S = "requests_per_s"  # a scraped server's own rates and latencies
FAILURES_PER_S = "failures_per_s"
SERVER_LATENCY = {"p50": "latency_p50_ms", "p95": "latency_p95_ms", "p99": "latency_p99_ms",
                  "mean": "latency_mean_ms"}
PROBE, SERVER, MACHINE = "probe", "server", "system"
# The series probes.system writes once per sample, and the GPU ones (one set per NVML device).
CPU_PERCENT, RAM_USED_MB, RAM_PERCENT = "cpu_percent", "ram_used_mb", "ram_percent"
GPU_SERIES = re.compile(r"gpu(\d+)_(util_percent|mem_used_mb)$")


@dataclass(frozen=True, slots=True)
class EndpointSummary:
    """``source`` says whose figures these are. ``probe``: the requests ProbeScope sent and
    timed. ``server``: a metrics page's own counts while watched (requests and errors from
    its counters' rates), its latest p50/p95/p99 (over the probe's ``window_s``) and mean
    latency; ``scrapes`` counts the pages read. ``system``: this machine, which sends no
    request (``requests`` and ``errors`` are 0): ``samples`` taken, and the peak and mean of
    ``cpu_percent``, ``ram_used_mb`` and ``ram_percent`` (``gpus`` by NVML index, where
    present); ``peak_rss_mb`` is the watched process's."""

    uri: str
    requests: int
    errors: int
    latency_ms: dict[str, float | None]
    peak_rss_mb: float | None
    failures_captured: int
    source: str = PROBE
    requests_per_s: float | None = None
    scrapes: int | None = None
    down_s: float | None = None  # time the probe could not reach it; None: no up series
    failed_by_kind: dict[str, int] = field(default_factory=dict)  # capture status -> count
    samples: int | None = None  # system: only, as are the four below
    cpu_percent: dict[str, float | None] | None = None  # {"peak": .., "mean": ..}
    ram_used_mb: dict[str, float | None] | None = None
    ram_percent: dict[str, float | None] | None = None
    gpus: dict[str, dict[str, dict[str, float | None]]] | None = None  # "0" -> series -> peak/mean

    def to_json(self) -> dict:
        return asdict(self)


def down_seconds(store: Store, uri: str, start: int, end: int, *,
                 since: int | None = None) -> float | None:
    """How long in ``[start, end]`` the probe's ``up`` series said the endpoint was down: from
    each ``up`` 0 sample to the next ``up`` sample (or ``end``). None without an ``up``
    series (a local model has none), so "0 s down" is never claimed for want of one. Read
    from ``since`` (default ``start``): a down probe writes ``up`` 0 every few seconds, so
    an outage that began before ``start`` is still seen."""
    ts, up = store.values(uri, Metric.UP, start if since is None else since, end)
    if not len(ts):
        return None
    nxt = np.append(ts[1:], end)
    lo, hi = np.maximum(ts, start), np.minimum(nxt, end)
    down = (up == 0) & (hi > lo)
    return float((hi[down] - lo[down]).sum()) / 1e9


def summarize(store: Store, uri: str, start_ns: int | None = None,
              end_ns: int | None = None) -> EndpointSummary:
    latency_ts, latency = store.values(uri, Metric.LATENCY_MS, start_ns)
    scrape_ts, _ = store.values(uri, SCRAPE_MS, start_ns)
    _, rss = store.values(uri, Metric.RSS_MB, start_ns)
    peak_rss = round(float(rss.max()), 1) if len(rss) else None
    captured = store.count_captures(uri, failed=True, since_ns=start_ns)
    if uri.partition(":")[0] == "system":
        return _machine_summary(store, uri, start_ns, end_ns, peak_rss)
    if uri.partition(":")[0].startswith("prom+") or (len(scrape_ts) and not len(latency)):
        return _server_summary(store, uri, start_ns, scrape_ts, peak_rss, captured)
    _, failures = store.values(uri, Metric.FAILURE, start_ns)
    if len(latency):
        p50, p95, p99 = (round(float(v), 4) for v in np.percentile(latency, [50, 95, 99]))
        quantiles: dict[str, float | None] = {"p50": p50, "p95": p95, "p99": p99,
                                              "mean": round(float(latency.mean()), 4)}
    else:
        quantiles = {"p50": None, "p95": None, "p99": None, "mean": None}
    span_s = (int(latency_ts[-1]) - int(latency_ts[0])) / 1e9 if len(latency) > 1 else 0.0
    start, end = start_ns or 0, end_ns or store.last_sample_ns(uri) or 0
    down = down_seconds(store, uri, start, end) if end > start else None
    # Failures are always captured (the capture rate thins only successes): counts by kind.
    kinds = {k: n for k, n in store.capture_status_counts(uri, start, end or NEWEST_NS).items()
             if k != "ok"}
    return EndpointSummary(
        uri=uri, requests=len(latency), errors=len(failures), latency_ms=quantiles,
        peak_rss_mb=peak_rss, failures_captured=captured,
        requests_per_s=round((len(latency) - 1) / span_s, 3) if span_s > 0 else None,
        down_s=None if down is None else round(down, 1), failed_by_kind=kinds,
    )


def _server_summary(store: Store, uri: str, start_ns: int | None, scrape_ts: np.ndarray,
                    peak_rss: float | None, captured: int) -> EndpointSummary:
    requests, covered_s = _counted(store, uri, REQUESTS_PER_S, start_ns, scrape_ts)
    errors, _ = _counted(store, uri, FAILURES_PER_S, start_ns, scrape_ts)
    latency: dict[str, float | None] = {}
    for key, metric in SERVER_LATENCY.items():
        _, values = store.values(uri, metric, start_ns)
        latency[key] = round(float(values[-1]), 4) if len(values) else None
    return EndpointSummary(
        uri=uri, requests=round(requests), errors=round(errors), latency_ms=latency,
        peak_rss_mb=peak_rss, failures_captured=captured, source=SERVER,
        requests_per_s=round(requests / covered_s, 3) if covered_s > 0 else None,
        scrapes=len(scrape_ts))


def _peak_mean(values: np.ndarray, digits: int = 1) -> dict[str, float | None]:
    if not len(values):
        return {"peak": None, "mean": None}
    return {"peak": round(float(values.max()), digits),
            "mean": round(float(values.mean()), digits)}


def _machine_summary(store: Store, uri: str, start_ns: int | None, end_ns: int | None,
                     peak_rss: float | None) -> EndpointSummary:
    """``system:`` sends no request to count or time: what it measured of this machine."""
    _, cpu = store.values(uri, CPU_PERCENT, start_ns, end_ns)
    _, ram_mb = store.values(uri, RAM_USED_MB, start_ns, end_ns)
    _, ram_pc = store.values(uri, RAM_PERCENT, start_ns, end_ns)
    gpus: dict[str, dict[str, dict[str, float | None]]] = {}
    for name in store.metric_names(uri):
        if (match := GPU_SERIES.match(name)) is not None:
            _, values = store.values(uri, name, start_ns, end_ns)
            gpus.setdefault(match[1], {})[match[2]] = _peak_mean(values)
    return EndpointSummary(
        uri=uri, requests=0, errors=0,
        latency_ms={"p50": None, "p95": None, "p99": None, "mean": None},
        peak_rss_mb=peak_rss, failures_captured=0, source=MACHINE,
        samples=len(cpu), cpu_percent=_peak_mean(cpu), ram_used_mb=_peak_mean(ram_mb, 0),
        ram_percent=_peak_mean(ram_pc), gpus=dict(sorted(gpus.items(), key=lambda g: int(g[0]))))


def _machine_text(s: EndpointSummary) -> str:
    """The load columns of a ``system:`` row, in place of request figures it has none of."""
    cpu, ram, share = s.cpu_percent or {}, s.ram_used_mb or {}, s.ram_percent or {}
    if cpu.get("peak") is None:
        return "no samples"
    text = f"CPU {cpu['peak']:.1f} % peak, {cpu['mean']:.1f} % mean"
    if ram.get("peak") is not None:
        text += f"; RAM used {ram['peak']:,.0f} MB peak"
        if share.get("peak") is not None:
            text += f" ({share['peak']:.1f} %)"
    return text


def _gpu_text(series: dict[str, dict[str, float | None]]) -> str:
    said = []
    for key, what, unit in (("util_percent", "busy", "%"), ("mem_used_mb", "memory", "MB")):
        peak = series.get(key, {}).get("peak")
        if peak is not None:
            said.append(f"{what} {peak:,.0f} {unit} peak")
    return ", ".join(said) or "no readings"


def _counted(store: Store, uri: str, metric: str, start_ns: int | None,
             scrape_ts: np.ndarray) -> tuple[float, float]:
    """How many events a scraped rate stands for, and over how many seconds. Each rate is
    the counter's rise since the scrape before it (the last one answered) over the time
    between the two, so rate x that time gives the rise back: the server's own count."""
    ts, rate = store.values(uri, metric, start_ns)
    if not len(ts) or not len(scrape_ts):
        return 0.0, 0.0
    before = np.searchsorted(scrape_ts, ts, side="left") - 1
    known = before >= 0  # the first scrape of the run has no rate; any other has one before
    dt = (ts[known] - scrape_ts[before[known]]) / 1e9
    return float(np.sum(rate[known] * dt)), float(np.sum(dt))


ENDPOINT_WIDTH = 60
# requests, failed, req/s, p50, p95, p99 and mean, each with the space before it.
REQUEST_COLUMNS_WIDTH = 9 + 8 + 9 + 4 * 9


def fit(text: str, width: int = ENDPOINT_WIDTH) -> str:
    """``text`` cut in the middle to ``width``, keeping its head and its tail."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def table_names(uris: list[str], width: int = ENDPOINT_WIDTH) -> tuple[list[str], str]:
    """Names for a table's endpoint column, and the URI parameters they leave out. When a URI
    is too long for the column, the parameters that every URI with parameters shares go
    (they tell no row apart) and "…" marks the gap: the model, at the head, and what differs
    between endpoints both stay in sight."""
    if all(len(u) <= width for u in uris):
        return list(uris), ""
    queries = [u.partition("?")[2].split("&") for u in uris if "?" in u]
    shared = set.intersection(*map(set, queries)) if len(queries) > 1 else set()
    names = []
    for u in uris:
        base, mark, query = u.partition("?")
        kept = [p for p in query.split("&") if p not in shared] if mark else []
        if mark and len(kept) < len(query.split("&")):
            kept.append("…")
        names.append(fit(base + mark + "&".join(kept), width))
    left_out = [p for p in queries[0] if p in shared] if shared else []
    return names, "&".join(left_out)


def format_table(summaries: list[EndpointSummary]) -> str:
    names, shared = table_names([s.uri for s in summaries])
    width = max([len("endpoint"), *map(len, names)])
    # "failed": every failed request (errors, wrong answers, slow ones), as the plots say.
    header = f"{'endpoint':<{width}} {'requests':>8} {'failed':>7} {'req/s':>8} " \
             f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'peak RSS MB':>11}"
    lines = [header, "-" * len(header)]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    def rate(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    for name, s in zip(names, summaries, strict=True):
        lat = s.latency_ms
        if s.source == MACHINE:
            # No requests to count or time: its load spans those columns (a row of zeros and
            # dashes read as a probe that got nothing).
            figures = f" {_machine_text(s):<{REQUEST_COLUMNS_WIDTH - 1}}"
        else:
            figures = (f" {s.requests:>8} {s.errors:>7} {rate(s.requests_per_s):>8} "
                       f"{fmt(lat['p50']):>8} {fmt(lat['p95']):>8} {fmt(lat['p99']):>8} "
                       f"{fmt(lat.get('mean')):>8}")
        lines.append(f"{name:<{width}}{figures} "
                     f"{'-' if s.peak_rss_mb is None else f'{s.peak_rss_mb:.1f}':>11}")
    if shared:
        lines.append(f"… = {shared} (the same on each)")
    for name, s in zip(names, summaries, strict=True):
        # What the columns cannot say: how long it was out of reach, and what the failures
        # were (wrong answers and refused connections are both "failed").
        said = []
        if s.down_s:
            said.append(f"unreachable for {s.down_s:g} s")
        if s.failed_by_kind:
            said.append("failed: " + ", ".join(f"{k} {n}" for k, n in s.failed_by_kind.items()))
        if said:
            lines.append(f"  {name}: {'; '.join(said)}")
        if s.source == MACHINE:
            gpus = "".join(f"; GPU {i}: {_gpu_text(series)}"
                           for i, series in (s.gpus or {}).items())
            lines.append(f"{name} sampled this machine {s.samples} times (it sends no "
                         f"requests); its peak RSS is the watched process's{gpus}")
        if s.source == SERVER:
            # Not requests of ours: say whose figures the row holds, and from how much.
            lines.append(f"{name}: the server's own figures, from {s.scrapes} scrapes "
                         "(its requests and failures while watched, its latest latencies)")
    return "\n".join(lines)
