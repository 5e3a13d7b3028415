"""Per-endpoint live data: raw rings plus per-second throughput, error rate, percentiles.

Thread: GUI only. Fed in batches; derived series are computed once per completed second,
not on every repaint, so drawing stays cheap however fast samples arrive.
"""

from __future__ import annotations

import math

import numpy as np

from widgets.ring import Ring

LATENCY = "latency_ms"
FAILURE = "failure"
RAW_CAPACITY = 360_000  # one hour at 100 requests/s
SLOW_CAPACITY = 36_000  # ten hours of 1 Hz series
PERCENTILE_WINDOW_S = 5.0  # the rolling window each p50/p95/p99 point summarises
MAX_CATCH_UP_S = 600  # longer gaps (a paused probe) leave a break instead of zeros


class EndpointSeries:
    """Everything one endpoint's plots draw from, in seconds since the epoch."""

    def __init__(self, raw_capacity: int = RAW_CAPACITY) -> None:
        self.raw_capacity = raw_capacity
        self.metrics: dict[str, Ring] = {}
        self.failures = Ring(raw_capacity // 4 or 1)  # (time, latency ms) of failed requests
        self.throughput = Ring(SLOW_CAPACITY)  # requests/s, one point per second
        self.errors = Ring(SLOW_CAPACITY)  # failed requests/s
        self.p50 = Ring(SLOW_CAPACITY)
        self.p95 = Ring(SLOW_CAPACITY)
        self.p99 = Ring(SLOW_CAPACITY)
        self._next_second: float | None = None  # first second not yet summarised
        self.version = 0  # bumped on every change; plots redraw only when it moved

    def ring(self, metric: str) -> Ring:
        ring = self.metrics.get(metric)
        if ring is None:
            big = metric in (LATENCY, FAILURE)
            ring = self.metrics[metric] = Ring(self.raw_capacity if big else SLOW_CAPACITY)
        return ring

    def extend(self, metric: str, t: np.ndarray, v: np.ndarray) -> None:
        if len(t) == 0:
            return
        self.ring(metric).extend(t, v)
        self.version += 1
        if metric == LATENCY:
            if self._next_second is None:
                self._next_second = float(math.floor(t[0]))
            self._summarise(float(t[-1]))

    def extend_failures(self, t: np.ndarray, latency_ms: np.ndarray) -> None:
        if len(t):
            self.failures.extend(t, latency_ms)
            self.version += 1

    def has(self, metric: str) -> bool:
        ring = self.metrics.get(metric)
        return ring is not None and ring.n > 0

    def _summarise(self, newest_s: float) -> None:
        """Close every whole second before the newest sample's second."""
        upto = math.floor(newest_s)
        assert self._next_second is not None
        if upto - self._next_second > MAX_CATCH_UP_S:
            for ring in (self.throughput, self.errors, self.p50, self.p95, self.p99):
                ring.append(self._next_second, math.nan)  # a visible gap, not made-up zeros
            self._next_second = float(upto - 1)
        lat_t, lat_v = self.ring(LATENCY).since(self._next_second - PERCENTILE_WINDOW_S)
        fail_t, _ = self.ring(FAILURE).since(self._next_second)
        seconds = np.arange(self._next_second, upto, 1.0)
        if len(seconds) == 0:
            return
        ends = seconds + 1.0
        counts = np.diff(np.searchsorted(lat_t, np.append(seconds[:1], ends)))
        fails = np.diff(np.searchsorted(fail_t, np.append(seconds[:1], ends)))
        self.throughput.extend(ends, counts.astype(float))
        self.errors.extend(ends, fails.astype(float))
        lo = np.searchsorted(lat_t, ends - PERCENTILE_WINDOW_S)
        hi = np.searchsorted(lat_t, ends)
        pct = np.full((len(ends), 3), np.nan)
        for k in range(len(ends)):
            if hi[k] > lo[k]:
                pct[k] = np.percentile(lat_v[lo[k]:hi[k]], (50, 95, 99))
        self.p50.extend(ends, pct[:, 0])
        self.p95.extend(ends, pct[:, 1])
        self.p99.extend(ends, pct[:, 2])
        self._next_second = float(upto)

    def error_rate(self, last_s: float = 10.0) -> float | None:
        """Share of failed requests over the newest ``last_s`` summarised seconds."""
        t, n = self.throughput.view()
        if len(t) == 0:
            return None
        _, f = self.errors.since(t[-1] - last_s)
        _, n = self.throughput.since(t[-1] - last_s)
        total = float(np.nansum(n))
        return float(np.nansum(f)) / total if total else None
