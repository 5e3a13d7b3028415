"""Ring buffer, per-second summaries and the bridge's regrouping: plain numpy, no window."""

from __future__ import annotations

import numpy as np

from app.core.domain import Batch, Capture, CaptureStatus, Sample
from app.gui.bridge import regroup
from widgets.endpoint_panel import short_name
from widgets.ring import Ring
from widgets.series import EndpointSeries


def test_ring_keeps_the_newest_points_in_order_across_wraps():
    ring = Ring(7)
    seen = []
    for k in (1, 3, 5, 9, 2, 6):
        t = np.arange(len(seen), len(seen) + k, dtype=float)
        seen.extend(t)
        ring.extend(t, t * 10)
        tv, vv = ring.view()
        assert list(tv) == seen[-7:]
        assert np.array_equal(vv, tv * 10)
    assert ring.total == len(seen)
    t, _ = ring.since(seen[-3])
    assert list(t) == seen[-3:]
    assert ring.last() == (seen[-1], seen[-1] * 10)


def test_series_summarises_each_whole_second():
    s = EndpointSeries(raw_capacity=10_000)
    t = 1000.0 + np.arange(0, 3.0, 0.01)  # 100 requests/s for three seconds
    lat = np.where(np.arange(len(t)) % 10 == 0, 9.0, 1.0)
    fail_t = t[::20]
    s.extend("failure", fail_t, np.ones(len(fail_t)))
    s.extend("latency_ms", t, lat)
    s.extend("latency_ms", np.array([1003.5]), np.array([1.0]))  # closes second 1002
    _, rate = s.throughput.view()
    _, errors = s.errors.view()
    _, p50 = s.p50.view()
    _, p99 = s.p99.view()
    assert list(rate) == [100.0, 100.0, 100.0]
    assert list(errors) == [5.0, 5.0, 5.0]
    assert p50[-1] == 1.0 and p99[-1] == 9.0
    assert s.error_rate() == 0.05


def _slow_requests_at_60s(s: EndpointSeries) -> None:
    """Two minutes at 5 requests/s of 1 ms, but three of 100 ms in second 60 (1% of 30 s
    of requests, so a 30 s p99 still shows them), then one request to close the last second."""
    t = 1000.0 + np.arange(0, 120.0, 0.2)
    lat = np.where((t > 1059.9) & (t < 1060.5), 100.0, 1.0)
    for second in range(120):  # as they arrive, a batch a second
        s.extend("latency_ms", t[5 * second:5 * second + 5], lat[5 * second:5 * second + 5])
    s.extend("latency_ms", np.array([1120.0]), np.array([1.0]))


def test_a_longer_percentile_window_is_applied_to_the_seconds_already_summarised():
    """At 5 requests/s a 5 s p99 is about the slowest of 25 requests: a slow moment is a
    5 s plateau. A 30 s window is steadier; switched on, it is applied back over what the live
    views show, not only from then on."""
    s = EndpointSeries(raw_capacity=10_000)
    _slow_requests_at_60s(s)
    ends, p99 = s.p99.view()
    assert np.count_nonzero(p99 > 50) == 5  # the seconds whose 5 s reach the slow one
    assert s.percentile_requests == 25
    s.set_percentile_window(30.0)
    again, p99 = s.p99.view()
    assert list(again) == list(ends)  # the same seconds, aligned with the throughput's
    assert len(again) == len(s.throughput.view()[0])
    assert np.count_nonzero(p99 > 50) == 30
    assert s.percentile_requests == 150
    # Seconds closed from now on take the new window too.
    s.extend("latency_ms", 1120.0 + np.arange(0.2, 5.0, 0.2), np.full(24, 1.0))
    assert s.percentile_requests == 150
    s.set_percentile_window(5.0)
    assert np.count_nonzero(s.p99.view()[1] > 50) == 5


def test_a_new_percentile_window_reaches_back_only_as_far_as_the_raw_latencies_held():
    s = EndpointSeries(raw_capacity=300)  # the last 60 s of requests at 5/s
    _slow_requests_at_60s(s)
    before = s.p99.view()[1].copy()
    s.set_percentile_window(30.0)
    after = s.p99.view()[1]
    oldest = s.ring("latency_ms").view()[0][0]
    ends = s.p99.view()[0]
    kept = ends < oldest + 30.0  # their 30 s would reach before the oldest held
    assert kept.any() and (~kept).any()
    assert np.array_equal(after[kept], before[kept], equal_nan=True)  # as they were made
    assert np.all(after[~kept] == 1.0)  # the slow requests are gone from the ring


def test_regroup_splits_by_endpoint_and_metric_and_keeps_failures():
    batch = Batch(
        samples=(Sample("a:", 2_000_000_000, "latency_ms", 2.0),
                 Sample("a:", 1_000_000_000, "latency_ms", 1.0),
                 Sample("b:", 1_500_000_000, "rss_mb", 50.0)),
        captures=(Capture("a:", 2_000_000_000, 2.0, CaptureStatus.MISMATCH),
                  Capture("a:", 1_000_000_000, 1.0, CaptureStatus.OK)),
    )
    out = regroup(batch)
    t, v = out.series["a:"]["latency_ms"]
    assert list(t) == [1.0, 2.0] and list(v) == [1.0, 2.0]
    assert list(out.series["b:"]["rss_mb"][1]) == [50.0]
    ft, fl = out.failures["a:"]
    assert list(ft) == [2.0] and list(fl) == [2.0]
    assert out.sample_count == 3 and out.capture_count == 2


def test_short_names_keep_lists_readable():
    assert short_name("onnx:assets/demo/wine-v1.onnx?provider=cpu&rate=5") == "onnx: wine-v1.onnx"
    assert short_name("system:") == "system:"
    assert short_name("v2+http://h:8000/models/m") == "v2+http: h:8000/models/m"
    from widgets.endpoint_panel import short_names

    a = "onnx:m/wine-v1.onnx?provider=cpu&rate=0"
    b = "onnx:m/wine-v1.onnx?provider=cpu&payload=p.csv&rate=50"
    assert short_names([a, b, "system:"]) == {
        a: "onnx: wine-v1.onnx (rate=0)", b: "onnx: wine-v1.onnx (payload=p.csv&rate=50)",
        "system:": "system:"}  # one model probed twice: told apart, the rest stays short


def test_coarse_window_keeps_each_seconds_extremes_and_the_raw_tail():
    s = EndpointSeries(raw_capacity=100_000)
    t = 100.0 + np.arange(0, 5.5, 0.01)
    v = np.sin(t * 7.0)
    v[123] = 50.0  # one outlier must survive the summary
    for chunk in np.array_split(np.arange(len(t)), 13):  # arrives in uneven batches
        s.extend("rss_mb", t[chunk], v[chunk])
    ct, cv = s.window("rss_mb", 0.0, coarse=True)
    rt, _ = s.window("rss_mb", 0.0)
    assert len(ct) < len(rt) / 5
    assert cv.max() == 50.0 and cv.min() == v.min()
    assert ct[-1] == t[-1]  # the unfinished second is drawn raw
    assert np.all(np.diff(ct) >= 0)


def test_peak_decimation_keeps_every_columns_extremes_and_zigzags_between_them():
    from widgets.points_item import peak_decimate

    rng = np.random.default_rng(5)
    x = np.arange(20_000, dtype=np.float64) / 100.0  # 200 s at 100 Hz
    y = rng.normal(10.0, 1.0, len(x))
    y[7_321] = 95.0  # a lone spike must survive decimation
    y[12_000:12_050] = np.nan  # column 240 (120.0-120.5 s) has no value: a gap
    columns = 400
    xs, ys = peak_decimate(x, y, 0.0, 200.0, columns)
    assert len(xs) == len(ys) == 2 * columns
    pairs = ys.reshape(-1, 2)
    col = (x * (columns / 200.0)).astype(int)
    for c in (0, 1, 146, 241, 399):
        values = y[col == c]
        want = (np.nanmin(values), np.nanmax(values))
        got = tuple(pairs[c]) if c % 2 == 0 else tuple(pairs[c][::-1])
        assert got == want, c  # even columns min then max, odd ones max then min
    assert np.nanmax(ys) == 95.0
    assert np.isnan(pairs[240]).all() and np.isnan(ys).sum() == 2  # the gap stays a gap
    # The window picks the points inside it, and few points pass through untouched.
    xs, ys = peak_decimate(x, y, 10.0, 12.0, columns)
    assert xs[0] == 10.0 and xs[-1] < 12.0 and np.array_equal(ys, y[1000:1200])


def _painted_mask(qtbot, item, x_range, y_range):
    """Render ``item`` alone in a plot with no padding; True where it left colour."""
    import pyqtgraph as pg

    plot = pg.PlotWidget()
    qtbot.addWidget(plot)
    plot.resize(300, 300)
    plot.hideAxis("left")
    plot.hideAxis("bottom")
    plot.setBackground("k")
    plot.addItem(item)
    plot.setRange(xRange=x_range, yRange=y_range, padding=0)
    plot.show()
    qtbot.waitExposed(plot)
    image = plot.grab().toImage()
    pixels = np.array([[image.pixelColor(x, y).green() for x in range(image.width())]
                       for y in range(image.height())])
    return pixels > 100


def test_a_two_pixel_line_is_two_pixels_thick_at_every_slope(qtbot):
    """Wide lines are drawn as shifted one-pixel strokes (fast in Qt's raster engine): the
    result must still be a solid line two pixels thick, flat, steep or diagonal."""
    from widgets.points_item import LineItem

    line = LineItem("p99", "#00ff00", width=1.6)
    # flat, then diagonal up, then steep up, in a 100 x 100 data square
    line.setData(np.array([0.0, 30.0, 60.0, 62.0]), np.array([20.0, 20.0, 50.0, 95.0]))
    mask = _painted_mask(qtbot, line, (0, 100), (0, 100))
    h, w = mask.shape
    flat_col = mask[:, int(w * 0.15)]
    assert flat_col.sum() == 2 and np.ptp(np.flatnonzero(flat_col)) == 1  # two adjacent rows
    for y in range(int(h * 0.55), int(h * 0.75)):  # the diagonal: no row with a hole
        row = np.flatnonzero(mask[y, : int(w * 0.58)])
        assert len(row) >= 2 and np.ptp(row) == len(row) - 1, y
    steep_row = np.flatnonzero(mask[int(h * 0.2)])
    assert len(steep_row) >= 2 and np.ptp(steep_row) == len(steep_row) - 1


def test_a_cached_legend_sample_follows_its_curves_new_colour(qtbot):
    """Legend samples are cached as pixmaps (they would repaint on every frame otherwise);
    a colour change, as a theme switch makes, must still reach the screen."""
    from PySide6.QtCore import QRectF

    from widgets.plots import SeriesPlotWidget
    from widgets.theme import DARK

    plot = SeriesPlotWidget("Memory", "MB", DARK)
    qtbot.addWidget(plot)
    plot.resize(400, 200)
    plot.add_curve("rss", "rss", "#00ff00", width=2)
    plot.set_curve("rss", np.arange(10.0), np.arange(10.0))
    plot.show()
    qtbot.waitExposed(plot)

    def swatch_colours() -> set[tuple[int, int, int]]:
        sample = plot.legend_sample("rss")
        rect = sample.mapRectToScene(QRectF(sample.boundingRect()))
        view_rect = plot.mapFromScene(rect).boundingRect()
        image = plot.grab(view_rect).toImage()
        return {image.pixelColor(x, y).getRgb()[:3]
                for x in range(image.width()) for y in range(image.height())}

    qtbot.wait(50)  # painted once: the swatch is now a cached pixmap
    assert (0, 255, 0) in swatch_colours()
    plot.set_curve_color("rss", "#ff00ff")
    qtbot.wait(50)
    colours = swatch_colours()
    assert (255, 0, 255) in colours and (0, 255, 0) not in colours


def test_a_down_endpoints_header_does_not_show_its_last_throughput(qtbot):
    from widgets.endpoint_panel import EndpointPanel
    from widgets.theme import theme_named

    panel = EndpointPanel("v2+http://h:1/models/m", "v2+http", theme_named("dark"))
    qtbot.addWidget(panel)
    t = 1_000.0 + np.arange(0, 5, 0.05)
    panel.series.extend("latency_ms", t, np.full(len(t), 3.0))
    panel.set_state("up")
    panel.redraw(t[0])
    assert "req/s" in panel.stats.text()
    # Rolling quantiles of a steady 3 ms series: every one reads 3 ms.
    assert "p50/p95/p99 3.00/3.00/3.00 ms" in panel.stats.text()
    # ...of how many requests: the four whole seconds closed so far at 20 a second (a p99 of
    # a few requests is their slowest one, and the header says how few).
    assert "ms of 80" in panel.stats.text()
    panel.set_state("down", "connection refused")  # no more answers from here on
    assert panel.stats.text().startswith("down: no answers")
    assert "req/s" not in panel.stats.text() and "p95" not in panel.stats.text()
    panel.set_state("up")
    assert "req/s" in panel.stats.text()


def test_the_legend_lists_only_the_curves_a_view_draws(qtbot):
    from widgets.endpoint_panel import EndpointPanel
    from widgets.theme import theme_named

    panel = EndpointPanel("onnx:m.onnx", "onnx", theme_named("dark"))
    qtbot.addWidget(panel)

    def listed() -> list[str]:
        return [label.text for _, label in panel.latency_plot.legend.items]

    live = listed()
    assert {"p95", "p99", "failed"} <= set(live)
    panel.set_mode("history")  # means and maxima of buckets: no percentiles, no failure dots
    assert listed() == ["max", "mean"]
    panel.set_mode("live")
    assert sorted(listed()) == sorted(live)


def test_history_throughput_reads_the_recorded_rate_even_when_buckets_are_finer(qtbot,
                                                                               tmp_path):
    """20 s at 50 req/s with a 10% failure rate, drawn from the store's 1,000 buckets of 20 ms:
    most buckets hold no request or one, yet the plotted rate is the recorded 50 req/s and
    the error rate 5/s, not 0, 50 or 100 by turns."""
    from app.core.store import Store
    from widgets.endpoint_panel import EndpointPanel
    from widgets.theme import theme_named

    endpoint, t0 = "onnx:m.onnx", 1_700_000_000 * 10**9
    jitter = np.random.default_rng(3).uniform(-8e6, 8e6, 1000).astype(np.int64)
    ts = t0 + np.arange(1000, dtype=np.int64) * 20_000_000 + jitter  # 50 req/s, jittered
    samples = [Sample(endpoint, int(t), "latency_ms", 1.0) for t in ts]
    samples += [Sample(endpoint, int(t), "failure", 1.0) for t in ts[::10]]
    store = Store(tmp_path / "w.db")
    try:
        store.write_batch(samples, [])
        span = (t0 - 10_000_000, int(ts[-1]) + 10_000_000)
        history = {m: store.history(endpoint, m, span[0], span[1] + 1, 1000)
                   for m in ("latency_ms", "failure")}
    finally:
        store.close()
    assert np.median(np.diff(history["latency_ms"].ts_ns)) < 25_000_000  # buckets of ~20 ms

    panel = EndpointPanel(endpoint, "onnx", theme_named("dark"))
    qtbot.addWidget(panel)
    panel.set_history(history)
    _, rate = panel.rate_plot._data["throughput"]
    _, errors = panel.rate_plot._data["errors"]
    assert len(rate) == len(errors) >= 19  # a point a second, on one grid
    assert np.all(np.abs(rate - 50) <= 5), rate
    assert np.all(np.abs(errors - 5) <= 2), errors


def test_a_steady_line_at_the_top_stays_clear_of_the_legend(qtbot):
    import pyqtgraph as pg

    from widgets.plots import SeriesPlotWidget
    from widgets.theme import theme_named

    plot = SeriesPlotWidget("Throughput & errors", "/s", theme_named("dark"))
    qtbot.addWidget(plot)
    plot.add_curve("throughput", "requests", "#4a90d9")
    plot.add_curve("errors", "failed", "#e05050")
    plot.resize(420, 140)  # a dashboard panel's small plot
    plot.show()
    qtbot.waitExposed(plot)
    t = np.arange(0.0, 60.0, 1.0)
    plot.set_curve("throughput", t, np.full(t.size, 50.0))
    plot.set_curve("errors", t, np.full(t.size, 5.0))
    plot.set_view(0.0, 60.0)
    vb = plot.getPlotItem().getViewBox()
    line_y = vb.mapViewToScene(pg.Point(30.0, 50.0)).y()
    legend_bottom = plot.legend.sceneBoundingRect().bottom()
    assert line_y > legend_bottom  # below it on screen: the line is not hidden behind it


def test_a_model_server_s_panel_has_no_empty_memory_plot(qtbot):
    """A request probe learns nothing of a remote server's memory: its Memory plot sat empty
    on a 0-1 axis, a third of the row. A local model keeps one from the start."""
    from widgets.endpoint_panel import EndpointPanel
    from widgets.theme import theme_named

    remote = EndpointPanel("v2+http://h:1/models/m", "v2+http", theme_named("dark"))
    local = EndpointPanel("onnx:m.onnx", "onnx", theme_named("dark"))
    qtbot.addWidget(remote)
    qtbot.addWidget(local)
    assert remote.memory_plot is None
    assert [p.title for p in remote.plots()] == ["Latency", "Throughput & errors"]
    assert local.memory_plot is not None and local.memory_plot in local.plots()


def test_the_endpoint_list_counts_system_samples_as_samples_not_requests(qtbot):
    """``system:`` sends no request: its count (one per sample of this machine) read as
    "Requests 170" beside models' real requests, while watch summarised it with 0 requests."""
    from widgets.endpoint_list import EndpointListWidget
    from widgets.theme import theme_named

    listing = EndpointListWidget(theme_named("dark"))
    qtbot.addWidget(listing)
    listing.set_endpoint("onnx:m.onnx", state="up", kind="onnx", requests=4286)
    listing.set_endpoint("system:", state="up", kind="system", provider="psutil", requests=170)
    listing.set_endpoint("prom+http://h:1/metrics", state="up", kind="prom+http", requests=12)
    listing.set_endpoint("system:?rate=5", state="stopped", kind="system")  # nothing counted
    assert listing.row_texts("onnx:m.onnx")["Requests"] == "4,286"
    assert listing.row_texts("system:")["Requests"] == "170 samples"
    assert "sends no requests" in listing._items["system:"].toolTip(4)
    assert listing.row_texts("prom+http://h:1/metrics")["Requests"] == "12 scrapes"
    assert listing.row_texts("system:?rate=5")["Requests"] == ""
    listing.set_state("system:", "paused")  # today's set_state leaves the count alone
    assert listing.row_texts("system:")["Requests"] == "170 samples"
