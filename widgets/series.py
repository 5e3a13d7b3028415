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
MAX_CATCH_UP_S = 3600  # seconds summarised at most in one go
GAP_MIN_S = 1.0  # a shorter silence is jitter, not an outage worth a break in the line
GAP_FACTOR = 3.0  # a silence this many usual spacings long is an outage

# What a scraped endpoint (a Prometheus page) reports in place of our own requests: the
# server's rates and latencies, under the stable names docs/remote-probes.md lists.
REQUESTS_PER_S = "requests_per_s"
FAILURES_PER_S = "failures_per_s"
SCRAPE_MS = "scrape_ms"
UP = "up"


_SPACINGS = 1000  # spacings sampled for a series' usual one


def gapped(t: np.ndarray, v: np.ndarray, *, width_s: float = 0.0,
           counts: np.ndarray | None = None, busy_s: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """``(t, v)`` with a NaN put between two points that have an outage between them, so a
    line breaks there (LineItem draws NaN as a gap) instead of running straight across.

    ``t`` are sample times, or the starts of the buckets of width ``width_s`` that held
    ``counts`` samples each. An outage is a silence longer than ``GAP_FACTOR`` usual
    spacings, and at least ``GAP_MIN_S``: the usual spacing comes from the data, so a page
    scraped every 2 s and a model probed at 50 req/s are both judged on their own pace.
    ``busy_s``: how long each point's last request may have taken (latency), which is no
    silence: requests start one after the other, so a 2 s answer leaves 2 s between them.
    """
    t = np.asarray(t, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if len(t) < 2:
        return t, v
    dt = np.diff(t)
    # The usual spacing from at most about 1,000 evenly spread spacings: a median of all of
    # them cost a millisecond per curve per frame at 60,000 points (live store series
    # redraw whenever they grow), and spread-out ones give the same typical spacing.
    sample = dt[::max(1, len(dt) // _SPACINGS)]
    positive = sample[sample > 0]
    if not len(positive):
        positive = dt[dt > 0]
        if not len(positive):
            return t, v
    usual = float(np.median(positive))
    if counts is not None and float(np.sum(counts)) > 0:
        # Dense samples in coarse buckets: every bucket is full, so the buckets' spacing
        # says nothing; the mean time between samples does.
        usual = min(usual, (float(t[-1] - t[0]) + width_s) / float(np.sum(counts)))
    idle = dt - width_s
    if busy_s is not None:
        idle = idle - np.nan_to_num(np.asarray(busy_s, dtype=np.float64)[:-1], nan=0.0)
    breaks = np.flatnonzero(idle > max(GAP_MIN_S, GAP_FACTOR * usual))
    if not len(breaks):
        return t, v
    return (np.insert(t, breaks + 1, (t[breaks] + t[breaks + 1]) / 2),
            np.insert(v, breaks + 1, np.nan))


class CoarseRing:
    """Per-second min and max of one raw series, for windows too long to draw point by point.

    At ten minutes across a plot a pixel is already more than a second wide, so each second's
    extremes draw the same picture as every raw point, from a hundredth of the data.
    """

    def __init__(self, capacity_s: int) -> None:
        self.ring = Ring(2 * capacity_s)
        self._open: list[float] | None = None  # [second, min, max] still filling

    def extend(self, t: np.ndarray, v: np.ndarray) -> None:
        sec = np.floor(t)
        starts = np.flatnonzero(np.r_[True, sec[1:] != sec[:-1]])
        lo = np.fmin.reduceat(v, starts)
        hi = np.fmax.reduceat(v, starts)
        secs = sec[starts]
        if self._open is not None:
            if secs[0] == self._open[0]:
                lo[0] = np.fmin(lo[0], self._open[1])
                hi[0] = np.fmax(hi[0], self._open[2])
            else:
                self._close(*self._open)
        for k in range(len(secs) - 1):
            self._close(secs[k], lo[k], hi[k])
        self._open = [float(secs[-1]), float(lo[-1]), float(hi[-1])]

    def _close(self, sec: float, lo: float, hi: float) -> None:
        self.ring.extend(np.array([sec + 0.5, sec + 0.5]), np.array([lo, hi]))

    def open_second(self) -> float | None:
        return None if self._open is None else self._open[0]


class EndpointSeries:
    """Everything one endpoint's plots draw from, in seconds since the epoch."""

    def __init__(self, raw_capacity: int = RAW_CAPACITY) -> None:
        self.raw_capacity = raw_capacity
        self.metrics: dict[str, Ring] = {}
        self.coarse: dict[str, CoarseRing] = {}
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
            # Memory is only touched as it fills (np.zeros), so a slow series costs little.
            ring = self.metrics[metric] = Ring(self.raw_capacity)
        return ring

    def extend(self, metric: str, t: np.ndarray, v: np.ndarray) -> None:
        if len(t) == 0:
            return
        self.ring(metric).extend(t, v)
        coarse = self.coarse.get(metric)
        if coarse is None:
            coarse = self.coarse[metric] = CoarseRing(SLOW_CAPACITY)
        coarse.extend(np.asarray(t, dtype=np.float64), np.asarray(v, dtype=np.float64))
        self.version += 1
        if metric == LATENCY:
            if self._next_second is None:
                self._next_second = float(math.floor(t[0]))
            self._summarise(float(t[-1]))

    def extend_failures(self, t: np.ndarray, latency_ms: np.ndarray) -> None:
        if len(t):
            self.failures.extend(t, latency_ms)
            self.version += 1

    def window(self, metric: str, start_s: float, *, coarse: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
        """A series from ``start_s`` on: raw points, or per-second extremes plus the raw tail."""
        ring = self.ring(metric)
        summary = self.coarse.get(metric)
        if not coarse or summary is None or summary.open_second() is None:
            return ring.since(start_s)
        ct, cv = summary.ring.since(start_s)
        rt, rv = ring.since(max(start_s, summary.open_second()))
        return np.concatenate((ct, rt)), np.concatenate((cv, rv))

    def newest_s(self) -> float | None:
        """The time of the newest sample of any series (None before the first)."""
        times = [last[0] for ring in self.metrics.values() if (last := ring.last()) is not None]
        return max(times) if times else None

    def last(self, metric: str) -> float | None:
        """The newest value of a series, if it has a finite one."""
        ring = self.metrics.get(metric)
        last = ring.last() if ring is not None else None
        return last[1] if last is not None and math.isfinite(last[1]) else None

    def recent_mean(self, metric: str, last_s: float = 10.0) -> float | None:
        """Mean of a series over its newest ``last_s`` seconds (None when it has none)."""
        ring = self.metrics.get(metric)
        if ring is None or ring.n == 0:
            return None
        t, _ = ring.view()
        _, v = ring.since(t[-1] - last_s)
        v = v[np.isfinite(v)]
        return float(v.mean()) if len(v) else None

    def has(self, metric: str) -> bool:
        ring = self.metrics.get(metric)
        return ring is not None and ring.n > 0

    def _summarise(self, newest_s: float) -> None:
        """Close every whole second before the newest sample's second."""
        upto = math.floor(newest_s)
        assert self._next_second is not None
        if upto - self._next_second > MAX_CATCH_UP_S:
            # After a very long gap, summarise only the last hour; the gap itself stays
            # visible as a break in the lines rather than thousands of made-up zeros.
            for ring in (self.throughput, self.errors, self.p50, self.p95, self.p99):
                ring.append(self._next_second, math.nan)
            self._next_second = float(upto - MAX_CATCH_UP_S)
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
