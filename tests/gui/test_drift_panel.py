"""The drift panel on a workspace with real drift history (the demo's production rows through a
real DriftMonitor): heat map, table sorted by drift, distributions, the full Evidently report
(finished and cancelled), the reference, and following a live monitor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from app.core.drift_monitor import DriftMonitor, DriftUpdate, save_result
from app.core.store import Store
from app.gui.drift_panel import DriftPanel, read_share_series
from tests.gui.drift_workspace import ENDPOINT, build_drift_workspace, demo_captures, record
from widgets.drift_plots import DriftShareWidget

FEATURES = 13  # the wine data's inputs; the monitor adds "prediction"


@pytest.fixture
def drifted(tmp_path: Path, demo_dir: Path) -> tuple[Path, list[DriftUpdate]]:
    db = tmp_path / "ws.db"
    return db, build_drift_workspace(db, demo_dir, rows=2000, every=100)


@pytest.fixture
def panel(qtbot, drifted):
    p = DriftPanel(drifted[0])
    qtbot.addWidget(p)
    p.resize(1200, 800)
    p.show()
    qtbot.waitUntil(lambda: not p.refreshing(), timeout=10_000)
    yield p
    p.shutdown()


def _table(panel: DriftPanel) -> list[tuple[str, ...]]:
    return [tuple(panel.table.item(i, j).text() for j in range(panel.table.columnCount()))
            for i in range(panel.table.rowCount())]


def test_the_table_names_alcohol_and_color_intensity_first(panel, drifted):
    assert panel.endpoint() == ENDPOINT
    rows = _table(panel)
    assert {rows[0][0], rows[1][0]} == {"alcohol", "color_intensity"}
    assert rows[0][1] == "ks" and rows[0][4] == "yes"
    assert float(rows[0][3]) == 0.05
    assert len(rows) == FEATURES + 1
    last = drifted[1][-1].result
    assert {r[0] for r in rows if r[4] == "yes"} == set(last.drifted_columns)
    assert "demo reference" in panel.reference_label.text()


def test_the_panel_says_which_rows_its_table_judged(panel, drifted):
    """The live table judges the last N captured rows (seconds on a busy endpoint), not the
    Full report's time span: said beside the reference, with its count of drifted columns."""
    _, updates = drifted
    last = updates[-1]
    text = panel.evaluated_label.text()
    rows = sum(1 for r in _table(panel) if r[1])  # tested columns have a method
    drifted_now = sum(1 for r in _table(panel) if r[4] == "yes")
    assert f"{drifted_now} of {rows} drifted in the last {last.result.rows_current} captured " \
           "rows up to" in text and "prediction against" in text


def test_the_heat_map_has_a_column_per_evaluation_and_a_row_per_feature(panel, drifted):
    updates = drifted[1]
    assert panel.heatmap.shape == (len(updates), FEATURES + 1)
    # Drawn on one column per pixel of time, not per evaluation (they are not evenly spaced).
    assert panel.heatmap.image.image.shape[1] == FEATURES + 1
    levels = panel.heatmap.plot.getAxis("left")._tickLevels
    names = [name for level in levels for _, name in level]
    assert sorted(names) == sorted(panel.heatmap.features)  # every row has its name
    assert levels[0][0][1] == "alcohol"
    # The drift ramps in: alcohol's last column is past its threshold, its first is not.
    j = panel.heatmap.features.index("alcohol")
    image = panel.heatmap.image.image
    assert image[-1, j] > 1.0 > image[0, j]


def test_selecting_a_feature_draws_reference_and_current(panel, qtbot):
    selected: list[str] = []
    panel.feature_selected.connect(selected.append)
    with qtbot.waitSignal(panel.distribution_shown, timeout=10_000) as signal:
        assert panel.select_feature("flavanoids")
    assert selected == signal.args == ["flavanoids"]
    assert panel.distribution.feature == "flavanoids"
    with qtbot.waitSignal(panel.distribution_shown, timeout=10_000):
        panel.select_feature("alcohol")
    items = panel.distribution.items
    assert set(items) == {"reference", "current"}
    edges, reference = items["reference"].getData()[0], items["reference"].yData
    current = items["current"].yData
    assert len(edges) == len(reference) + 1 and reference.sum() == pytest.approx(1.0)
    centres = (edges[:-1] + edges[1:]) / 2
    # The demo moves alcohol up in its drifted stretch: the current mass sits to the right.
    assert centres @ current > centres @ reference + 0.5


def test_the_full_report_runs_on_a_worker_with_progress(panel, qtbot, drifted):
    seen: list[float] = []
    panel.report.window_box.setCurrentIndex(1)  # last 5 min: every capture (they span 40 s)
    job = panel.run_report()
    assert job is not None and panel.busy() and panel.report.cancel_button.isEnabled()
    job.signals.progressed.connect(seen.append)
    with qtbot.waitSignal(panel.report_finished, timeout=120_000) as signal:
        pass
    report = signal.args[0]
    assert seen and seen == sorted(seen) and seen[-1] == 1.0
    assert not panel.busy() and panel.report.run_button.isEnabled()
    assert report.html_path is not None and report.html_path.stat().st_size > 10_000
    assert panel.report.open_button.isEnabled()
    rows = {panel.report.table.item(i, 0).text(): panel.report.table.item(i, 4).text()
            for i in range(panel.report.table.rowCount())}
    assert rows["alcohol"] == rows["color_intensity"] == "yes"
    assert "columns drifted" in panel.report.label.text()
    store = Store(drifted[0], readonly=True)
    assert len(store.drift_evaluations(ENDPOINT, source="evidently")) == 1
    store.close()


def test_cancelling_the_full_report_stores_nothing(panel, qtbot, drifted):
    errors: list[str] = []
    panel.error_occurred.connect(errors.append)
    finished: list[object] = []
    panel.report_finished.connect(finished.append)
    job = panel.run_report()
    panel.cancel_report()
    qtbot.waitUntil(lambda: not panel.busy(), timeout=120_000)
    assert job.is_cancelled() and finished == [] and errors == []
    assert panel.report.label.text() == "Full report: cancelled"
    assert panel.report.run_button.isEnabled() and not panel.report.open_button.isEnabled()
    store = Store(drifted[0], readonly=True)
    assert store.drift_evaluations(ENDPOINT, source="evidently") == []
    store.close()


def test_choosing_a_reference_file_and_back_to_the_demo(panel, qtbot, demo_dir, tmp_path):
    with qtbot.waitSignal(panel.refreshed, timeout=10_000):
        assert panel.set_reference_file(demo_dir / "validation.csv")
    assert "validation.csv" in panel.reference_label.text()  # as read back from the workspace
    store = Store(panel.db_path, readonly=True)
    assert store.drift_reference(ENDPOINT)["path"] == str((demo_dir / "validation.csv").resolve())
    store.close()
    with qtbot.waitSignal(panel.error_occurred, timeout=5000) as signal:
        assert not panel.set_reference_file(tmp_path / "missing.parquet")
    assert "does not exist" in signal.args[0]
    assert "validation.csv" in panel.reference_label.text()  # unchanged
    with qtbot.waitSignal(panel.refreshed, timeout=10_000):
        assert panel.use_demo_reference()
    assert "demo reference" in panel.reference_label.text()


def test_following_a_monitor_refreshes_on_its_next_evaluation(panel, qtbot, drifted, demo_dir):
    db, updates = drifted
    before = panel.heatmap.shape[0]
    monitor = DriftMonitor(db, window_rows=500, min_rows=50, interval_s=3600)
    panel.follow(monitor)
    monitor.start()
    try:
        record(db, monitor, demo_captures(demo_dir, 2000, 2100))
        with qtbot.waitSignal(panel.refreshed, timeout=30_000):
            assert monitor.evaluate_soon().wait(30)
    finally:
        monitor.close()
    assert panel.heatmap.shape[0] == before + 1 == len(updates) + 1


def test_shutdown_stops_following(panel, qtbot, drifted, demo_dir):
    db, _ = drifted
    monitor = DriftMonitor(db, window_rows=500, min_rows=50, interval_s=3600)
    seen: list[DriftUpdate] = []
    panel.follow(monitor)
    monitor.subscribe(seen.append)
    refreshed: list[None] = []
    panel.refreshed.connect(lambda: refreshed.append(None))
    panel.shutdown()
    monitor.start()
    try:
        record(db, monitor, demo_captures(demo_dir, 2000, 2100))
        assert monitor.evaluate_soon().wait(30)
    finally:
        monitor.close()
    qtbot.wait(50)  # let any queued signal arrive: none must
    assert len(seen) == 1 and refreshed == []


def test_the_share_of_drifted_features_over_time(qtbot, drifted):
    db, updates = drifted
    widget = DriftShareWidget()
    qtbot.addWidget(widget)
    ts, share = read_share_series(db, ENDPOINT)
    widget.set_series(ts, share)
    assert widget.point_count() == len(updates)
    assert widget.last_share() == pytest.approx(updates[-1].result.share_drifted)
    assert np.all(np.diff(ts) > 0)


def test_an_endpoint_without_a_reference_says_what_to_do(qtbot, tmp_path, demo_dir):
    db = tmp_path / "ws.db"
    store = Store(db)
    store.write_batch([], demo_captures(demo_dir, 0, 60))
    store.close()
    p = DriftPanel(db)
    qtbot.addWidget(p)
    qtbot.waitUntil(lambda: not p.refreshing(), timeout=10_000)
    try:
        assert p.endpoint() == ENDPOINT and p.table.rowCount() == 0
        assert p.heatmap.shape == (0, 0)
        assert p.reference_label.text() == "no reference: choose one"
        with qtbot.waitSignal(p.error_occurred, timeout=60_000) as signal:
            assert p.run_report() is not None
        assert "has no drift reference" in signal.args[0] and "\n" not in signal.args[0]
        assert p.report.label.text().startswith("Full report failed:")
        assert p.report.run_button.isEnabled() and not p.busy()
    finally:
        p.shutdown()


def test_clicking_a_heat_map_row_selects_its_feature_and_hover_tells_the_cell(panel, qtbot):
    heatmap = panel.heatmap
    qtbot.waitExposed(panel)
    j = heatmap.features.index("color_intensity")
    last_t_s = heatmap._t_s[-1]
    scene = heatmap.plot.getViewBox().mapViewToScene(QPointF(last_t_s, j + 0.5))
    pos = heatmap.mapFromScene(scene)
    qtbot.mouseMove(heatmap.viewport(), pos)
    qtbot.waitUntil(lambda: heatmap.toolTip().startswith("color_intensity at"), timeout=5000)
    assert "(drifted)" in heatmap.toolTip()
    with qtbot.waitSignal(panel.distribution_shown, timeout=10_000) as signal:
        qtbot.mouseClick(heatmap.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert signal.args == ["color_intensity"]
    assert panel.selected_feature() == "color_intensity"
    assert panel.distribution.feature == "color_intensity"


def test_the_heat_map_shows_the_chosen_span_of_history(panel, qtbot, drifted):
    db, updates = drifted
    store = Store(db)
    save_result(store, ENDPOINT, updates[0].ts_ns - 2 * 3600 * 10**9, updates[0].result)
    store.close()
    with qtbot.waitSignal(panel.refreshed, timeout=10_000):
        panel.refresh()
    assert panel.span_box.currentText() == "last hour"
    assert panel.heatmap.shape[0] == len(updates)
    with qtbot.waitSignal(panel.refreshed, timeout=10_000):
        panel.span_box.setCurrentIndex(panel.span_box.findText("all"))
    assert panel.heatmap.shape[0] == len(updates) + 1


def test_feature_names_in_a_short_heat_map_never_overlap(panel, drifted, qtbot):
    """In a short dock the rows are thinner than a line of text: the names always drawn
    (the major ticks) are then at least a line apart; the rest fill in where there is room."""
    heatmap = panel.heatmap
    line_px = heatmap.fontMetrics().height()
    for height in (600, 200):
        heatmap.setFixedHeight(height)
        qtbot.waitUntil(lambda h=height: heatmap.height() == h, timeout=2000)
        major = heatmap.plot.getAxis("left")._tickLevels[0]
        row_px = heatmap.plot.getViewBox().height() / len(heatmap.features)
        gaps = np.diff([pos for pos, _ in major]) * row_px
        assert len(major) >= 2 and gaps.min() >= line_px
    assert len(major) < len(heatmap.features)  # at 200 px, some names had to make room


def test_a_short_heat_map_names_the_most_drifted_rows(qtbot):
    """When only some rows can be named, the drifted ones are: every other row from the top
    left the two drifted features of an audit's demo unnamed."""
    from widgets.drift_plots import DriftHeatMapWidget

    features = [f"feature_{j:02d}" for j in range(14)]
    severity = np.full((3, 14), 0.2)
    severity[-1, [3, 9]] = (4.0, 2.5)  # drifted now: rows 3 and 9, off any every-k-th grid
    heat = DriftHeatMapWidget()
    qtbot.addWidget(heat)
    heat.set_matrix(np.array([1.7e18, 1.7e18 + 5e9, 1.7e18 + 1e10]), features, severity)
    heat.setFixedHeight(170)
    heat.show()
    qtbot.waitUntil(lambda: heat.height() == 170, timeout=2000)
    major = [name for _, name in heat.plot.getAxis("left")._tickLevels[0]]
    assert len(major) < len(features)  # not every row has room
    assert {"feature_03", "feature_09"} <= set(major)


def _major_names(heat) -> list[str]:
    return [name for _, name in heat.plot.getAxis("left")._tickLevels[0]]


def _incident_history(calm_after: int = 0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """14 rows, 20 evaluations: rows 3 and 11 drifted in evaluations 5-12 (an incident), row
    7 only in the latest, then ``calm_after`` calm evaluations."""
    features = [f"feature_{j:02d}" for j in range(14)]
    severity = np.full((20 + calm_after, 14), 0.2)
    severity[5:13, [3, 11]] = 3.0
    severity[19, 7] = 1.5
    ts_ns = (1.7e18 + 5e9 * np.arange(len(severity))).astype(np.int64)
    return ts_ns, features, severity


def test_a_short_heat_map_keeps_an_incidents_rows_named_as_evaluations_land(qtbot):
    """The audit's: the names went to the rows most drifted in the latest evaluation, so the
    rows red in the incident a minute ago lost theirs, and a different half of the rows was
    named after every evaluation. Now: the rows that drifted most in the shown span."""
    from widgets.drift_plots import DriftHeatMapWidget

    heat = DriftHeatMapWidget()
    qtbot.addWidget(heat)
    heat.setFixedHeight(170)
    heat.show()
    qtbot.waitUntil(lambda: heat.height() == 170, timeout=2000)
    heat.set_matrix(*_incident_history())
    named = _major_names(heat)
    assert len(named) < 14  # not every row has room at this height
    assert {"feature_03", "feature_11", "feature_07"} <= set(named)
    heat.set_matrix(*_incident_history(calm_after=1))  # a calm evaluation lands
    assert _major_names(heat) == named


def test_hovering_a_row_on_the_names_axis_names_it_and_a_click_selects_it(qtbot):
    """A short map cannot name every row: the names' axis tells any row on hover (the cells
    already did, with a time), and a click there picks its feature as a click on a cell does."""
    from widgets.drift_plots import DriftHeatMapWidget

    heat = DriftHeatMapWidget()
    qtbot.addWidget(heat)
    heat.resize(700, 170)
    heat.show()
    qtbot.waitExposed(heat)
    heat.set_matrix(*_incident_history())
    (unnamed, *_) = [f for f in heat.features if f not in _major_names(heat)]
    j = heat.features.index(unnamed)
    axis = heat.plot.getAxis("left").sceneBoundingRect()
    row_y = heat.plot.getViewBox().mapViewToScene(QPointF(0.0, j + 0.5)).y()
    pos = heat.mapFromScene(QPointF(axis.center().x(), row_y))
    qtbot.mouseMove(heat.viewport(), pos)
    qtbot.waitUntil(lambda: heat.toolTip() == f"{unnamed}: drifted in 0 of 20 evaluations "
                                              "shown; peak severity 0.20, latest 0.20",
                    timeout=5000)
    j = heat.features.index("feature_03")
    row_y = heat.plot.getViewBox().mapViewToScene(QPointF(0.0, j + 0.5)).y()
    pos = heat.mapFromScene(QPointF(axis.center().x(), row_y))
    with qtbot.waitSignal(heat.feature_clicked, timeout=2000) as clicked:
        qtbot.mouseClick(heat.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert clicked.args == ["feature_03"]


def test_a_taller_panel_grows_the_heat_map_until_every_row_is_named(qtbot, drifted):
    """The extra height of a taller dock went mostly to the table: with room for the map to
    name its 14 rows above the table side's minimum, it stayed too short to. It grows first
    now; a height the user drags stays theirs."""
    p = DriftPanel(drifted[0])
    qtbot.addWidget(p)
    p.resize(1200, 500)
    p.show()
    qtbot.waitUntil(lambda: not p.refreshing(), timeout=10_000)
    heat, main = p.heatmap, p.heatmap.parentWidget()
    lower = main.widget(1)
    chrome = heat.height() - heat.plot.getViewBox().height()
    every_row = chrome + len(heat.features) * heat.fontMetrics().height()
    # Just enough room: the map naming every row, the table side at its minimum, 20 px spare.
    p.resize(1200, p.height() - main.height() + int(every_row) + main.handleWidth()
             + lower.minimumSizeHint().height() + 20)
    qtbot.waitUntil(lambda: len(_major_names(heat)) == FEATURES + 1, timeout=2000)
    assert lower.height() >= lower.minimumSizeHint().height()
    main.moveSplitter(heat.minimumHeight(), 1)  # the user drags it short
    with qtbot.waitSignal(p.refreshed, timeout=10_000):
        p.refresh()
    assert heat.height() == heat.minimumHeight()
    p.shutdown()


def test_an_empty_heat_map_says_so_and_shows_no_made_up_time_axis(qtbot):
    import numpy as np

    from widgets.drift_plots import DriftHeatMapWidget

    heat = DriftHeatMapWidget()
    qtbot.addWidget(heat)
    bottom = heat.plot.getAxis("bottom")
    assert not bottom.isVisible() and "no evaluations" in heat.plot.titleLabel.text
    heat.set_matrix(np.array([1.7e18, 1.7e18 + 5e9]), ["a", "b"], np.ones((2, 2)))
    heat.show()
    assert bottom.isVisible() and "no evaluations" not in heat.plot.titleLabel.text
    heat.set_matrix(np.empty(0), [], np.empty((0, 0)))
    assert not bottom.isVisible()
