"""A server's outage in the live window: drawn as it happens (zero requests a second, the
percentile lines broken from the second after the last request), kept as drawn once the server
is back, and the percentiles after it summarise only what came after it.

The probe's samples through an outage, as ``probes/http_model.py`` sends them:
- a request that finds the server gone: ``measure_one`` catches ``Unreachable`` and calls
  ``mark_down`` (``probes/base.py``: an ``up`` 0 stamped now), then puts the request's own
  ``latency_ms`` (stamped at its start) and ``failure``;
- each failed attempt to reach it again: ``_reconnect`` -> ``mark_down``: an ``up`` 0, after
  a backoff of 0.25 s, 0.5 s, 1 s ... (``probes/http_common.py`` ``Backoff``); no request;
- when it answers again: ``_connect`` puts an ``up`` 1, then requests go out again.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.core.domain import Batch, Metric, Sample
from app.gui.bridge import regroup
from widgets.series import CLOCK_MARGIN_S, EndpointSeries

pytestmark = pytest.mark.timeout(120)

E = "v2+http://127.0.0.1:9/models/m"
NS = 10**9
FLUSH_S = 0.05  # the recorder's flush interval (app/core/recorder.py)
FRAME_S = 0.033  # the live view's frame clock (app/gui/live_view.py)
BEFORE_MS, AFTER_MS = 50.0, 2.0  # each phase's latency, so a window mixing them shows


def _probe_samples(down_s: float, retries: list[float], back_s: float, until_s: float
                   ) -> list[tuple[float, Sample]]:
    """(put on the bus at, sample) for 20 req/s from 100 s, the server gone at ``down_s``
    (the request sent then fails), attempts to reach it at ``retries``, back at ``back_s``."""
    out: list[tuple[float, Sample]] = []

    def put(at: float, ts: float, metric: str, value: float) -> None:
        out.append((at, Sample(E, round(ts * NS), metric, value)))

    t = 100.0
    while t < down_s - 1e-9:
        put(t + BEFORE_MS / 1e3, t, Metric.LATENCY_MS, BEFORE_MS)
        t = round(t + 0.05, 6)
    put(down_s + 0.001, down_s + 0.001, Metric.UP, 0.0)  # mark_down in measure_one
    put(down_s + 0.001, down_s, Metric.LATENCY_MS, 1.0)  # ... then the request's samples
    put(down_s + 0.001, down_s, Metric.FAILURE, 1.0)
    for at in retries:
        put(at, at, Metric.UP, 0.0)  # _reconnect -> mark_down
    put(back_s, back_s, Metric.UP, 1.0)  # _connect
    t = round(back_s + 0.01, 6)
    while t < until_s:
        put(t + AFTER_MS / 1e3, t, Metric.LATENCY_MS, AFTER_MS)
        t = round(t + 0.05, 6)
    return out


def _batches(samples: list[tuple[float, Sample]]) -> list[tuple[float, Batch]]:
    """The recorder's commits: what was put on the bus in each flush interval, in bus order,
    handed to the window at the interval's end."""
    by_flush: dict[int, list[Sample]] = {}
    for at, sample in samples:
        by_flush.setdefault(math.floor(at / FLUSH_S) + 1, []).append(sample)
    return [(k * FLUSH_S, Batch(samples=tuple(s), captures=()))
            for k, s in sorted(by_flush.items())]


def _live(series: EndpointSeries, samples: list[tuple[float, Sample]], end_s: float,
          on_frame=None) -> None:
    """Feed ``series`` as the window does: each committed batch regrouped by the bridge and
    ingested metric by metric (``EndpointPanel.ingest``), a frame (``settle``) every 33 ms."""
    frame = 100.0
    for at, batch in [*_batches(samples), (end_s, Batch(samples=(), captures=()))]:
        while frame < at:
            series.settle(frame)
            if on_frame is not None:
                on_frame(frame)
            frame += FRAME_S
        for metric, (t, v) in regroup(batch).series.get(E, {}).items():
            series.extend(metric, t, v)


def _summaries(s: EndpointSeries) -> dict[str, dict[float, float]]:
    return {name: dict(zip(*(a.tolist() for a in ring.view()), strict=True))
            for name, ring in (("throughput", s.throughput), ("errors", s.errors),
                               ("p50", s.p50), ("p95", s.p95), ("p99", s.p99))}


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_an_outage_is_closed_second_by_second_as_it_happens_and_stays_as_drawn():
    retries = [103.26, 103.77, 104.78, 106.8, 110.8]  # backoff 0.25, 0.5, 1, 2, 4 s
    samples = _probe_samples(103.0, retries, back_s=114.81, until_s=118.0)
    s = EndpointSeries(raw_capacity=10_000)
    seen: list[tuple[float, dict[str, dict[float, float]]]] = []
    _live(s, samples, 118.0, on_frame=lambda now: seen.append((now, _summaries(s))))

    # While the server was still down, its outage was on screen up to the clock (less the
    # margin for samples on their way): no request, no percentile.
    now, down = [(now, snap) for now, snap in seen if now < 114.81][-1]
    last_end = max(down["throughput"])
    # (one flush and one frame late: when the window had that "up" 0 in hand)
    assert last_end >= math.floor(now - CLOCK_MARGIN_S - FLUSH_S - FRAME_S) > 111.0
    outage = [end for end in down["throughput"] if end > 104.0]
    assert outage and all(down["throughput"][end] == 0.0 for end in outage)
    assert all(math.isnan(down[p][end]) for p in ("p50", "p95", "p99") for end in outage)
    # The second the server went in: its last requests, the one that failed included.
    assert down["throughput"][104.0] == 1.0 and down["errors"][104.0] == 1.0
    assert down["p50"][104.0] == BEFORE_MS and down["p99"][104.0] == BEFORE_MS
    assert all(v == 0.0 for end, v in down["errors"].items() if end != 104.0)

    # Nothing drawn was changed later: every frame's points are the final ones.
    final = _summaries(s)
    for _, snap in seen:
        for name, points in snap.items():
            assert all(_same(final[name][end], v) for end, v in points.items()), name
    # Back: the seconds up to the "up" 1 stay empty; after it only its requests count.
    assert all(final["throughput"][end] == 0.0 and math.isnan(final["p99"][end])
               for end in np.arange(105.0, 115.0))
    assert final["throughput"][116.0] == 20.0
    assert final["p99"][115.0] == AFTER_MS and final["p99"][117.0] == AFTER_MS


def test_percentiles_after_a_short_outage_do_not_reach_back_over_it():
    """Back within the percentiles' 5 s: the first seconds after it summarise the requests
    since it, not those from before it as well."""
    samples = _probe_samples(103.0, [103.26, 103.77], back_s=104.78, until_s=108.0)
    s = EndpointSeries(raw_capacity=10_000)
    _live(s, samples, 108.0)
    final = _summaries(s)
    assert final["p50"][104.0] == BEFORE_MS  # the second it went in: before it
    assert final["throughput"][105.0] == 5.0  # 104.79 ... 104.99
    for end in (105.0, 106.0, 107.0):
        assert final["p50"][end] == AFTER_MS and final["p99"][end] == AFTER_MS, end


def test_a_request_landing_in_a_second_the_clock_closed_is_counted_there():
    """The window closes a down endpoint's seconds by its clock; should the server's "up" 1
    and first requests take longer than the margin to arrive, their seconds are counted
    again when they do (before any frame draws them), not dropped."""
    samples = _probe_samples(103.0, [103.26, 103.77, 104.78], back_s=106.2, until_s=108.0)
    late = [(at + (3.0 if at >= 106.2 else 0.0), sample) for at, sample in samples]
    s = EndpointSeries(raw_capacity=10_000)
    _live(s, late, 112.0)
    final = _summaries(s)
    assert final["throughput"][107.0] == 16.0  # 106.21 ... 106.96
    assert final["p50"][107.0] == AFTER_MS
    assert final["throughput"][106.0] == 0.0 and math.isnan(final["p50"][106.0])


def test_failures_committed_beside_the_next_seconds_request_are_counted():
    """A batch is regrouped per metric, its latencies ingested before its failures: a
    failure in the batch that also closed its second must count in it."""
    batch = Batch(samples=(
        Sample(E, 99_950_000_000, Metric.LATENCY_MS, 1.0),
        Sample(E, 99_950_000_000, Metric.FAILURE, 1.0),
        Sample(E, 100_000_000_000, Metric.LATENCY_MS, 1.0),
        Sample(E, 101_000_000_000, Metric.LATENCY_MS, 1.0)), captures=())
    s = EndpointSeries(raw_capacity=1_000)
    s.extend(Metric.LATENCY_MS, np.array([99.0]), np.array([1.0]))
    for metric, (t, v) in regroup(batch).series[E].items():
        s.extend(metric, t, v)
    final = _summaries(s)
    assert final["throughput"] == {100.0: 2.0, 101.0: 1.0}
    assert final["errors"] == {100.0: 1.0, 101.0: 0.0}


def test_the_window_draws_a_real_servers_outage_while_it_lasts(qtbot, tmp_path, demo_dir):
    """A real probe against a real server that is stopped, then started again: the window's
    frames close the outage's seconds while it lasts (old: the line stayed at its last rate
    until the server answered), and what they drew is what stays."""
    from app.gui.main_window import MainWindow
    from tests.remote.fault_server import FaultServer
    from widgets.series import LATENCY

    server = FaultServer().start()
    w = MainWindow(tmp_path / "live.db")
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    qtbot.waitExposed(w)
    try:
        probe = w.attach(f"v2+http://127.0.0.1:{server.port}/models/m"
                         f"?payload={demo_dir / 'reference.csv'}&rate=20")
        panel = w.panels[probe.endpoint]
        s = panel.series
        qtbot.waitUntil(lambda: s.throughput.n >= 2, timeout=20_000)
        server.stop()

        def drawn() -> dict[str, tuple[np.ndarray, np.ndarray]]:
            return {key: tuple(np.array(a) for a in plot._data[key])
                    for plot, keys in ((panel.rate_plot, ("throughput", "errors")),
                                       (panel.latency_plot, ("p50", "p95", "p99")))
                    for key in keys}

        def outage_drawn() -> bool:
            t, _ = drawn()["throughput"]
            last_request = s.ring(LATENCY).view()[0][-1]
            return int(np.sum(t > math.floor(last_request) + 1.0)) >= 3

        qtbot.waitUntil(outage_drawn, timeout=30_000)
        during = drawn()
        last_request = float(s.ring(LATENCY).view()[0][-1])
        server.start()
        qtbot.waitUntil(lambda: s.ring(LATENCY).view()[0][-1] > last_request + 3.0,
                        timeout=30_000)
        qtbot.wait(100)  # a frame draws what came
        after = drawn()
    finally:
        w.shutdown()
        server.stop()

    dead = during["throughput"][0] > math.floor(last_request) + 1.0
    assert np.all(during["throughput"][1][dead] == 0.0)
    assert np.all(during["errors"][1][dead] == 0.0)
    for key in ("p50", "p95", "p99"):
        t, v = during[key]
        assert np.all(np.isnan(v[t > math.floor(last_request) + 1.0])), key
        assert np.isfinite(v[t == math.floor(last_request) + 1.0]).all(), key
    for key, (t, v) in during.items():  # drawn then, the same now
        final = dict(zip(after[key][0].tolist(), after[key][1].tolist(), strict=True))
        assert all(_same(final[a], b) for a, b in zip(t.tolist(), v.tolist(), strict=True)
                   if a >= after[key][0][0]), key
