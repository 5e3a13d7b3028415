"""The drift panel keeps its work off the GUI thread (the lag audit: every 5 s refresh stalled
the window 65-89 ms): the shown feature's distribution is read with the refresh on the worker,
a click reads on the worker too while the old picture stays, the table and the plot are
updated in place, and the reference file is parsed once, not every refresh."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from app.core import references
from app.core.drift_history import feature_comparison, latest_table
from app.core.drift_monitor import DriftMonitor
from app.core.store import Store
from app.gui import drift_reads as drift_reads_module
from app.gui.drift_panel import DriftPanel
from app.gui.drift_report_box import DRIFTED_COLOR
from tests.gui.drift_workspace import ENDPOINT, build_drift_workspace, demo_captures, record


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


@pytest.fixture
def comparisons(monkeypatch) -> list[tuple[str, threading.Thread]]:
    """(feature, thread) of each real ``feature_comparison`` the panel runs."""
    seen: list[tuple[str, threading.Thread]] = []

    def recorded(store, endpoint, feature, **kwargs):
        seen.append((feature, threading.current_thread()))
        return feature_comparison(store, endpoint, feature, **kwargs)

    monkeypatch.setattr(drift_reads_module, "feature_comparison", recorded)
    return seen


def _refresh(panel: DriftPanel, qtbot) -> None:
    with qtbot.waitSignal(panel.refreshed, timeout=10_000):
        panel.refresh()


def _table(panel: DriftPanel) -> list[tuple[str, ...]]:
    return [tuple(panel.table.item(i, j).text() for j in range(panel.table.columnCount()))
            for i in range(panel.table.rowCount())]


def test_a_refresh_reads_the_shown_distribution_on_the_worker(panel, qtbot, comparisons):
    with qtbot.waitSignal(panel.distribution_shown, timeout=10_000):
        assert panel.select_feature("flavanoids")
    comparisons.clear()
    for _ in range(3):
        _refresh(panel, qtbot)
        # Shown with the table, in the same answer: nothing is left to read afterwards.
        assert panel.distribution.feature == panel.selected_feature() == "flavanoids"
    assert [f for f, _ in comparisons] == ["flavanoids"] * 3
    assert all(t is not threading.main_thread() for _, t in comparisons)


def test_a_click_reads_on_the_worker_and_keeps_the_old_picture_until_then(
        panel, qtbot, comparisons):
    shown = panel.distribution.feature
    items = dict(panel.distribution.items)
    assert shown == panel.selected_feature() and items
    comparisons.clear()
    assert panel.select_feature("hue")
    # Nothing is read on this thread: the old distribution stays drawn, not cleared.
    assert panel.distribution.feature == shown and panel.distribution.items == items
    with qtbot.waitSignal(panel.distribution_shown, timeout=10_000) as signal:
        pass
    assert signal.args == ["hue"] and panel.distribution.feature == "hue"
    assert [f for f, _ in comparisons] == ["hue"]
    assert comparisons[0][1] is not threading.main_thread()


def test_a_click_while_a_refresh_is_read_shows_the_clicked_feature(panel, qtbot):
    drawn: list[str] = []
    panel.distribution_shown.connect(drawn.append)
    panel.refresh()  # reads the selected feature's distribution on the worker ...
    assert panel.refreshing() and panel.select_feature("hue")  # ... the user picks another
    with qtbot.waitSignal(panel.refreshed, timeout=10_000):
        pass
    qtbot.waitUntil(lambda: panel.distribution.feature == "hue", timeout=10_000)
    assert panel.selected_feature() == "hue"
    qtbot.wait(200)  # no late answer of the refresh's feature replaces it
    # Nor was it drawn in between: the refresh's answer for the old feature is not shown.
    assert drawn == ["hue"] and panel.distribution.feature == "hue"


def test_refreshes_keep_the_selection_and_update_table_and_plot_in_place(
        panel, qtbot, drifted, demo_dir):
    with qtbot.waitSignal(panel.distribution_shown, timeout=10_000):
        assert panel.select_feature("flavanoids")
    first_cell = panel.table.item(0, 0)
    reference_curve = panel.distribution.items["reference"]
    # A new evaluation changes the scores; the features stay.
    monitor = DriftMonitor(drifted, window_rows=500, min_rows=50, interval_s=3600)
    monitor.start()
    try:
        record(drifted, monitor, demo_captures(demo_dir, 2000, 2300))
        assert monitor.evaluate_soon().wait(30)
    finally:
        monitor.close()
    before = _table(panel)
    _refresh(panel, qtbot)
    store = Store(drifted, readonly=True)
    try:
        expected = latest_table(store, ENDPOINT)
        comparison = feature_comparison(store, ENDPOINT, "flavanoids")
    finally:
        store.close()
    rows = _table(panel)
    assert rows != before and [r[0] for r in rows] == [r.feature for r in expected]
    assert [r[4] for r in rows] == ["yes" if r.drifted else "no" for r in expected]
    for i, r in enumerate(expected):
        colour = panel.table.item(i, 4).foreground().color()
        assert (colour == DRIFTED_COLOR) == r.drifted
    assert panel.selected_feature() == "flavanoids"
    assert panel.table.item(0, 0) is first_cell  # texts set in place, no new items
    assert panel.distribution.feature == "flavanoids"
    assert panel.distribution.items["reference"] is reference_curve
    assert list(panel.distribution.items["current"].yData) == pytest.approx(
        list(comparison.distribution.current))


def test_the_reference_file_is_parsed_once_until_it_changes(
        panel, qtbot, tmp_path, demo_dir, monkeypatch):
    reference = tmp_path / "reference.csv"
    shutil.copy(demo_dir / "reference.csv", reference)
    with qtbot.waitSignal(panel.refreshed, timeout=10_000):
        assert panel.set_reference_file(reference)
    reads: list[Path] = []
    real = references.read_table

    def counted(path):
        reads.append(Path(path))
        return real(path)

    monkeypatch.setattr(references, "read_table", counted)
    for _ in range(3):
        _refresh(panel, qtbot)
    assert reads.count(reference.resolve()) <= 1
    stat = reference.stat()
    os.utime(reference, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file changes
    reads.clear()
    _refresh(panel, qtbot)
    assert reads == [reference.resolve()]
    assert panel.distribution.items  # still drawn against it


def test_a_reference_that_cannot_be_read_says_so_as_before(panel, qtbot, tmp_path, demo_dir):
    reference = tmp_path / "reference.csv"
    shutil.copy(demo_dir / "reference.csv", reference)
    with qtbot.waitSignal(panel.refreshed, timeout=10_000):
        assert panel.set_reference_file(reference)
    reference.unlink()
    feature = panel.selected_feature()
    with qtbot.waitSignal(panel.error_occurred, timeout=10_000) as error:
        panel.refresh()
    assert "does not exist" in error.args[0] and "\n" not in error.args[0]
    qtbot.waitUntil(lambda: not panel.refreshing(), timeout=10_000)
    assert panel.distribution.items == {}
    assert panel.distribution.plot.titleLabel.text == f"{feature}: could not read the workspace"
    assert panel.table.rowCount() > 0  # the table is still shown


def test_a_redrawn_distribution_reuses_its_items_and_legend(qtbot):
    from widgets.drift_plots import DistributionPlotWidget

    plot = DistributionPlotWidget()
    qtbot.addWidget(plot)
    plot.set_categorical("prediction", ["0", "1"], np.array([0.5, 0.5]), np.array([0.2, 0.8]))
    bars = dict(plot.items)
    plot.set_categorical("prediction", ["0", "1", "2"], np.array([0.2, 0.3, 0.5]),
                         np.array([0.1, 0.1, 0.8]), title="prediction: again")
    assert plot.items == bars
    assert list(bars["current"].opts["height"]) == [0.1, 0.1, 0.8]
    assert [name for _, name in plot.plot.getAxis("bottom")._tickLevels[0]] == ["0", "1", "2"]
    assert [label.text for _, label in plot.legend.items] == ["reference", "current"]
    assert plot.plot.titleLabel.text == "prediction: again"
    edges = np.linspace(0.0, 1.0, 5)
    plot.set_numerical("alcohol", edges, np.full(4, 0.25), np.array([0.1, 0.2, 0.3, 0.4]))
    curves = dict(plot.items)
    assert curves.keys() == bars.keys() and curves["current"] is not bars["current"]
    plot.set_numerical("ash", edges, np.full(4, 0.25), np.array([0.4, 0.3, 0.2, 0.1]))
    assert plot.items == curves and plot.feature == "ash"
    assert list(curves["current"].yData) == [0.4, 0.3, 0.2, 0.1]
    assert [label.text for _, label in plot.legend.items] == ["reference", "current"]
    assert plot.plot.titleLabel.text == "ash: share of rows per bin"
