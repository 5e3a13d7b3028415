"""Per-endpoint live data: raw rings plus per-second throughput, error rate, percentiles.

Thread: GUI only. Fed in batches; derived series are computed once per completed second,
not on every repaint, so drawing stays cheap however fast samples arrive.

A second is closed (summarised, and from then on drawn as it will stay) once every request
that started in it has come in. A probe sends one request at a time, so a request's latency
sample proves it for the seconds before it; while a server is down no request comes to say
so, and the probe's ``up`` samples do instead (``probes/base.py`` ``mark_down`` sends an
``up`` 0 on every failed attempt to reach it, ``probes/http_model.py`` ``_connect`` an
``up`` 1 when it is back, before the next request). An outage is then closed second by
second as it happens, by the clock (``settle``): zero requests a second, and no percentile,
which would otherwise summarise the requests from before it.
"""

from __future__ import annotations

import math

import numpy as np

from widgets.ring import Ring

LATENCY = "latency_ms"
FAILURE = "failure"
RAW_CAPACITY = 360_000  # one hour at 100 requests/s
SLOW_CAPACITY = 36_000  # ten hours of 1 Hz series
PERCENTILE_WINDOW_S = 5.0  # the rolling window each p50/p95/p99 point summarises, at first
# What View > Percentile window offers: at 5 requests a second a 5 s p99 is the slowest of
# 25 requests and jumps about; a longer window is steadier and slower to show a change.
PERCENTILE_WINDOWS_S = (5.0, 15.0, 30.0, 60.0)
RESUMMARISE_S = 600  # a new window is applied this far back: the longest live view
MAX_CATCH_UP_S = 3600  # seconds summarised at most in one go
GAP_MIN_S = 1.0  # a shorter silence is jitter, not an outage worth a break in the line
GAP_FACTOR = 3.0  # a silence this many usual spacings long is an outage
# How far behind the clock a down endpoint's seconds close: more than an ``up`` sample takes
# from the probe through the recorder to the window, so the next request, should the server
# be back, is not in a second already closed.
CLOCK_MARGIN_S = 1.0
# How long after its newest ``up`` 0 a down endpoint's seconds go on closing by the clock:
# the probe tries again at least this often while it is down (its backoff tops out at 5 s,
# plus a health check), so a probe that stopped trying (detached, paused) is not drawn as an
# outage that goes on.
DOWN_RETRY_S = 15.0
MAX_REOPEN_S = 60  # a sample this much later than its second's close is no longer recounted

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
        self.percentile_window_s = PERCENTILE_WINDOW_S
        # How many requests the newest p50/p95/p99 summarise: at 5 requests a second a p99
        # of 25 is the slowest one, and the header says so.
        self.percentile_requests = 0
        self.version = 0  # bumped on every change; plots redraw only when it moved
        # What the ``up`` samples told so far (see the module's docstring).
        self._up_read = 0  # up samples read (the ring's total)
        self._last_up: tuple[float, float] | None = None  # the newest read: (time, value)
        self._closable_s = -math.inf  # every request started before this has come in
        # While the probe is down and trying again: its newest ``up`` 0 and the clock when
        # ``settle`` first saw it (None until then), which the clock closes seconds from.
        self._down: tuple[float, float | None] | None = None
        # Outages as [first second with no request, when the probe was back (inf: not yet)):
        # no percentile inside, none after that reaches back over it.
        self._gaps: list[list[float]] = []

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
            closed = self._next_second
            self._reopen(float(t[0]))
            self._read_up()
            if self._down is not None and t[-1] > self._down[0]:
                self._back_up(t)
            self._summarise(max(float(t[-1]), self._closable_s, closed))
        elif metric == FAILURE and self._next_second is not None:
            # A batch hands its requests' latencies over before their failures (the bus's
            # order), and may close their seconds before these come: count them again.
            closed = self._next_second
            if self._reopen(float(t[0])):
                self._summarise(closed)

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

    def settle(self, now_s: float) -> None:
        """Close what the ``up`` samples and the clock say is over; call once a frame.

        While the probe is down and trying again, no request is under way, so the seconds
        of the outage close as the clock passes them (``CLOCK_MARGIN_S`` behind it, counted
        from when its newest ``up`` 0 reached the window, not from that sample's own stamp,
        which may come from another machine's clock). Work: the ``up`` samples new since the
        last call and the seconds closed now, nothing per point held.
        """
        if self._next_second is None:
            return  # no request yet: nothing to summarise
        self._read_up()
        bound = self._closable_s
        if self._down is not None:
            stamp, seen = self._down
            if seen is None:
                self._down = (stamp, now_s)
                seen = now_s
            bound = max(bound, stamp + min(now_s - seen - CLOCK_MARGIN_S, DOWN_RETRY_S))
        if bound > self._next_second:
            self._summarise(bound)

    def _back_up(self, t: np.ndarray) -> None:
        """Requests again with no ``up`` 1 before them (a probe that sends none): the
        outage ended at the first; the clock must not close seconds one may still be in."""
        assert self._down is not None
        first = float(t[int(np.searchsorted(t, self._down[0], side="right"))])
        if self._gaps and self._gaps[-1][1] == math.inf:
            self._gaps[-1][1] = first
        self._down = None

    def _read_up(self) -> None:
        """Learn from the ``up`` samples new since the last call (a few a second at most)."""
        up = self.metrics.get(UP)
        if up is None or up.total == self._up_read:
            return
        fresh = min(up.total - self._up_read, up.n)
        self._up_read = up.total
        up_t, up_v = up.view()
        lat = self.metrics.get(LATENCY)
        lat_t = lat.view()[0] if lat is not None else np.empty(0)
        for stamp, value in zip(up_t[-fresh:].tolist(), up_v[-fresh:].tolist(), strict=True):
            previous, self._last_up = self._last_up, (stamp, value)
            if value > 0:
                # Connected (again): nothing was under way, and the outage ends here.
                self._closable_s = max(self._closable_s, stamp)
                if self._gaps and self._gaps[-1][1] == math.inf:
                    self._gaps[-1][1] = stamp
                self._down = None
                continue
            if previous is None or previous[1] > 0:
                # The first ``up`` 0 may come from the request that found the server gone
                # (``measure_one``), whose own samples follow it: it proves nothing yet.
                continue
            i, j = np.searchsorted(lat_t, (previous[0], stamp), side="right")
            if j > i:
                continue  # requests between the two: not one outage
            # A second failed attempt with no request between: the probe is trying again
            # and sends nothing meanwhile; every request before this one has come in.
            self._closable_s = max(self._closable_s, stamp)
            self._down = (stamp, None)
            if not (self._gaps and self._gaps[-1][1] == math.inf):
                # From the second after the last request's (the one that failed, if any).
                start = math.floor(lat_t[i - 1]) + 1.0 if i else math.floor(previous[0])
                self._gaps.append([float(start), math.inf])
        # Kept as long as a summary may be worked out again (a late sample, a new window).
        keep_from = ((self._next_second or 0.0) - max(PERCENTILE_WINDOWS_S)
                     - max(MAX_REOPEN_S, RESUMMARISE_S))
        self._gaps = [g for g in self._gaps if g[1] > keep_from]

    def _reopen(self, first_s: float) -> bool:
        """Take back the summaries of the seconds from ``first_s``'s on, when a sample of one
        came after it was closed; True if any was (the caller closes them again)."""
        assert self._next_second is not None
        second = max(math.floor(first_s), self._next_second - MAX_REOPEN_S)
        if second >= self._next_second:
            return False
        ends, _ = self.throughput.view()
        k = len(ends) - int(np.searchsorted(ends, second + 1.0, side="left"))
        for ring in (self.throughput, self.errors, self.p50, self.p95, self.p99):
            ring.drop_newest(k)
        self._next_second = float(second)
        return True

    def _summarise(self, newest_s: float) -> None:
        """Close every whole second before the one ``newest_s`` falls in."""
        upto = math.floor(newest_s)
        assert self._next_second is not None
        if upto <= self._next_second:
            return
        if upto - self._next_second > MAX_CATCH_UP_S:
            # After a very long gap, summarise only the last hour; the gap itself stays
            # visible as a break in the lines rather than thousands of made-up zeros.
            for ring in (self.throughput, self.errors, self.p50, self.p95, self.p99):
                ring.append(self._next_second, math.nan)
            self._next_second = float(upto - MAX_CATCH_UP_S)
        lat_t = self.ring(LATENCY).since(self._next_second)[0]
        fail_t, _ = self.ring(FAILURE).since(self._next_second)
        seconds = np.arange(self._next_second, upto, 1.0)
        ends = seconds + 1.0
        counts = np.diff(np.searchsorted(lat_t, np.append(seconds[:1], ends)))
        fails = np.diff(np.searchsorted(fail_t, np.append(seconds[:1], ends)))
        self.throughput.extend(ends, counts.astype(float))
        self.errors.extend(ends, fails.astype(float))
        self._extend_percentiles(ends)
        self._next_second = float(upto)
        self.version += 1

    def _extend_percentiles(self, ends: np.ndarray) -> None:
        """p50/p95/p99 of the requests in the window before each of ``ends``."""
        window = self.percentile_window_s
        lat_t, lat_v = self.ring(LATENCY).since(float(ends[0]) - window)
        starts = ends - window
        for gap_from, back_at in self._gaps:
            # Not into an outage, nor after it back over it: a second there summarises
            # only what came after it (none while it lasts).
            starts = np.where(ends > gap_from, np.maximum(starts, back_at), starts)
        lo = np.searchsorted(lat_t, starts)
        hi = np.searchsorted(lat_t, ends)
        pct = np.full((len(ends), 3), np.nan)
        for k in range(len(ends)):
            if hi[k] > lo[k]:
                pct[k] = np.percentile(lat_v[lo[k]:hi[k]], (50, 95, 99))
        self.p50.extend(ends, pct[:, 0])
        self.p95.extend(ends, pct[:, 1])
        self.p99.extend(ends, pct[:, 2])
        self.percentile_requests = int(hi[-1] - lo[-1])

    def set_percentile_window(self, window_s: float) -> None:
        """Summarise p50/p95/p99 over ``window_s`` from now on, and again over the last
        ``RESUMMARISE_S`` seconds, which the live views show (as far back as the raw
        latencies still reach: older points keep the window they were made with)."""
        if window_s == self.percentile_window_s:
            return
        self.percentile_window_s = window_s
        ends, _ = self.p50.view()
        if not len(ends):
            return
        held = self.ring(LATENCY)
        oldest = held.view()[0][:1]
        reach = float(oldest[0]) if held.total > held.n and len(oldest) else -math.inf
        first = max(float(ends[-1]) - RESUMMARISE_S, reach + window_s)
        again = ends[np.searchsorted(ends, first):].copy()
        if not len(again):
            return
        for ring in (self.p50, self.p95, self.p99):
            ring.drop_newest(len(again))
        self._extend_percentiles(again)
        self.version += 1

    def error_rate(self, last_s: float = 10.0) -> float | None:
        """Share of failed requests over the newest ``last_s`` summarised seconds."""
        t, n = self.throughput.view()
        if len(t) == 0:
            return None
        _, f = self.errors.since(t[-1] - last_s)
        _, n = self.throughput.since(t[-1] - last_s)
        total = float(np.nansum(n))
        return float(np.nansum(f)) / total if total else None
