"""Long windows (1 h, all) drawn from the store: a stretch with no samples (an outage) is a
gap in the lines, as in the live view, not a straight line across it; a slow phase is not an
outage; and the legend leaves the highest values in sight."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import pytest

from app.core.domain import Sample
from app.core.store import Store

pytestmark = pytest.mark.timeout(90)

PROBED = "v2+http://127.0.0.1:9/models/wine"
SCRAPED = "prom+http://127.0.0.1:9/metrics"
NS = 10**9


def _record(path: Path) -> dict[str, tuple[float, float]]:
    """80 s of one probed endpoint (20 req/s at 20 ms; a 10 s slow phase of 2 s answers;
    a 10 s outage) and one scraped page (a scrape a second, 15 s down). Returns the phases'
    (start, end) in epoch seconds."""
    t0 = time.time_ns() - 3600 * NS  # an hour ago: history, not the live window
    samples = []

    def probed(start_s: float, end_s: float, every_s: float, latency_ms: float) -> None:
        for t in np.arange(start_s, end_s, every_s):
            samples.append(Sample(PROBED, t0 + int(t * NS), "latency_ms", latency_ms))

    probed(0, 20, 0.05, 20.0)
    probed(20, 30, 2.0, 2000.0)  # one request at a time: a 2 s answer, then the next
    probed(30, 50, 0.05, 20.0)
    probed(60, 80, 0.05, 20.0)  # 50 to 60: down, no answers
    for t in np.arange(0.0, 80.0, 1.0):
        if not 30 <= t < 45:
            ts = t0 + int(t * NS)
            samples += [Sample(SCRAPED, ts, "latency_mean_ms", 12.0),
                        Sample(SCRAPED, ts, "requests_per_s", 41.0)]
    store = Store(path)
    try:
        store.write_batch(samples, [])
    finally:
        store.close()
    s0 = t0 / NS
    return {"slow": (s0 + 20, s0 + 30), "outage": (s0 + 50, s0 + 60),
            "page down": (s0 + 30, s0 + 45)}


def _spans_across(t: np.ndarray, v: np.ndarray, start: float, end: float) -> bool:
    """Whether the line has a segment across most of [start, end] (points stand at their
    bucket's start, so the ends are a bucket or so inside)."""
    both = np.isfinite(v[:-1]) & np.isfinite(v[1:])
    margin = (end - start) / 4
    return bool(np.any(both & (t[:-1] < start + margin) & (t[1:] > end - margin)))


@pytest.fixture
def history_window(qtbot, tmp_path):
    from app.gui.main_window import MainWindow

    recorded = tmp_path / "outage.db"
    phases = _record(recorded)
    w = MainWindow(tmp_path / "other.db")
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    qtbot.waitExposed(w)
    w._open_path(recorded)  # nothing live: it shows "all"
    plot = w.panels[PROBED].latency_plot
    qtbot.waitUntil(lambda: plot.point_count("p50") > 50, timeout=10_000)
    yield w, phases
    w.shutdown()


def test_an_outage_breaks_the_history_lines_and_a_slow_phase_does_not(history_window):
    w, phases = history_window
    assert w.actions.window_box.currentText() == "all"
    mean_t, mean_v = w.panels[PROBED].latency_plot._data["p50"]
    assert not _spans_across(mean_t, mean_v, *phases["outage"])
    inside = (mean_t > phases["outage"][0]) & (mean_t < phases["outage"][1])
    assert np.any(np.isnan(mean_v[inside]))  # the break itself
    slow = (mean_t >= phases["slow"][0]) & (mean_t <= phases["slow"][1])
    assert np.all(np.isfinite(mean_v[slow])) and np.nanmax(mean_v[slow]) == 2000.0


def test_a_scraped_page_that_went_down_is_a_gap_in_its_history_lines(history_window, qtbot):
    w, phases = history_window
    panel = w.panels[SCRAPED]
    qtbot.waitUntil(lambda: panel.latency_plot.point_count("latency_mean_ms") > 50
                    and panel.rate_plot.point_count("requests_per_s") > 50, timeout=10_000)
    page_t, page_v = w.panels[SCRAPED].latency_plot._data["latency_mean_ms"]
    assert not _spans_across(page_t, page_v, *phases["page down"])
    rate_t, rate_v = w.panels[SCRAPED].rate_plot._data["requests_per_s"]
    assert not _spans_across(rate_t, rate_v, *phases["page down"])
    assert np.nanmin(rate_v) == 41.0


def test_the_legend_leaves_the_highest_latency_in_sight(history_window, qtbot):
    w, phases = history_window
    plot = w.panels[PROBED].latency_plot
    vb = plot.getPlotItem().getViewBox()
    qtbot.wait(100)  # laid out and ranged
    slow_mid = sum(phases["slow"]) / 2
    peak_y = vb.mapViewToScene(pg.Point(slow_mid, 2000.0)).y()
    assert peak_y > plot.legend.sceneBoundingRect().bottom()  # below the legend on screen
    (_, top) = vb.viewRange()[1]
    assert top > 2000.0  # and inside the plot
