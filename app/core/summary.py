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


ENDPOINT_WIDTH = 60


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
    header = f"{'endpoint':<{width}} {'requests':>8} {'failed':>7} {'p50 ms':>8} {'p95 ms':>8} " \
             f"{'p99 ms':>8} {'peak RSS MB':>11}"
    lines = [header, "-" * len(header)]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for name, s in zip(names, summaries, strict=True):
        lines.append(f"{name:<{width}} {s.requests:>8} {s.errors:>7} {fmt(s.latency_ms['p50']):>8} "
                     f"{fmt(s.latency_ms['p95']):>8} {fmt(s.latency_ms['p99']):>8} "
                     f"{'-' if s.peak_rss_mb is None else f'{s.peak_rss_mb:.1f}':>11}")
    if shared:
        lines.append(f"… = {shared} (the same on each)")
    return "\n".join(lines)
