"""The window as a user meets it: demo data moving, attach/detach, errors, clean close."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QDialogButtonBox

from app.core.demo import demo_endpoints, model_path
from app.core.domain import Sample
from app.core.store import Store, StoreError
from app.gui.demo import start_demo
from app.gui.settings import Settings

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


def _probe_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.is_alive() and (t.name.startswith("probe ") or t.name == "recorder")]


def test_demo_plots_receive_latency_memory_throughput_and_failures(window, qtbot):
    start_demo(window)
    endpoints = list(window.monitor.probes)
    assert len(endpoints) == len(demo_endpoints()) + 1  # and the live remote endpoint
    assert window.endpoint_list.endpoints() == endpoints
    production = window.panels[endpoints[0]]
    qtbot.waitUntil(lambda: production.latency_plot.point_count("points") > 0, timeout=10_000)
    qtbot.waitUntil(lambda: production.memory_plot.point_count() > 0, timeout=10_000)
    qtbot.waitUntil(lambda: production.rate_plot.point_count("throughput") > 0, timeout=10_000)
    # The demo's stream carries mislabelled and NaN rows: failures show as red points.
    qtbot.waitUntil(lambda: production.latency_plot.point_count("failures") > 0, timeout=10_000)
    system = window.panels["system:"]
    window.endpoint_list.select("system:")  # below the fold now the panels dock beneath
    qtbot.waitUntil(lambda: system.memory_plot.point_count() > 0, timeout=10_000)
    qtbot.waitUntil(lambda: window.endpoint_list.state(endpoints[0]) in ("up", "degraded"),
                    timeout=10_000)
    assert window.frames > 0


def test_attaching_a_uri_starts_data_and_detaching_stops_it(window, qtbot):
    clock = window.attach("system:?rate=20")
    uri = f"onnx:{model_path('wine-v3')}?provider=cpu&rate=100"
    probe = window.attach(uri)
    panel = window.panels[probe.endpoint]
    qtbot.waitUntil(lambda: panel.latency_plot.point_count("points") > 0, timeout=10_000)

    window.detach(probe.endpoint)  # returns at once; the probe ends after its request
    qtbot.waitUntil(lambda: not probe.alive, timeout=5_000)
    assert window.endpoint_list.state(probe.endpoint) == "stopped"
    assert not window.actions.detach.isEnabled()  # nothing left to detach or pause
    assert not window.actions.pause_probe.isEnabled()
    bus = window.monitor.bus
    qtbot.waitUntil(lambda: len(bus) == 0, timeout=5_000)
    clock_ring = window.panels[clock.endpoint].series.ring("rss_mb")
    mark = clock_ring.total
    qtbot.waitUntil(lambda: clock_ring.total >= mark + 2, timeout=5_000)  # a flush went by
    held = panel.series.ring("latency_ms").total
    mark = clock_ring.total
    qtbot.waitUntil(lambda: clock_ring.total >= mark + 10, timeout=10_000)
    assert panel.series.ring("latency_ms").total == held


def _press_attach(dialog) -> None:
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()


@pytest.mark.parametrize(("uri", "expected"), [
    ("onnx:/no/such/model.onnx?provider=cpu", "does not exist"),
    ("bogus:thing", "unknown endpoint kind"),
    ("onnx:model.onnx?token=abc", "secrets do not belong in a URI"),
    ("system:?rat=5", "did you mean rate?"),
    ("system:?rate=-5", "must be positive"),
    ("system:extra", "system: takes no target"),
])
def test_a_bad_uri_shows_its_error_in_the_dialog(window, qtbot, uri, expected):
    dialog = window.show_attach_dialog()
    qtbot.waitExposed(dialog)
    dialog.uri.setText(uri)
    _press_attach(dialog)
    qtbot.waitUntil(lambda: not dialog.connecting(), timeout=10_000)
    assert dialog.isVisible()
    assert dialog.error.isVisible()
    assert expected in dialog.error.text()
    assert window.endpoint_list.endpoints() == []
    dialog.reject()


def test_a_long_error_is_shown_whole(window, qtbot, tmp_path):
    corrupt = tmp_path / "a-model-with-a-rather-long-name-v2024.11-hotfix.onnx"
    corrupt.write_bytes(model_path("wine-v2").read_bytes()[:2000])  # a truncated copy
    dialog = window.show_attach_dialog()
    qtbot.waitExposed(dialog)
    dialog.uri.setText(f"onnx:{corrupt}?provider=cpu")
    _press_attach(dialog)
    qtbot.waitUntil(lambda: not dialog.connecting(), timeout=10_000)
    label = dialog.error
    assert label.isVisible() and "cannot load" in label.text()
    qtbot.waitUntil(lambda: label.height() >= label.heightForWidth(label.width()))
    assert label.geometry().bottom() <= dialog.rect().bottom()
    dialog.reject()


def test_the_dialog_attaches_a_good_uri_and_closes(window, qtbot):
    dialog = window.show_attach_dialog()
    assert dialog.kind.currentData() == "onnx"  # the usual first probe, with Browse…
    qtbot.keyClicks(dialog.uri, "system:")
    assert dialog.kind.currentData() == "system"  # the kind follows what is typed
    dialog.uri.clear()
    dialog.uri.setText(f"onnx:{model_path('wine-v2')}?provider=cpu&rate=50")
    with qtbot.waitSignal(dialog.accepted, timeout=5_000):
        _press_attach(dialog)
    (endpoint,) = window.endpoint_list.endpoints()
    qtbot.waitUntil(lambda: window.panels[endpoint].latency_plot.point_count() > 0,
                    timeout=10_000)


def test_attaching_a_server_that_never_answers_keeps_the_window_alive_and_cancels(
        window, qtbot):
    """The server check runs off the GUI thread: a server that accepts the connection and
    never answers (or trickles its answer) used to freeze the window for good."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    try:
        uri = f"v2+http://127.0.0.1:{silent.getsockname()[1]}/models/m"
        dialog = window.show_attach_dialog()
        qtbot.waitExposed(dialog)
        dialog.uri.setText(uri)
        ticks = []
        timer = QTimer(window)
        timer.timeout.connect(lambda: ticks.append(time.monotonic()))
        timer.start(50)
        _press_attach(dialog)
        assert dialog.connecting() and "Connecting to" in dialog.hint.text()
        qtbot.wait(1000)  # the GUI thread keeps running meanwhile
        assert len(ticks) >= 10 and max(np.diff(ticks)) < 0.5
        dialog.reject()  # Cancel stops waiting
        timer.stop()
        assert window.endpoint_list.endpoints() == []
    finally:
        silent.close()


def test_dropping_an_onnx_file_attaches_it(window, qtbot):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(model_path("wine-v1")))])
    event = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    (endpoint,) = window.endpoint_list.endpoints()
    assert endpoint.startswith("onnx:") and "wine-v1.onnx" in endpoint
    qtbot.waitUntil(lambda: window.panels[endpoint].latency_plot.point_count() > 0,
                    timeout=10_000)


def test_clicking_a_failed_point_opens_its_capture(window, qtbot):
    start_demo(window)
    panel = window.panels[next(iter(window.monitor.probes))]
    plot = panel.latency_plot
    qtbot.waitUntil(lambda: plot.point_count("failures") > 0, timeout=15_000)
    window.set_live_paused(True)  # hold the view still while we aim
    t, v = plot._data["failures"]
    vb = plot.getViewBox()
    vb.setXRange(t[-1] - 2, t[-1] + 2, padding=0)
    vb.setYRange(v[-1] - 1, v[-1] + 1, padding=0)
    qtbot.wait(50)  # let the view settle so the mapping below is the one on screen
    scene_pt = vb.mapViewToScene(QPointF(t[-1], v[-1]))
    pos = plot.mapFromScene(scene_pt)
    qtbot.mouseClick(plot.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(pos.x(), pos.y()))
    qtbot.waitUntil(lambda: window.capture_dialog is not None, timeout=10_000)
    capture = window.capture_dialog.capture
    assert capture.failed
    assert abs(capture.ts_ns / 1e9 - t[-1]) < 0.01
    assert capture.inputs and "shape" in window.capture_dialog.inputs.toPlainText()
    window.capture_dialog.reject()


def test_long_windows_draw_history_from_the_store(window, qtbot):
    probe = window.attach(f"onnx:{model_path('wine-v1')}?provider=cpu&rate=100")
    panel = window.panels[probe.endpoint]
    qtbot.waitUntil(lambda: panel.latency_plot.point_count() > 20, timeout=10_000)
    window.set_time_window("all")
    assert panel.mode == "history"
    qtbot.waitUntil(lambda: panel.latency_plot.point_count("p50") > 0
                    and panel.memory_plot.point_count() > 0, timeout=10_000)
    window.set_time_window("1 min")
    assert panel.mode == "live"


def test_close_with_probes_running_stops_everything_and_keeps_the_data(window, qtbot,
                                                                       workspace: Path):
    start_demo(window)
    qtbot.waitUntil(lambda: window.monitor.stats().committed_samples > 100, timeout=10_000)
    assert _probe_threads()
    window.close()
    assert not _probe_threads()
    assert not window.history._thread.isRunning()
    store = Store(workspace)
    try:
        assert store.count_samples() > 100
    finally:
        store.close()


def test_settings_remember_theme_window_and_recent(window, qtbot, workspace: Path):
    window.set_theme("light")
    window.set_time_window("10 min")
    window.close()
    settings = Settings()
    assert settings.theme() == "light"
    assert settings.time_window() == "10 min"
    assert settings.recent()[0] == str(workspace.resolve())
    assert settings.geometry() is not None


def test_event_loop_stays_responsive_at_10k_samples_per_second(window, qtbot):
    monitor = window.monitor
    monitor.start()
    stop = threading.Event()
    endpoints = [f"load:{i}" for i in range(4)]

    def feed() -> None:  # 10,000 samples/s: 500 every 50 ms, spread over four endpoints
        rng = np.random.default_rng(0)
        while not stop.wait(0.05):
            now = time.time_ns()
            batch = [Sample(endpoints[k % 4], now + k, "latency_ms", float(rng.random()))
                     for k in range(500)]
            monitor.bus.put_many(batch)

    feeder = threading.Thread(target=feed, name="feeder", daemon=True)
    feeder.start()
    try:
        qtbot.waitUntil(lambda: all(e in window.panels for e in endpoints), timeout=10_000)
        window.lag_meter.reset()
        start = monitor.stats().committed_samples
        qtbot.waitUntil(lambda: monitor.stats().committed_samples - start >= 30_000,
                        timeout=30_000)
        worst_ms = window.lag_meter.worst_ever_ms
    finally:
        stop.set()
        feeder.join()
    assert window.panels[endpoints[0]].latency_plot.point_count("points") > 0
    assert worst_ms < 1000, f"GUI stalled {worst_ms:.0f} ms"


def test_run_window_opens_the_demo_workspace_in_the_user_data_dir(isolated_user_dirs):
    # Its own process, as `python main.py` would be: QApplication.exec() returning leaves
    # PySide holding the GIL through later QTest.qWait calls in the same process.
    shot = isolated_user_dirs / "shot.png"
    env = {**os.environ, "XDG_DATA_HOME": str(isolated_user_dirs / "data"),
           "XDG_CONFIG_HOME": str(isolated_user_dirs / "config"), "QT_QPA_PLATFORM": "offscreen"}
    code = ("import sys; from pathlib import Path; from app.gui.launch import run_window; "
            f"sys.exit(run_window(None, screenshot=Path({str(shot)!r}), screenshot_after_s=3))")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, timeout=60,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert shot.stat().st_size > 10_000
    demo_db = isolated_user_dirs / "data" / "probescope" / "demo.db"
    store = Store(demo_db)
    try:
        assert store.count_samples(metric="latency_ms") > 0
        assert {e["kind"] for e in store.endpoints()} >= {"onnx", "system"}
    finally:
        store.close()


def test_space_freezes_the_live_plots_and_an_incident_window_can_be_shown(window, qtbot):
    probe = window.attach(f"onnx:{model_path('wine-v1')}?provider=cpu&rate=50")
    panel = window.panels[probe.endpoint]
    qtbot.waitUntil(lambda: panel.latency_plot.point_count() > 0, timeout=10_000)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5_000)
    qtbot.keyClick(window.endpoint_list, Qt.Key.Key_Space)
    assert window.live_paused and window.actions.freeze.isChecked()
    qtbot.keyClick(window.endpoint_list, Qt.Key.Key_Space)
    assert not window.live_paused
    window.show_time_range(1000.0, 2000.0)
    assert window.live_paused
    (x0, x1), _ = panel.latency_plot.getViewBox().viewRange()
    assert (x0, x1) == (1000.0, 2000.0)
    assert "wine-v1" in window.details.text() and "Requests" in window.details.text()


def test_hovering_a_point_shows_its_value(window, qtbot):
    probe = window.attach(f"onnx:{model_path('wine-v1')}?provider=cpu&rate=100")
    plot = window.panels[probe.endpoint].latency_plot
    qtbot.waitUntil(lambda: plot.point_count("points") > 20, timeout=10_000)
    window.set_live_paused(True)
    t, v = plot._data["points"]
    vb = plot.getViewBox()
    vb.setXRange(t[-1] - 1, t[-1] + 1, padding=0)
    vb.setYRange(v[-1] - 1, v[-1] + 1, padding=0)
    qtbot.wait(50)
    pos = plot.mapFromScene(vb.mapViewToScene(QPointF(t[-1], v[-1])))
    qtbot.mouseMove(plot.viewport(), QPoint(pos.x(), pos.y()))
    qtbot.waitUntil(lambda: plot._hover_text.isVisible(), timeout=5_000)
    assert f"{v[-1]:.4g} ms" in plot._hover_text.toPlainText()


def test_opening_a_recorded_workspace_lists_its_endpoints_with_history(qtbot, tmp_path,
                                                                        workspace: Path):
    from app.core.monitor import Monitor
    from app.gui.main_window import MainWindow

    monitor = Monitor(workspace)
    probe = monitor.attach(f"onnx:{model_path('wine-v2')}?provider=cpu&rate=200&slo_ms=5")
    endpoint = probe.endpoint
    qtbot.waitUntil(lambda: monitor.stats().committed_samples > 100, timeout=10_000)
    monitor.close()
    store = Store(workspace)
    try:
        recorded = store.count_samples(endpoint, "latency_ms")
    finally:
        store.close()
    assert recorded == probe.requests > 0

    other = tmp_path / "other.db"
    w = MainWindow(other)
    qtbot.addWidget(w)
    w.show()
    try:
        w.set_time_window("1 min")
        w._open_path(workspace)  # File > Open and Open recent land here
        assert w.endpoint_list.endpoints() == [endpoint]
        assert w.endpoint_list.state(endpoint) == "stopped"
        row = w.endpoint_list.row_texts(endpoint)
        assert (row["Kind"], row["Version"], row["Provider"]) == ("onnx", "2.0.0", "cpu")
        assert w.actions.window_box.currentText() == "all"  # nothing live: show the past
        assert Settings().time_window() == "1 min"  # for this workspace, not from now on
        panel = w.panels[endpoint]
        qtbot.waitUntil(lambda: panel.latency_plot.point_count("p50") > 0, timeout=10_000)
        # Its counters as recorded, in the list and the details (read off the GUI thread).
        qtbot.waitUntil(lambda: w.endpoint_list.row_texts(endpoint)["Requests"]
                        == f"{recorded:,}", timeout=10_000)
        w.endpoint_list.select(endpoint)
        details = w.details.text()
        assert f"Recorded requests</b>: {recorded:,}" in details
        assert "SLO</b>: 5 ms" in details and "Model version</b>: 2.0.0" in details
        recent = [a.text() for a in w.actions.recent_menu.actions()]
        assert recent[:2] == [str(workspace.resolve()), str(other.resolve())]
    finally:
        w.shutdown()


def test_a_workspace_recorded_a_day_ago_is_drawn_over_its_own_span(qtbot, tmp_path):
    """'all' runs from the first sample to the last, not to now: up to now, a 30 s recording
    opened a day later fell into one of the 1,000 buckets and drew as a single point."""
    from app.gui.main_window import MainWindow

    endpoint = f"onnx:{model_path('wine-v1')}?provider=cpu"
    start = time.time_ns() - 86_400 * 10**9
    ts = start + np.arange(1500, dtype=np.int64) * 20_000_000  # 30 s at 50 req/s
    recorded = tmp_path / "yesterday.db"
    store = Store(recorded)
    try:
        store.write_batch([Sample(endpoint, int(t), "latency_ms", 1.0 + (i % 7) / 10)
                           for i, t in enumerate(ts)], [])
    finally:
        store.close()
    w = MainWindow(tmp_path / "other.db")
    qtbot.addWidget(w)
    w.show()
    try:
        w._open_path(recorded)
        panel = w.panels[endpoint]
        qtbot.waitUntil(lambda: panel.latency_plot.point_count("p50") > 500, timeout=10_000)
        span = (ts[-1] - ts[0]) / 1e9

        def over_its_span() -> bool:  # set once the round of history answers is in
            (x0, x1), _ = panel.latency_plot.getViewBox().viewRange()
            return abs(x0 - ts[0] / 1e9) < 0.05 * span and abs(x1 - ts[-1] / 1e9) < 0.05 * span

        qtbot.waitUntil(over_its_span, timeout=5_000)
        _, rate = panel.rate_plot._data["throughput"]
        assert np.all(np.abs(rate - 50) <= 5), rate
    finally:
        w.shutdown()


def test_a_workspace_deleted_while_recording_is_said_and_not_saved_as_empty(
        window, qtbot, workspace: Path, tmp_path, monkeypatch):
    """The recorder keeps writing to a file no longer on disk: the status bar says so, and
    Save as refuses instead of copying a new, empty workspace made at the old path."""
    from PySide6.QtWidgets import QFileDialog, QMessageBox

    probe = window.attach("system:?rate=20")
    qtbot.waitUntil(lambda: probe.requests > 2, timeout=10_000)
    window._on_status_timer_timeout()
    assert not window.status.problem_label.isVisible()
    for end in ("", "-wal", "-shm"):
        Path(f"{workspace}{end}").unlink(missing_ok=True)
    window._on_status_timer_timeout()
    assert window.status.problem_label.isVisible()
    assert "was deleted" in window.status.problem_label.text()
    warnings: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning",  # Qt's own dialogs, answered here
                        staticmethod(lambda _p, _t, text: warnings.append(text)))
    copy = tmp_path / "copy"
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *_a: (str(copy), "")))
    window._on_save_as_triggered()
    assert warnings and "no longer exists on disk" in warnings[0]
    assert not workspace.exists() and not copy.with_suffix(".db").exists()


def test_opening_a_recorded_workspace_at_start_keeps_the_saved_time_window(qtbot, tmp_path):
    from app.core.monitor import Monitor
    from app.gui.main_window import MainWindow

    recorded = tmp_path / "recorded.db"
    monitor = Monitor(recorded)
    monitor.attach("system:?rate=50")
    qtbot.waitUntil(lambda: monitor.stats().committed_samples > 5, timeout=10_000)
    monitor.close()
    Settings().set_time_window("1 min")
    w = MainWindow(recorded)  # `main.py --db recorded.db`
    qtbot.addWidget(w)
    try:
        assert w.actions.window_box.currentText() == "all"  # this workspace: its past
        assert Settings().time_window() == "1 min"  # the user's choice, for the next one
    finally:
        w.shutdown()


def test_a_recent_workspace_deleted_since_is_said_and_dropped(window, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    gone, first = tmp_path / "gone.db", window.db_path
    Store(gone).close()
    window._open_path(gone)
    window._open_path(first)  # gone.db is now a recent workspace, not the open one
    gone.unlink()
    warnings: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning",
                        staticmethod(lambda _p, _t, text: warnings.append(text)))
    (action,) = [a for a in window.actions.recent_menu.actions() if a.text() == str(gone)]
    action.trigger()
    assert warnings == [f"{gone} no longer exists"]
    assert not gone.exists()  # not made again, empty
    assert str(gone) not in [a.text() for a in window.actions.recent_menu.actions()]


def test_pausing_a_probe_holds_it_and_resuming_restarts_it(window, qtbot):
    probe = window.attach(f"onnx:{model_path('wine-v2')}?provider=cpu&rate=100")
    qtbot.waitUntil(lambda: probe.requests > 5, timeout=10_000)
    window.endpoint_list.select(probe.endpoint)
    window.actions.pause_probe.trigger()  # the toolbar's Pause probe, on the selection
    assert probe.paused
    qtbot.waitUntil(lambda: window.endpoint_list.state(probe.endpoint) == "paused",
                    timeout=5_000)
    window.actions.pause_probe.trigger()
    assert not probe.paused
    held = probe.requests
    qtbot.waitUntil(lambda: probe.requests > held + 5, timeout=10_000)


def test_one_model_probed_twice_is_told_apart_in_the_list_and_the_panels(window):
    first = window.attach(f"onnx:{model_path('wine-v1')}?provider=cpu&rate=5").endpoint
    second = window.attach(f"onnx:{model_path('wine-v1')}?provider=cpu&rate=50").endpoint
    names = [window.endpoint_list._items[e].text(0) for e in (first, second)]
    titles = [window.panels[e].title.text() for e in (first, second)]
    assert titles == ["onnx: wine-v1.onnx (rate=5)", "onnx: wine-v1.onnx (rate=50)"]
    # The list leaves the scheme to its Kind column: in a narrow dock the names stay apart.
    assert names == ["wine-v1.onnx (rate=5)", "wine-v1.onnx (rate=50)"]
    assert [window.endpoint_list.row_texts(e)["Kind"] for e in (first, second)] == ["onnx"] * 2


def test_a_newly_attached_endpoint_is_scrolled_into_view(window, qtbot):
    window.resize(1200, 700)
    for rate in (5, 6, 7):
        window.attach(f"onnx:{model_path('wine-v1')}?provider=cpu&rate={rate}")
    last = window.attach("system:?rate=5").endpoint
    panel = window.panels[last]
    qtbot.waitUntil(lambda: not panel.visibleRegion().isEmpty(), timeout=5_000)
    assert window.live.verticalScrollBar().value() > 0  # it was below the fold


def test_ctrl_c_in_the_terminal_closes_the_window_as_quit_does(isolated_user_dirs):
    # Its own process, as `probescope` is run from a terminal; SIGINT is what Ctrl+C sends.
    env = {**os.environ, "XDG_DATA_HOME": str(isolated_user_dirs / "data"),
           "XDG_CONFIG_HOME": str(isolated_user_dirs / "config"), "QT_QPA_PLATFORM": "offscreen"}
    demo_db = isolated_user_dirs / "data" / "probescope" / "demo.db"
    log = isolated_user_dirs / "stderr.txt"  # a file: Qt's warnings would fill a pipe
    with log.open("w") as err_file:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err_file)
    try:
        deadline = time.monotonic() + 60
        committed = 0
        while committed == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if demo_db.exists():  # the demo's probes run once the event loop does
                try:  # made, its tables perhaps not yet: the window is still starting
                    store = Store(demo_db, readonly=True)
                except StoreError:
                    continue
                try:
                    committed = store.count_samples(metric="latency_ms")
                except sqlite3.OperationalError:
                    pass
                finally:
                    store.close()
        assert committed > 0, "the window's demo recorded nothing"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = log.read_text()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    store = Store(demo_db, readonly=True)
    try:  # closed as Quit closes it: the recorder's last flush is in the workspace
        assert store.count_samples(metric="latency_ms") >= committed
    finally:
        store.close()
