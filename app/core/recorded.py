"""What a workspace holds of an endpoint no probe watches now: its counters as recorded, for
the window's endpoint list and details (a live probe counts its own; a recorded endpoint's
come from the store). Counts only, answered from the samples index, so a workspace of
millions of samples costs a scan of index ranges, not their values in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.domain import Metric
from app.core.store import Store
from app.core.summary import CPU_PERCENT, SCRAPE_MS


@dataclass(frozen=True, slots=True)
class RecordedFacts:
    """``counted``: what ``count`` counts for this kind of endpoint ("requests", "scrapes" or
    "samples"); ``failed``: requests that failed; first and last sample times (ns)."""

    count: int
    counted: str
    failed: int
    first_ns: int | None
    last_ns: int | None


def recorded_facts(store: Store, uri: str) -> RecordedFacts:
    scheme = uri.partition(":")[0]
    if scheme == "system":
        metric, counted = CPU_PERCENT, "samples"
    elif scheme.startswith("prom+"):
        metric, counted = SCRAPE_MS, "scrapes"
    else:
        metric, counted = Metric.LATENCY_MS, "requests"
    span = store.time_range(uri, metric)
    return RecordedFacts(
        count=store.count_samples(uri, metric), counted=counted,
        failed=store.count_samples(uri, Metric.FAILURE) if counted == "requests" else 0,
        first_ns=span[0] if span else None, last_ns=store.last_sample_ns(uri))
