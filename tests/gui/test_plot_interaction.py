"""What the mouse does on a plot: the hover read-out, the plot's menu (CSV, PNG, reset zoom),
y zoom in a frozen view, the legend's hidden curves and its fit in a narrow plot."""

from __future__ import annotations

import csv
from datetime import datetime

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QImage, QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication

from widgets.endpoint_panel import EndpointPanel
from widgets.plots import LatencyPlotWidget, SeriesPlotWidget, XLinker
from widgets.theme import theme_named

T0 = 1_700_000_000.0


def _latency_plot(qtbot, width: int = 640, height: int = 280) -> tuple[LatencyPlotWidget,
                                                                      np.ndarray]:
    """A latency plot over one minute: dots, and p50 < p95 < p99 on shared time stamps (as
    the rolling percentiles are), p99 with one peak."""
    plot = LatencyPlotWidget(theme_named("dark"))
    qtbot.addWidget(plot)
    plot.resize(width, height)
    plot.show()
    qtbot.waitExposed(plot)
    t = T0 + np.arange(60.0)
    rng = np.random.default_rng(1)
    dots_t = T0 + np.sort(rng.uniform(0, 60, 600))
    plot.set_curve("points", dots_t, rng.uniform(0.8, 1.2, dots_t.size))
    plot.set_curve("p50", t, np.full(t.size, 1.0))
    plot.set_curve("p95", t, np.full(t.size, 3.0))
    p99 = np.full(t.size, 5.0)
    p99[30] = 9.0
    plot.set_curve("p99", t, p99)
    plot.set_view(t[0], t[-1] + 1.0)  # a live frame
    qtbot.wait(20)
    return plot, t


def _at(plot: SeriesPlotWidget, x: float, y: float) -> QPoint:
    """The viewport position of a data point."""
    return plot.mapFromScene(plot.getViewBox().mapViewToScene(QPointF(x, y)))


def _mouse(plot: SeriesPlotWidget, kind: QEvent.Type, at: QPoint,
           button: Qt.MouseButton = Qt.MouseButton.NoButton) -> None:
    """A mouse event as the window system delivers it to the plot's viewport (QTest's own
    helpers warn when pyqtgraph's scene leaves a press unaccepted, and Qt warnings fail)."""
    buttons = button if kind in (QEvent.Type.MouseButtonPress,
                                 QEvent.Type.MouseButtonDblClick) else Qt.MouseButton.NoButton
    QApplication.sendEvent(plot.viewport(), QMouseEvent(
        kind, QPointF(at), QPointF(plot.viewport().mapToGlobal(at)), button, buttons,
        Qt.KeyboardModifier.NoModifier))


def _click(plot: SeriesPlotWidget, at: QPoint, button: Qt.MouseButton, *,
           double: bool = False) -> None:
    _mouse(plot, QEvent.Type.MouseButtonPress, at, button)
    _mouse(plot, QEvent.Type.MouseButtonRelease, at, button)
    if double:  # as Qt 6 delivers the second click of a double-click
        _mouse(plot, QEvent.Type.MouseButtonPress, at, button)
        _mouse(plot, QEvent.Type.MouseButtonDblClick, at, button)
        _mouse(plot, QEvent.Type.MouseButtonRelease, at, button)


def _hover_text(qtbot, plot: SeriesPlotWidget, x: float, y: float) -> str:
    """Move the mouse onto a data point; the read-out shown there."""
    plot._hover_text.hide()

    def moved() -> bool:
        # pyqtgraph's scene drops moves that come faster than its rate (60 a second).
        _mouse(plot, QEvent.Type.MouseMove, _at(plot, x, y))
        return plot._hover_text.isVisible()

    qtbot.waitUntil(moved, timeout=2_000)
    return plot._hover_text.toPlainText()


def _wheel(plot: SeriesPlotWidget, at: QPoint, delta: int = 120) -> None:
    event = QWheelEvent(QPointF(at), QPointF(plot.viewport().mapToGlobal(at)), QPoint(0, 0),
                        QPoint(0, delta), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                        Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(plot.viewport(), event)


def _y_axis_point(plot: SeriesPlotWidget) -> QPoint:
    axis = plot.getPlotItem().getAxis("left")
    return plot.mapFromScene(axis.mapToScene(axis.boundingRect().center()))


def _click_legend(qtbot, plot: SeriesPlotWidget, key: str) -> None:
    sample = plot.legend_sample(key)
    at = plot.mapFromScene(sample.mapToScene(sample.boundingRect().center()))
    _click(plot, at, Qt.MouseButton.LeftButton)


def test_hovering_a_percentile_line_names_that_line_with_its_own_value(qtbot):
    """The three percentile lines share their time stamps: the read-out named p50 wherever
    the cursor was, and gave p50's value for a point on p99."""
    plot, t = _latency_plot(qtbot)
    assert _hover_text(qtbot, plot, t[30], 9.0).startswith("p99: 9 ms")  # p99's peak
    assert _hover_text(qtbot, plot, t[12], 3.0).startswith("p95: 3 ms")
    assert _hover_text(qtbot, plot, t[40], 5.0).startswith("p99: 5 ms")
    # Between two samples, on the line itself: still that line, with a sample of it.
    assert _hover_text(qtbot, plot, t[20] + 0.5, 3.0).startswith("p95: 3 ms")
    # On the steep side of the peak, far from either sample in x and in y.
    assert _hover_text(qtbot, plot, t[29] + 0.5, 7.0).startswith("p99:")
    assert _hover_text(qtbot, plot, t[10], 1.0).startswith("p50: 1 ms")


def test_the_read_out_stays_inside_the_plot_and_goes_when_the_mouse_leaves(qtbot):
    plot, t = _latency_plot(qtbot)
    inside = plot.getViewBox().sceneBoundingRect()
    _hover_text(qtbot, plot, t[-1], 5.0)  # the newest p99 sample, at the right edge
    qtbot.wait(20)
    box = plot._hover_text.sceneBoundingRect()
    assert inside.contains(box), (box, inside)  # flipped left of the point, not clipped
    QApplication.sendEvent(plot.viewport(), QEvent(QEvent.Type.Leave))
    assert not plot._hover_text.isVisible() and not plot._hover_line.isVisible()


def _shown_panel(qtbot, width: int) -> EndpointPanel:
    """A real endpoint panel on screen, ``width`` px wide."""
    panel = EndpointPanel("onnx:m.onnx", "onnx", theme_named("dark"))
    qtbot.addWidget(panel)
    panel.resize(width, 300)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


def test_the_read_out_goes_on_pause_resume_and_time_window_switches(qtbot):
    panel = _shown_panel(qtbot, 1000)
    plot = panel.latency_plot
    t = T0 + np.arange(60.0)
    plot.set_curve("p50", t, np.full(t.size, 1.0))
    linker = XLinker()
    for p in panel.plots():
        linker.add(p)
    linker.set_views(t[0], t[-1] + 1.0)
    for switch in (linker.fit_y, lambda: linker.set_views(t[0], t[-1] + 1.0),
                   lambda: panel.set_mode("history"), lambda: panel.set_mode("live")):
        _hover_text(qtbot, plot, t[30], 1.0)
        switch()  # pause, resume, 1 h, back to 1 min
        assert not plot._hover_text.isVisible()


@pytest.mark.qt_log_ignore("This plugin does not support (raise|grabbing)")  # the popup
def test_a_plot_has_a_menu_to_export_and_reset_its_zoom(qtbot):
    plot, t = _latency_plot(qtbot)
    _click(plot, _at(plot, t[45], 2.0), Qt.MouseButton.RightButton)
    menu = QApplication.activePopupWidget()
    try:
        assert menu is plot.context_menu()
        texts = [a.text() for a in menu.actions() if not a.isSeparator()]
        assert texts == ["Export data as CSV…", "Save image as PNG…", "Reset zoom"]
        reset = menu.actions()[-1]
        assert not reset.isEnabled()  # live: the clock drives x and y
    finally:
        menu.close()
    plot.fit_y()  # paused
    assert plot.context_menu().actions()[-1].isEnabled()


def test_export_writes_the_drawn_series_in_sight_one_time_and_value_column_each(qtbot,
                                                                                tmp_path):
    plot, t = _latency_plot(qtbot)
    p95 = np.full(t.size, 3.0)
    p95[25] = np.nan  # a gap in the line is no data
    plot.set_curve("p95", t, p95)
    plot.show_curve("failures", True)
    plot.getViewBox().setXRange(t[20], t[30] - 0.5, padding=0)
    _click_legend(qtbot, plot, "p50")  # hidden from the legend: not drawn, not exported
    path = tmp_path / "latency.csv"
    rows = plot.write_csv(path)
    with open(path, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0] == ["request time", "request (ms)", "p95 time", "p95 (ms)",
                        "p99 time", "p99 (ms)"]
    body = table[1:]
    assert len(body) == rows
    p95_t = [datetime.fromisoformat(r[2]).timestamp() for r in body if r[2]]
    p99 = [(datetime.fromisoformat(r[4]).timestamp(), float(r[5])) for r in body if r[4]]
    assert p95_t == [x for x in t[20:30] if x != t[25]]
    assert p99 == [(x, 9.0 if x == t[30] else 5.0) for x in t[20:30]]
    dots = [datetime.fromisoformat(r[0]).timestamp() for r in body if r[0]]
    assert dots and min(dots) >= t[20] and max(dots) < t[30] - 0.5
    assert rows == len(dots)  # the longest column sets the rows; the others are padded


def test_save_image_writes_the_plot_as_drawn_without_the_read_out(qtbot, tmp_path):
    plot, t = _latency_plot(qtbot)
    _hover_text(qtbot, plot, t[30], 9.0)
    plot.save_png(tmp_path / "latency.png")
    image = QImage(str(tmp_path / "latency.png"))
    assert not image.isNull() and image.width() == plot.width()
    assert not plot._hover_text.isVisible()
    with pytest.raises(OSError, match="could not write"):
        plot.save_png(tmp_path / "no-such-folder" / "latency.png")


def test_the_wheel_over_the_y_axis_zooms_y_only_in_a_frozen_view_and_a_double_click_resets(
        qtbot):
    plot, t = _latency_plot(qtbot)
    other = SeriesPlotWidget("Throughput & errors", "/s", theme_named("dark"))
    qtbot.addWidget(other)
    other.add_curve("throughput", "requests", "#4a90d9")
    other.set_curve("throughput", t, np.full(t.size, 50.0))
    linker = XLinker()
    linker.add(plot)
    linker.add(other)
    vb = plot.getViewBox()
    live_x = (t[0], t[-1] + 1.0)
    linker.set_views(*live_x)
    live_y = vb.viewRange()[1]
    _wheel(plot, _y_axis_point(plot))
    assert vb.viewRange()[1] == live_y  # live: y stays fitted to the data

    linker.fit_y()  # Space: frozen
    fitted_y = vb.viewRange()[1]
    for _ in range(3):
        _wheel(plot, _y_axis_point(plot))
    y0, y1 = vb.viewRange()[1]
    assert y1 - y0 < 0.6 * (fitted_y[1] - fitted_y[0])  # zoomed in on y
    centre = plot.mapFromScene(vb.sceneBoundingRect().center())
    _wheel(plot, centre)  # inside the plot: time zooms, the user's y stays
    assert vb.viewRange()[1] == [y0, y1]
    x0, x1 = vb.viewRange()[0]
    assert x1 - x0 < live_x[1] - live_x[0]
    assert other.getViewBox().viewRange()[0] == [x0, x1]  # linked

    _click(plot, centre, Qt.MouseButton.LeftButton, double=True)
    assert vb.viewRange()[0] == pytest.approx(list(live_x))  # where the view froze
    assert other.getViewBox().viewRange()[0] == pytest.approx(list(live_x))
    assert vb.viewRange()[1] == pytest.approx(fitted_y)

    for _ in range(3):
        _wheel(plot, _y_axis_point(plot))
    assert vb.viewRange()[1] != pytest.approx(fitted_y)
    plot.context_menu().actions()[-1].trigger()  # Reset zoom from the menu
    assert vb.viewRange()[1] == pytest.approx(fitted_y)
    _wheel(plot, _y_axis_point(plot))
    linker.set_views(*live_x)  # Space again: live, y fitted to the data once more
    assert not plot.frozen and vb.viewRange()[1] == pytest.approx(live_y)


def test_a_curve_hidden_from_the_legend_stays_hidden_across_time_windows(qtbot):
    panel = _shown_panel(qtbot, 1200)
    plot = panel.latency_plot
    _click_legend(qtbot, plot, "p99")
    assert not plot.curves["p99"].isVisible()
    for mode in ("history", "live", "history", "live"):  # 1 h, 1 min, all, 1 min
        panel.set_mode(mode)
    assert not plot.curves["p99"].isVisible()
    assert plot.legend_sample("p99") is not None  # still listed, to be shown again
    assert plot.curves["p95"].isVisible()
    _click_legend(qtbot, plot, "p99")
    panel.set_mode("history")
    panel.set_mode("live")
    assert plot.curves["p99"].isVisible()


def test_compact_panels_shade_incidents_without_labels(qtbot):
    """Labels of incidents close in time landed on each other in a 120 px plot."""
    from widgets.incident_marks import IncidentSpan

    panel = _shown_panel(qtbot, 1000)
    panel.set_incidents([IncidentSpan(3, T0, T0 + 20, "error_rate", False),
                         IncidentSpan(4, T0 + 5, T0 + 30, "drift", True)])
    marks = panel.latency_plot.incident_marks

    def labels_shown() -> list[bool]:
        return [label.isVisible() for _, label in marks._regions]

    assert labels_shown() == [True, True]
    panel.set_height(120)
    assert labels_shown() == [False, False]
    assert all(region.isVisible() for region, _ in marks._regions)  # still shaded
    panel.set_height(230)
    assert labels_shown() == [True, True]


def test_a_double_click_resets_the_zoom_of_a_compact_plot_where_its_legend_would_be(qtbot):
    """A compact panel hides its legend, whose area was still taken as the legend's: a
    double-click anywhere in the upper part of a 120 px panel's plot did nothing."""
    panel = _shown_panel(qtbot, 1000)
    panel.set_height(120)
    plot = panel.latency_plot
    t = T0 + np.arange(60.0)
    plot.set_curve("p50", t, np.full(t.size, 1.0))
    linker = XLinker()
    linker.add(plot)
    linker.set_views(t[0], t[-1] + 1.0)
    qtbot.wait(20)
    linker.fit_y()  # Space: frozen
    vb = plot.getViewBox()
    home = vb.viewRange()[0]
    _wheel(plot, plot.mapFromScene(vb.sceneBoundingRect().center()))
    assert vb.viewRange()[0] != pytest.approx(home, abs=0.5)  # zoomed in time
    corner = vb.sceneBoundingRect().topLeft() + QPointF(12, 6)
    _click(plot, plot.mapFromScene(corner), Qt.MouseButton.LeftButton, double=True)
    assert vb.viewRange()[0] == pytest.approx(home, abs=1e-3)


def test_a_click_on_a_red_dot_opens_the_failure_beside_a_request_dot_nearer_its_centre(
        qtbot):
    """A failed request's dot is drawn bigger and on top of the request dots: a click anywhere
    on it is on the failure, even where a request dot's centre is nearer (a test clicking
    the last failure of the demo opened a success about one time in fifty)."""
    plot = LatencyPlotWidget(theme_named("dark"))
    qtbot.addWidget(plot)
    plot.resize(640, 280)
    plot.show()
    qtbot.waitExposed(plot)
    plot.set_curve("points", np.array([T0 + 1.0, T0 + 5.0]), np.array([0.0, 2.0]))
    plot.set_view(T0, T0 + 10.0)
    qtbot.wait(20)
    px, _ = plot.getViewBox().viewPixelSize()
    plot.set_curve("failures", np.array([T0 + 5.0 + 2 * px]), np.array([2.0]))
    plot.set_view(T0, T0 + 10.0)
    qtbot.wait(20)
    clicked: list[tuple[float, bool]] = []
    plot.point_clicked.connect(lambda t, failed: clicked.append((t, failed)))
    near_request = _at(plot, T0 + 5.0 + 0.8 * px, 2.0)  # 0.8 px from it, 1.2 from the failure
    _click(plot, near_request, Qt.MouseButton.LeftButton)
    assert clicked and clicked[-1][1] is True
    _click(plot, _at(plot, T0 + 5.0 - 3 * px, 2.0), Qt.MouseButton.LeftButton)
    assert clicked[-1][1] is False  # off the red dot: the nearer request


def test_compact_panels_hide_the_legend_and_keep_a_hidden_curve_hidden(qtbot):
    panel = _shown_panel(qtbot, 1200)
    plot = panel.latency_plot
    _click_legend(qtbot, plot, "p99")
    panel.set_height(120)  # View > Shorter panels, twice
    assert panel.height() == 120
    assert not plot.legend.isVisible() and not plot.curves["p99"].isVisible()
    panel.set_mode("history")
    panel.set_mode("live")
    panel.set_height(230)
    assert plot.legend.isVisible()
    assert not plot.curves["p99"].isVisible()
    assert plot.legend_sample("p99") is not None  # listed, to be shown again
    assert plot.curves["p95"].isVisible()


@pytest.mark.parametrize(("width", "rows"), [(190, 3), (300, 2), (360, 2), (900, 1)])
def test_every_legend_entry_stays_in_sight_in_a_narrow_plot(qtbot, width, rows):
    """At 1024 px the latency plot is about 300 px wide (190 with a drift plot beside it):
    a one-row legend of five entries was clipped at the plot's edge, p99 gone while its line
    was drawn."""
    plot = LatencyPlotWidget(theme_named("dark"))
    qtbot.addWidget(plot)
    plot.resize(width, 220)
    plot.show()
    qtbot.waitExposed(plot)
    qtbot.wait(20)
    inside = plot.getViewBox().sceneBoundingRect()
    for sample, label in plot.legend.items:
        assert inside.contains(sample.sceneBoundingRect()), label.text
        assert inside.contains(label.sceneBoundingRect()), label.text
    tops = {round(label.sceneBoundingRect().top()) for _, label in plot.legend.items}
    assert len(tops) == rows


def test_the_panel_header_figures_can_be_selected_to_copy(qtbot):
    panel = EndpointPanel("onnx:m.onnx", "onnx", theme_named("dark"))
    qtbot.addWidget(panel)
    assert panel.stats.textInteractionFlags() & Qt.TextInteractionFlag.TextSelectableByMouse


def test_a_series_named_like_a_formula_is_exported_as_text(tmp_path):
    # A scraped page or an agent names its own series: opened in a spreadsheet, a header
    # "=HYPERLINK(...)" would run.
    from widgets.plot_menu import write_series_csv

    t = 1_000.0 + np.arange(3, dtype=float)
    path = tmp_path / "other.csv"
    write_series_csv(path, [('=HYPERLINK("http://x.invalid")', t, np.ones(3)),
                            ("queue_depth", t, -np.ones(3))], "as exposed")
    with open(path, newline="", encoding="utf-8") as f:
        header, first, *_ = list(csv.reader(f))
    assert header[:2] == ["'=HYPERLINK(\"http://x.invalid\") time",
                          "'=HYPERLINK(\"http://x.invalid\") (as exposed)"]
    assert header[2:] == ["queue_depth time", "queue_depth (as exposed)"]
    assert first[3] == "-1.0"  # a negative number stays a number
