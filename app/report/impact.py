"""What an incident cost: the span it is counted over (opening to clearing, resolve or last
observation), the requests and failures in it, and its latency against the SLO it was judged
with and against the time before it opened. Qt-free; reads the caller's Store on the caller's
thread. ``app.report.data`` puts this in the report beside the rest, and re-exports its names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.core.domain import Metric
from app.core.incident_rules import NS
from app.core.store import Store
from app.core.summary import down_seconds

# Defined here, not in data.py, because data.py imports this module: ``first_sample_in``
# narrows by it, and the report's figures (data.bucket_grid) are drawn with it.
BUCKETS = 400  # at most this many points per figure: about one per 0.4 mm of plot width


@dataclass(frozen=True, slots=True)
class Slo:
    """The SLO an incident was judged against, and the endpoint's own when the incident's rules
    overrode it: a rule may set ``slo_ms`` (see incident_rules.latency), and that is what
    tripped, so it is what the report shows and plots."""

    judged_ms: float | None  # None: no SLO at all
    endpoint_ms: float | None

    @property
    def overridden(self) -> bool:
        return self.judged_ms is not None and self.endpoint_ms is not None \
            and self.judged_ms != self.endpoint_ms


@dataclass(frozen=True, slots=True)
class Impact:
    """What the incident cost, from its opening to its end: cleared, resolved by hand, or
    (still open) the last sample. ``before_*``: the same latency quantiles before it opened,
    so "during" has something to be read against, over the span the requests there cover:
    from ``before_start_ns`` (the plotted window's start, or its first request when there
    were none in the first part of it; ``before_since`` says which) to the opening."""

    start_ns: int
    end_ns: int
    until: str  # how the span ends, for a reader: "cleared", "resolved", "last sample"
    requests: int
    failures: int
    p95_ms: float | None
    p99_ms: float | None
    before_start_ns: int
    before_p95_ms: float | None
    before_p99_ms: float | None
    down_s: float | None = None  # time the probe found the endpoint down (up 0); None: no up
    # Why "before" is shorter than the window before the opening: "recording" (its first
    # request is the endpoint's first), "gap" (no requests earlier in the window), or "".
    before_since: str = ""
    # The probe's attempts to reach the endpoint (its ``up`` samples) from opening to end, and
    # how many of them got no answer (``up`` 0); 0 and 0 for a probe that writes no ``up``.
    attempts: int = 0
    unanswered: int = 0
    # Resolved by hand after the recording ended: the span ends at the last observation
    # (``until`` "recording ended"), and this is the resolve, said beside it, never counted.
    resolved_ns: int | None = None
    # A latency incident: requests slower than the SLO it was judged with (``slo_ms``).
    over_slo: int | None = None
    slo_ms: float | None = None
    # An outage: the request rate before it, for an estimate of what was not sent while down.
    before_rate_per_s: float | None = None
    # A down incident's requests are counted from the failed one that began the outage, when
    # that came just before the opening (``_outage_start``); else from the opening.
    requests_from_ns: int | None = None

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None

    @property
    def not_sent_estimate(self) -> int | None:
        """Requests a probe did not send while it found the endpoint down, at the rate it
        sent before the incident: an estimate, and said as one."""
        if not self.down_s or not self.before_rate_per_s:
            return None
        return round(self.before_rate_per_s * self.down_s)


def first_sample_in(store: Store, uri: str, metric: str, start: int, end: int) -> int | None:
    """The first ts_ns of a series in ``[start, end)``: each pass of ``Store.history``
    narrows to the first bucket holding a sample, a four-hundredth of the one before."""
    while end > start:
        h = store.history(uri, metric, start, end, BUCKETS)
        if not len(h):
            return None
        if h.width_ns <= 1:
            return int(h.ts_ns[0])
        start, end = int(h.ts_ns[0]), min(end, int(h.ts_ns[0]) + h.width_ns)
    return None


def _quantiles(store: Store, uri: str, start: int, end: int
               ) -> tuple[float | None, float | None]:
    lat = store.sampled_values(uri, Metric.LATENCY_MS, start, end)
    if not len(lat):
        return None, None
    p95, p99 = (float(v) for v in np.percentile(lat, [95, 99]))
    return p95, p99


def observed_end(store: Store, uri: str) -> int | None:
    """The endpoint's last observation: its newest sample of any series (a down probe's
    ``up`` 0 tries included) or capture (an imported log may keep only those)."""
    ends = [t for t in (store.last_sample_ns(uri), (store.capture_span(uri) or (None, None))[1])
            if t is not None]
    return max(ends) if ends else None


def incident_end(incident: dict, resolved_ns: int | None, seen_ns: int | None
                 ) -> tuple[int, str]:
    """Where the incident's span ends, and how (``Impact.until``): at its clearing; at the
    resolve, or at the endpoint's last observation (``seen_ns``) when the recording had
    ended before it: nothing was measured between the two, so none of that time is counted
    as the incident's (a workspace resolved the morning after read as a night-long outage);
    else, still open, at the last observation."""
    opened = int(incident["opened_ns"])
    if incident["cleared_ns"]:
        return int(incident["cleared_ns"]), "cleared"
    if resolved_ns:
        if seen_ns is not None and seen_ns < resolved_ns:
            return max(opened, seen_ns), "recording ended"
        return int(resolved_ns), "resolved"
    return max(opened, int(seen_ns or opened)), "last sample"


def _outage_start(store: Store, uri: str, opened: int) -> int:
    """Where a down incident's requests are counted from: its opening, or the failed request
    just before it that began the outage. The probe stamps a request when it starts and its
    ``up`` 0 when the try ends, so the refused connection that opened an outage sat a few ms
    before the opening and was counted "before" it. A failure within a second before the
    opening, with no request that succeeded after it, is the outage's."""
    lo = opened - NS
    fail_ts, _ = store.values(uri, Metric.FAILURE, lo, opened - 1)
    if not len(fail_ts):
        return opened
    lat_ts, _ = store.values(uri, Metric.LATENCY_MS, lo, opened - 1)
    answered = np.setdiff1d(lat_ts, fail_ts)
    first = int(fail_ts[fail_ts > (answered.max() if len(answered) else lo - 1)].min(
        initial=opened))
    return min(first, opened)


def impact(store: Store, incident: dict, window_start: int, last_ns: int | None,
           resolved_ns: int | None, slo: Slo | None = None) -> Impact:
    """``last_ns``: the endpoint's last observation (``observed_end``)."""
    uri = incident["endpoint"]
    opened = int(incident["opened_ns"])
    end, until = incident_end(incident, resolved_ns, last_ns)
    down_rule = incident.get("rule") == "down"
    counted_from = _outage_start(store, uri, opened) if down_rule else opened
    requests = store.count_between(uri, Metric.LATENCY_MS, counted_from, end)
    if requests == 0 and uri.startswith("log:"):
        requests = store.count_captures_between(uri, opened, end)  # as the error-rate rule
    failures = store.count_between(uri, Metric.FAILURE, counted_from, end)
    p95, p99 = _quantiles(store, uri, opened, end)
    b95, b99 = _quantiles(store, uri, window_start, opened - 1)
    before_start, since = _before_span(store, uri, window_start, opened)
    # A probe that cannot reach its server sends no request: each try writes ``up`` 0.
    _, up = store.values(uri, Metric.UP, opened, end)
    over = judged = None
    if incident.get("rule") == "latency" and slo is not None and slo.judged_ms is not None:
        judged = slo.judged_ms
        _, lat = store.values(uri, Metric.LATENCY_MS, opened, end)
        over = int((lat > judged).sum())
    rate = None
    if down_rule and counted_from > before_start:
        before = store.count_between(uri, Metric.LATENCY_MS, before_start, counted_from - 1)
        rate = before / ((counted_from - before_start) / NS) if before else None
    return Impact(opened, end, until, requests, failures, p95, p99, before_start, b95, b99,
                  down_seconds(store, uri, opened, end, since=window_start), since,
                  attempts=len(up), unanswered=int((up == 0).sum()),
                  resolved_ns=resolved_ns if until == "recording ended" else None,
                  over_slo=over, slo_ms=judged, before_rate_per_s=rate,
                  requests_from_ns=counted_from)


def _before_span(store: Store, uri: str, window_start: int, opened: int) -> tuple[int, str]:
    """Where the requests before the opening begin, and why when that is later than the
    window's start (see ``Impact.before_since``). A steady probe's first request comes a
    fraction of its spacing after any start: within a second, the window's start is kept."""
    ever = store.time_range(uri, Metric.LATENCY_MS)
    if ever is not None and ever[0] >= window_start:  # the index answers; no pass over it
        first: int | None = ever[0] if ever[0] < opened else None
    else:
        first = first_sample_in(store, uri, Metric.LATENCY_MS, window_start, opened)
    if first is None or first - window_start <= NS:
        return window_start, ""
    return first, "recording" if ever is not None and ever[0] == first else "gap"
