"""Per-endpoint summaries read back from the store: what ``watch`` and ``demo`` print."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from app.core.domain import Metric
from app.core.store import Store


@dataclass(frozen=True, slots=True)
class EndpointSummary:
    uri: str
    requests: int
    errors: int
    latency_ms: dict[str, float | None]
    peak_rss_mb: float | None
    failures_captured: int

    def to_json(self) -> dict:
        return asdict(self)


def summarize(store: Store, uri: str, start_ns: int | None = None) -> EndpointSummary:
    _, latency = store.values(uri, Metric.LATENCY_MS, start_ns)
    _, failures = store.values(uri, Metric.FAILURE, start_ns)
    _, rss = store.values(uri, Metric.RSS_MB, start_ns)
    if len(latency):
        p50, p95, p99 = (round(float(v), 4) for v in np.percentile(latency, [50, 95, 99]))
        quantiles: dict[str, float | None] = {"p50": p50, "p95": p95, "p99": p99}
    else:
        quantiles = {"p50": None, "p95": None, "p99": None}
    return EndpointSummary(
        uri=uri, requests=len(latency), errors=len(failures), latency_ms=quantiles,
        peak_rss_mb=round(float(rss.max()), 1) if len(rss) else None,
        failures_captured=store.count_captures(uri, failed=True, since_ns=start_ns),
    )


def format_table(summaries: list[EndpointSummary]) -> str:
    header = f"{'endpoint':<48} {'requests':>8} {'errors':>7} {'p50 ms':>8} {'p95 ms':>8} " \
             f"{'p99 ms':>8} {'peak RSS MB':>11}"
    lines = [header, "-" * len(header)]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for s in summaries:
        name = s.uri if len(s.uri) <= 48 else "…" + s.uri[-47:]
        lines.append(f"{name:<48} {s.requests:>8} {s.errors:>7} {fmt(s.latency_ms['p50']):>8} "
                     f"{fmt(s.latency_ms['p95']):>8} {fmt(s.latency_ms['p99']):>8} "
                     f"{'-' if s.peak_rss_mb is None else f'{s.peak_rss_mb:.1f}':>11}")
    return "\n".join(lines)
