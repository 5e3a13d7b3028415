"""The drift panel's audit fixes: the heat map places evaluations at their own times (a pause is
drawn empty, hover and paint agree), the prediction row draws against the monitor's baseline,
cleared distributions drop their axes, the reference dialog offers every format the loader
reads, and switching endpoints empties the report's progress bar."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PySide6.QtCore import QPointF
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QFileDialog

from app.core.domain import Capture, CaptureStatus, TensorBlob
from app.core.drift import DriftError
from app.core.references import read_table
from app.core.store import Store
from app.gui import drift_panel as drift_panel_module
from app.gui.drift_panel import DriftPanel
from tests.gui.drift_workspace import ENDPOINT, build_drift_workspace, demo_captures
from widgets.drift_plots import DistributionPlotWidget, DriftHeatMapWidget
from widgets.theme import DARK

T0_NS = 1_790_000_000 * 10**9
STEP_NS = 5 * 10**9
PAUSE_NS = 3600 * 10**9
FEATURES = ("alcohol", "ash", "hue")


def _paused_history() -> tuple[np.ndarray, np.ndarray]:
    """50 calm evaluations 5 s apart, an hour's pause, then 50 drifted ones (the audit's)."""
    calm = T0_NS + STEP_NS * np.arange(50)
    drifted = calm[-1] + STEP_NS + PAUSE_NS + STEP_NS * np.arange(50)
    severity = np.vstack([np.full((50, len(FEATURES)), 0.2), np.full((50, len(FEATURES)), 5.0)])
    return np.concatenate([calm, drifted]).astype(np.int64), severity


def _heatmap(qtbot, ts_ns: np.ndarray, severity: np.ndarray, width: int = 900
             ) -> DriftHeatMapWidget:
    heat = DriftHeatMapWidget()
    qtbot.addWidget(heat)
    heat.resize(width, 300)
    heat.show()
    qtbot.waitExposed(heat)
    heat.set_matrix(ts_ns, FEATURES, severity)
    qtbot.wait(20)
    return heat


def _colour(heat: DriftHeatMapWidget, image, t_s: float, row: float) -> str:
    """'red' (drifted), 'blue' (calm) or 'empty' (the background) painted at a time and row."""
    scene = heat.plot.getViewBox().mapViewToScene(QPointF(t_s, row))
    pos = heat.mapFromScene(scene)
    c = QColor(image.pixel(pos.x(), pos.y()))
    if (c.red(), c.green(), c.blue()) == QColor(DARK.base).getRgb()[:3]:
        return "empty"
    if c.red() > c.blue() + 60:
        return "red"
    if c.blue() > c.red() + 20:
        return "blue"
    return f"other {c.name()}"


def test_the_heat_map_draws_each_evaluation_at_its_own_time_and_a_pause_empty(qtbot):
    ts_ns, severity = _paused_history()
    heat = _heatmap(qtbot, ts_ns, severity)
    image = heat.viewport().grab().toImage()
    t_s = ts_ns / 1e9
    first_drifted = t_s[50]
    # Drift begins when the first drifted evaluation does: not in the pause before it.
    assert _colour(heat, image, first_drifted + 100, 0.5) == "red"
    assert _colour(heat, image, t_s[0] + 100, 0.5) == "blue"
    for before in (60, 600, 1800, 2400):  # the old picture turned red ~30 min early
        assert _colour(heat, image, first_drifted - before, 1.5) == "empty"
    assert heat.cell_at(QPointF(first_drifted - 1800, 1.5)) is None
    assert heat.cell_at(QPointF(first_drifted + 2, 1.5)) == (50, 1)
    assert heat.cell_at(QPointF(t_s[49] + 2, 0.5)) == (49, 0)  # the last calm one, its column
    assert heat.cell_at(QPointF(t_s[49] + 30, 0.5)) is None  # one usual spacing, then the pause


def test_the_heat_map_hover_names_the_evaluation_whose_colour_is_painted(qtbot):
    """Across the whole plot, where the tooltip names no evaluation nothing is painted, and
    where it names one the colour is that evaluation's."""
    ts_ns, severity = _paused_history()
    # Uneven spacing inside the runs too: 5 s, then 10 s (not yet a pause).
    ts_ns = ts_ns.copy()
    ts_ns[20:50] += 5 * 10**9 * np.arange(1, 31)
    ts_ns[50:] += ts_ns[49] - _paused_history()[0][49]
    heat = _heatmap(qtbot, ts_ns, severity)
    image = heat.viewport().grab().toImage()
    (lo, hi), _ = heat.plot.getViewBox().viewRange()
    checked = 0
    for x in np.linspace(lo, hi, 401)[1:-1]:
        left = heat.mapFromScene(heat.plot.getViewBox().mapViewToScene(QPointF(x, 0.5)))
        # Skip points within a pixel of a column's edge, where rounding may go either way.
        near = [heat.cell_at(heat.plot.getViewBox().mapSceneToView(
            heat.mapToScene(left.x() + dx, left.y()))) for dx in (-1, 1)]
        cell = heat.cell_at(QPointF(x, 0.5))
        if near[0] != cell or near[1] != cell:
            continue
        expected = "empty" if cell is None else ("red" if severity[cell] > 1 else "blue")
        assert _colour(heat, image, x, 0.5) == expected, (x, cell)
        checked += 1
    assert checked > 300


def test_a_zoomed_out_heat_map_keeps_a_lone_drifted_evaluation(qtbot):
    """Thousands of evaluations in a few hundred pixels: a column holding several shows the
    worst of them, so one drifted evaluation is not lost between pixels."""
    ts_ns = T0_NS + STEP_NS * np.arange(4000)
    severity = np.full((4000, len(FEATURES)), 0.2)
    severity[2001, 2] = 5.0
    heat = _heatmap(qtbot, ts_ns, severity, width=400)
    image = heat.viewport().grab().toImage()
    row = [_colour(heat, image, x, 2.5)
           for x in np.linspace(ts_ns[1900] / 1e9, ts_ns[2100] / 1e9, 200)]
    assert "red" in row
    x = ts_ns[2001] / 1e9 + 1
    assert heat.cell_at(QPointF(x, 2.5)) == (2001, 2)  # the hover names that evaluation


@pytest.fixture
def drifted(tmp_path: Path, demo_dir: Path) -> Path:
    db = tmp_path / "ws.db"
    build_drift_workspace(db, demo_dir, rows=2000, every=100)
    return db


@pytest.fixture
def panel(qtbot, drifted):
    p = DriftPanel(drifted)
    qtbot.addWidget(p)
    p.resize(1200, 800)
    p.show()
    qtbot.waitUntil(lambda: not p.refreshing(), timeout=10_000)
    yield p
    p.shutdown()


def test_the_prediction_row_draws_the_latest_predictions_against_the_monitors_baseline(
        panel, qtbot, drifted):
    """The demo reference has no predictions: the monitor tests them against the endpoint's
    first 500 captured ones, so the plot shows those against the latest 500."""
    # The most drifted feature (a number) is drawn with the table; the prediction replaces it.
    assert panel.distribution.feature == panel.selected_feature() == panel.table.item(0, 0).text()
    with qtbot.waitSignal(panel.distribution_shown, timeout=10_000):
        assert panel.select_feature("prediction")
    assert panel.distribution.feature == "prediction"
    assert set(panel.distribution.items) == {"reference", "current"}
    title = panel.distribution.plot.titleLabel.text
    assert "first 500" in title and "not in the reference" not in title
    store = Store(drifted, readonly=True)
    captures = store.captures(ENDPOINT, limit=100_000, with_tensors=False)
    store.close()
    categories = [t[1] for t in panel.distribution.plot.getAxis("bottom")._tickLevels[0]]
    expected = {}
    for name, chosen in (("reference", captures[:500]), ("current", captures[-500:])):
        counts = collections.Counter(c.capture.prediction for c in chosen)
        expected[name] = [counts.get(k, 0) / len(chosen) for k in categories]
        assert panel.distribution.items[name].opts["height"] == pytest.approx(expected[name])
    assert expected["reference"] != pytest.approx(expected["current"])  # the drift shows
    # No axis of alcohol's bins is left behind: the bottom axis names the classes.
    assert sorted(categories) == sorted({c.capture.prediction for c in captures})


def test_a_feature_without_a_distribution_says_why_and_drops_the_previous_axes(
        panel, qtbot, tmp_path, demo_dir):
    renamed = tmp_path / "renamed.csv"  # as wide as the captures, one column named anew
    pd.read_csv(demo_dir / "reference.csv").rename(columns={"ash": "ash_v2"}).to_csv(
        renamed, index=False)
    with qtbot.waitSignal(panel.refreshed, timeout=10_000):
        assert panel.set_reference_file(renamed)
    with qtbot.waitSignal(panel.distribution_shown, timeout=10_000):
        assert panel.select_feature("flavanoids")
    assert panel.distribution.plot.getAxis("bottom").isVisible()
    with qtbot.waitSignal(panel.distribution_shown, timeout=10_000):
        assert panel.select_feature("ash")
    assert panel.distribution.items == {}
    assert "ash: not in the reference" in panel.distribution.plot.titleLabel.text
    assert not panel.distribution.plot.getAxis("bottom").isVisible()
    assert not panel.distribution.plot.getAxis("left").isVisible()


def test_clearing_a_distribution_hides_its_axes_until_the_next_one(qtbot):
    plot = DistributionPlotWidget()
    qtbot.addWidget(plot)
    plot.show()
    bottom, left = plot.plot.getAxis("bottom"), plot.plot.getAxis("left")
    plot.set_numerical("a", np.linspace(11, 15, 5), np.full(4, 0.25), np.full(4, 0.25))
    assert bottom.isVisible() and left.isVisible()
    plot.clear_distribution("b: nothing to show")
    assert not bottom.isVisible() and not left.isVisible()
    plot.set_categorical("c", ["0", "1"], np.array([0.5, 0.5]), np.array([0.2, 0.8]),
                         title="c: custom")
    assert bottom.isVisible() and left.isVisible()
    assert plot.plot.titleLabel.text == "c: custom"
    assert [label.text for _, label in plot.legend.items] == ["reference", "current"]


def test_the_reference_dialog_offers_exactly_the_formats_the_loader_reads(
        panel, qtbot, monkeypatch, tmp_path, demo_dir):
    offered: list[str] = []
    chosen = tmp_path / "reference.jsonl"
    pd.read_csv(demo_dir / "reference.csv").to_json(chosen, orient="records", lines=True)

    def open_file_name(_parent, _caption, _dir, filters):  # the user picks the JSON-lines file
        offered.append(filters)
        return str(chosen), filters.split(";;")[0]

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(open_file_name))
    with qtbot.waitSignal(panel.refreshed, timeout=10_000):
        panel._on_reference_file_chosen()
    assert "reference.jsonl" in panel.reference_label.text()
    first = offered[0].split(";;")[0]
    patterns = first[first.index("(") + 1:first.index(")")].split()
    suffixes = {p.removeprefix("*") for p in patterns}
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    writers = {".csv": lambda p: frame.to_csv(p, index=False),
               ".parquet": frame.to_parquet, ".pq": frame.to_parquet,
               ".jsonl": lambda p: frame.to_json(p, orient="records", lines=True),
               ".ndjson": lambda p: frame.to_json(p, orient="records", lines=True),
               ".npy": lambda p: np.save(p, frame.to_numpy())}
    assert suffixes == set(writers)
    for suffix, write in writers.items():  # each offered format loads ...
        write(tmp_path / f"r{suffix}")
        loaded = read_table(tmp_path / f"r{suffix}")
        assert list(loaded.columns) == (["x0"] if suffix == ".npy" else ["a"])
        assert loaded.iloc[:, 0].tolist() == [1.0, 2.0]
    for suffix in (".json", ".txt", ".xlsx"):  # ... and the loader reads no other
        (tmp_path / f"r{suffix}").write_text("a\n1\n")
        with pytest.raises(DriftError, match="unsupported format"):
            read_table(tmp_path / f"r{suffix}")
    assert offered[0] == drift_panel_module.REFERENCE_FILE_FILTER


def test_switching_endpoints_empties_the_report_progress_bar(qtbot, tmp_path, demo_dir):
    db = tmp_path / "ws.db"
    store = Store(db)
    other = "http://other.example/v1/models/m:predict"
    store.write_batch([], [*demo_captures(demo_dir, 0, 60), Capture(
        other, T0_NS, 1.0, CaptureStatus.OK,
        inputs=(TensorBlob.from_array("x", np.ones((1, 3), np.float32)),))])
    store.close()
    p = DriftPanel(db)
    qtbot.addWidget(p)
    qtbot.waitUntil(lambda: not p.refreshing(), timeout=10_000)
    try:
        p.set_endpoint(ENDPOINT)
        qtbot.waitUntil(lambda: not p.refreshing(), timeout=10_000)
        with qtbot.waitSignal(p.error_occurred, timeout=60_000):  # no reference: it fails
            assert p.run_report() is not None
        qtbot.waitUntil(lambda: not p.busy(), timeout=10_000)
        progress = p.report.progress
        assert progress.value() == progress.maximum()  # a finished run fills the bar
        p.set_endpoint(other)
        qtbot.waitUntil(lambda: not p.refreshing(), timeout=10_000)
        assert p.report.label.text() == "Full report: not run"
        assert progress.value() == progress.minimum()
    finally:
        p.shutdown()
