"""The View menu's options for the live panels: Taller/Shorter panels (many endpoints in
sight at once on a small screen) and the percentile window."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.core.demo import model_path
from app.core.domain import Sample
from app.core.store import Store
from app.gui.main_window import MainWindow
from app.gui.settings import Settings
from widgets.endpoint_panel import DEFAULT_PANEL_HEIGHT_PX, PANEL_HEIGHTS_PX

pytestmark = pytest.mark.timeout(120)


def _attach_models(window: MainWindow, rates: range) -> list[str]:
    return [window.attach(f"onnx:{model_path('wine-v1')}?provider=cpu&rate={rate}").endpoint
            for rate in rates]


def _wholly_in_sight(window: MainWindow) -> int:
    return sum(panel.visibleRegion().boundingRect().height() == panel.height()
               for panel in window.panels.values())


def test_shorter_panels_put_more_endpoints_in_sight_at_1280x800(window, qtbot):
    window.resize(1280, 800)
    endpoints = _attach_models(window, range(5, 13))
    qtbot.waitUntil(lambda: _wholly_in_sight(window) > 0, timeout=5_000)
    before = _wholly_in_sight(window)
    for _ in range(2):  # Ctrl+- twice, as a user steps down to the shortest
        qtbot.keyClick(window, Qt.Key.Key_Minus, Qt.KeyboardModifier.ControlModifier)
    shortest = PANEL_HEIGHTS_PX[0]
    qtbot.waitUntil(lambda: all(window.panels[e].height() == shortest for e in endpoints),
                    timeout=5_000)
    qtbot.waitUntil(lambda: _wholly_in_sight(window) >= 2 * before, timeout=5_000)
    panel = window.panels[endpoints[0]]
    # Compact: a legend would cover most of a plot this short; the hover still names curves.
    assert not panel.latency_plot.legend.isVisible()
    assert panel.latency_plot.minimumHeight() < 140
    assert "120 px" in window.statusBar().currentMessage()


def test_the_height_is_kept_for_new_panels_and_the_next_window(window, qtbot,
                                                              workspace: Path):
    first = _attach_models(window, range(5, 6))[0]
    window.step_panel_height(1)
    taller = PANEL_HEIGHTS_PX[PANEL_HEIGHTS_PX.index(DEFAULT_PANEL_HEIGHT_PX) + 1]
    assert window.panels[first].height() == taller
    later = _attach_models(window, range(6, 7))[0]
    qtbot.waitUntil(lambda: window.panels[later].height() == taller, timeout=5_000)
    assert window.panels[later].latency_plot.legend.isVisible()  # not compact
    for _ in range(len(PANEL_HEIGHTS_PX) + 2):  # stops at the tallest
        window.step_panel_height(1)
    assert window.live.panel_height_px == PANEL_HEIGHTS_PX[-1]
    window.close()
    assert Settings().panel_height(0) == PANEL_HEIGHTS_PX[-1]
    again = MainWindow(workspace)
    qtbot.addWidget(again)
    try:
        assert again.live.panel_height_px == PANEL_HEIGHTS_PX[-1]
        again.step_panel_height(0)  # Ctrl+0: the default, a least height again
        assert again.live.panel_height_px == DEFAULT_PANEL_HEIGHT_PX
        assert Settings().panel_height(0) == DEFAULT_PANEL_HEIGHT_PX
    finally:
        again.shutdown()


@pytest.mark.parametrize(("stored", "taken"), [(5, PANEL_HEIGHTS_PX[0]),
                                               ("tall", DEFAULT_PANEL_HEIGHT_PX),
                                               (10_000, PANEL_HEIGHTS_PX[-1])])
def test_a_hand_edited_height_is_taken_as_the_nearest_step(qtbot, workspace: Path,
                                                           stored, taken):
    Settings().q.setValue("panel_height_px", stored)
    window = MainWindow(workspace)
    qtbot.addWidget(window)
    try:
        assert window.live.panel_height_px == taken
    finally:
        window.shutdown()


def test_the_percentile_window_is_chosen_from_the_view_menu_and_kept(window, qtbot,
                                                                    workspace: Path):
    endpoint = _attach_models(window, range(40, 41))[0]
    panel = window.panels[endpoint]
    qtbot.waitUntil(lambda: " in 5 s" in panel.stats.text(), timeout=10_000)
    menu = next(a.menu() for a in window.actions.view_menu.actions()
                if a.menu() is not None and "Percentile" in a.text())
    choice = next(a for a in menu.actions() if a.text() == "30 s")
    choice.trigger()
    assert panel.series.percentile_window_s == 30.0
    assert " in 30 s" in panel.stats.text()  # at once, not at the next second
    later = _attach_models(window, range(41, 42))[0]
    assert window.panels[later].series.percentile_window_s == 30.0
    window.close()
    assert Settings().percentile_window(0) == 30.0
    again = MainWindow(workspace)
    qtbot.addWidget(again)
    try:
        assert again.live.percentile_window_s == 30.0
        assert again.actions.percentile_windows[30.0].isChecked()
    finally:
        again.shutdown()


def _overlay_data(window: MainWindow, endpoint: str) -> tuple | None:
    return window.live.overlay.plot.curve_data(endpoint)


def test_the_overlay_draws_one_figure_of_each_ticked_endpoint_as_their_panels_do(window,
                                                                               qtbot):
    window.resize(1280, 700)
    first, second, third = (
        window.attach(f"onnx:{model_path(m)}?provider=cpu&rate=20").endpoint
        for m in ("wine-v1", "wine-v2", "wine-v3"))
    qtbot.keyClick(window, Qt.Key.Key_O,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    overlay = window.live.overlay
    assert overlay is not None and overlay.isVisible() and window.actions.overlay.isChecked()
    assert overlay.chosen() == [first, second]  # the first two, until the user picks
    menu = {a.text(): a for a in overlay.endpoints_menu.actions()}
    assert set(menu) == {"onnx: wine-v1.onnx", "onnx: wine-v2.onnx", "onnx: wine-v3.onnx"}
    menu["onnx: wine-v3.onnx"].trigger()  # ticked
    menu["onnx: wine-v1.onnx"].trigger()  # unticked
    assert overlay.chosen() == [second, third]
    assert _overlay_data(window, first) is None and first not in overlay.plot.curves
    # The third panel is below the fold at this size: drawn anyway, for the overlay.
    qtbot.wait(200)  # past the scroll that brings a newly attached panel into view
    window.live.verticalScrollBar().setValue(0)
    qtbot.waitUntil(lambda: window.panels[third].visibleRegion().isEmpty(), timeout=5_000)
    seen = len((_overlay_data(window, third) or ((),))[0])
    qtbot.waitUntil(lambda: len((_overlay_data(window, third) or ((),))[0]) >= seen + 3
                    and len((_overlay_data(window, second) or ((),))[0]) >= 3, timeout=15_000)
    assert window.panels[third].visibleRegion().isEmpty()
    for endpoint in (second, third):
        drawn = window.panels[endpoint].latency_plot.curve_data("p95")
        assert np.array_equal(_overlay_data(window, endpoint)[1], drawn[1], equal_nan=True)
    overlay.figure_box.setCurrentText("failed/s")
    qtbot.waitUntil(lambda: np.array_equal(
        _overlay_data(window, third)[1],
        window.panels[third].rate_plot.curve_data("errors")[1]), timeout=5_000)
    assert overlay.plot.title == "Failed requests"
    window.set_time_window("all")  # history: a mean a bucket, no percentiles
    overlay.figure_box.setCurrentText("p99 latency")
    assert overlay.plot.title == "mean latency" and "live only" in overlay.note.text()
    qtbot.waitUntil(lambda: len((_overlay_data(window, third) or ((),))[0]) > 0
                    and np.array_equal(_overlay_data(window, third)[1], window.panels[
                        third].latency_plot.curve_data("p50")[1], equal_nan=True),
                    timeout=10_000)
    qtbot.keyClick(overlay, Qt.Key.Key_Escape)  # or its ✕
    assert not overlay.isVisible() and not window.actions.overlay.isChecked()
    assert overlay.plot not in window.live.x_link.plots  # costs nothing while hidden


def test_plots_out_of_sight_catch_up_when_scrolled_to_and_when_the_view_freezes(window,
                                                                               qtbot):
    """Live frames move only the plots in sight (with ten endpoints, moving all of them was
    most of a frame's work); one scrolled to, or any when the view freezes, takes the live
    range at once."""
    window.resize(1280, 700)
    endpoints = _attach_models(window, range(5, 11))
    qtbot.wait(200)  # past the scroll to the newest panel
    window.live.verticalScrollBar().setValue(0)
    last = window.panels[endpoints[-1]].latency_plot

    def x_range(plot) -> tuple[float, float]:
        return tuple(plot.getViewBox().viewRange()[0])

    top = window.panels[endpoints[0]].latency_plot
    qtbot.waitUntil(lambda: not last.in_sight() and x_range(top)[1] - x_range(last)[1] > 0.5,
                    timeout=5_000)  # left behind while out of sight
    window.live.ensureWidgetVisible(window.panels[endpoints[-1]])
    qtbot.waitUntil(lambda: last.in_sight()
                    and abs(x_range(top)[1] - x_range(last)[1]) < 0.2, timeout=2_000)
    window.live.verticalScrollBar().setValue(0)
    qtbot.waitUntil(lambda: not last.in_sight(), timeout=2_000)
    qtbot.wait(700)
    window.set_live_paused(True)  # Space: every plot on the frozen range
    frozen = x_range(top)
    for endpoint in endpoints:
        for plot in window.panels[endpoint].plots():
            assert x_range(plot) == pytest.approx(frozen, abs=1e-6)


def test_what_the_window_holds_is_left_out_of_full_collections_until_it_closes(qtbot,
                                                                             workspace: Path):
    """A full collection scanned every object the window holds (some 260,000: 100-160 ms of
    frozen window every few minutes); they are frozen once it is up, and given back to the
    collector when it closes, so a closed window's cycles are still collected."""
    import gc

    window = MainWindow(workspace)
    qtbot.addWidget(window)
    try:
        assert gc.get_freeze_count() > 10_000
    finally:
        window.shutdown()
    assert gc.get_freeze_count() == 0


def test_pausing_draws_every_panel_at_that_moment_in_sight_or_not(window, qtbot):
    """Panels out of sight are not drawn on live frames; frozen, a panel scrolled to showed
    where it was last drawn, seconds before the others."""
    window.resize(1280, 700)
    endpoints = _attach_models(window, range(20, 26))
    qtbot.wait(200)  # past the scroll to the newest panel
    window.live.verticalScrollBar().setValue(0)
    top, last = (window.panels[e].latency_plot for e in (endpoints[0], endpoints[-1]))

    def newest(plot) -> float:
        data = plot.curve_data("points")
        return float(data[0][-1]) if data is not None and len(data[0]) else 0.0

    qtbot.waitUntil(lambda: not last.in_sight() and newest(top) - newest(last) > 1.0,
                    timeout=10_000)
    window.set_live_paused(True)
    assert newest(top) - newest(last) < 0.5  # drawn at the moment of the pause too


def test_a_batch_of_the_previous_workspace_makes_no_panel_in_the_next(window, qtbot,
                                                                     tmp_path: Path):
    """The previous workspace's last commit, still queued when another opened, came back as
    panels of endpoints the new workspace does not have."""
    import threading

    from app.core.domain import Batch, Sample

    ghost = "onnx:ghost.onnx"
    late = Batch(samples=(Sample(ghost, 1_000_000_000, "latency_ms", 2.0),), captures=())
    sender = threading.Thread(target=window.bridge._on_recorder_batch, args=(late,))
    sender.start()  # as the old recorder's thread: queued to the GUI thread
    sender.join()
    window.open_workspace(tmp_path / "next.db")
    qtbot.wait(100)  # the queued batch is delivered now
    assert ghost not in window.panels
    # The new workspace's own batches still arrive.
    probe = window.attach(f"onnx:{model_path('wine-v1')}?provider=cpu&rate=20")
    qtbot.waitUntil(lambda: window.panels[probe.endpoint].latency_plot.point_count("points")
                    > 0, timeout=10_000)


def test_the_overlay_offers_only_endpoints_with_request_figures_and_esc_closes_it(window,
                                                                                qtbot):
    from PySide6.QtWidgets import QApplication

    window.attach("system:?rate=5")
    model = window.attach(f"onnx:{model_path('wine-v1')}?provider=cpu&rate=5").endpoint
    qtbot.keyClick(window, Qt.Key.Key_O,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    overlay = window.live.overlay
    assert [a.toolTip() for a in overlay.endpoints_menu.actions()] == [model]
    qtbot.waitUntil(lambda: QApplication.focusWidget() is overlay, timeout=2_000)
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Escape)  # straight after opening
    assert not overlay.isVisible() and not window.actions.overlay.isChecked()


def test_a_history_view_refreshes_the_panels_in_sight_and_one_scrolled_to(qtbot, tmp_path):
    """Every endpoint's history was read and redrawn every 2 s, in sight or not (with ten
    endpoints in "all", stalls of 100 ms and more); a panel out of sight is drawn when it
    comes into sight, and "all" still spans every endpoint's recording."""
    recorded = tmp_path / "recorded.db"
    store = Store(recorded)
    start = time.time_ns() - 120 * 10**9
    endpoints = [f"onnx:m{i}.onnx" for i in range(6)]
    try:
        for i, endpoint in enumerate(endpoints):  # the last one recorded earliest
            ts = start - (i * 10**9) + np.arange(600, dtype=np.int64) * 100_000_000
            store.write_batch([Sample(endpoint, int(t), "latency_ms", 1.0) for t in ts], [])
    finally:
        store.close()
    window = MainWindow(recorded)
    qtbot.addWidget(window)
    window.resize(1280, 700)
    window.show()
    try:
        window.set_time_window("all")
        last = window.panels[endpoints[-1]]
        qtbot.waitUntil(lambda: last.latency_plot.point_count("p50") > 0, timeout=10_000)
        window.live.verticalScrollBar().setValue(0)
        qtbot.waitUntil(lambda: last.visibleRegion().isEmpty(), timeout=2_000)
        (x0, _), _ = window.panels[endpoints[0]].latency_plot.getViewBox().viewRange()
        assert x0 <= (start - 5 * 10**9) / 1e9 + 1  # "all" reaches the earliest recording
        top = window.panels[endpoints[0]].latency_plot
        qtbot.wait(1_000)  # the opening's rounds of answers for every panel are in
        drawn = {e: window.panels[e].latency_plot.curve_data("p50") for e in endpoints}
        # A refresh (every 2 s) redraws the panels in sight, and leaves the others alone.
        qtbot.waitUntil(lambda: top.curve_data("p50") is not drawn[endpoints[0]],
                        timeout=5_000)
        qtbot.wait(800)  # the rest of that round's answers, had the others been asked for
        assert last.latency_plot.curve_data("p50") is drawn[endpoints[-1]]
        window.live.ensureWidgetVisible(last)  # scrolled to: drawn at once
        qtbot.waitUntil(lambda: last.latency_plot.curve_data("p50") is not drawn[endpoints[-1]],
                        timeout=1_500)
    finally:
        window.shutdown()
