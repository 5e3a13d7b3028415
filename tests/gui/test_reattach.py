"""A workspace reopened in the window watches again what the user had attached in it: real
probes, a real edge agent, real SQLite files, offscreen Qt."""

from __future__ import annotations

import secrets
import shutil
import sqlite3
from pathlib import Path

import pytest
from PySide6.QtWidgets import QDialogButtonBox

from app.core.demo import model_path
from app.core.store import Store, StoreError
from app.gui.attach_dialog import AttachDialog
from app.gui.main_window import MainWindow
from app.gui.settings import Settings
from tests.agent.conftest import Proc, env_with

pytestmark = pytest.mark.timeout(120)


def _open(qtbot, workspace: Path) -> MainWindow:
    w = MainWindow(workspace)
    qtbot.addWidget(w)
    w.show()
    return w


def _committed(workspace: Path, endpoint: str) -> int:
    store = Store(workspace, readonly=True)
    try:
        return store.db.execute(
            "SELECT count(*) FROM samples s JOIN endpoints e ON e.id = s.endpoint_id "
            "WHERE e.uri = ?", [endpoint]).fetchone()[0]
    finally:
        store.close()


def test_a_reopened_workspace_attaches_again_what_was_attached_not_what_was_detached(
        qtbot, workspace: Path):
    model = f"onnx:{model_path('wine-v3')}?provider=cpu&rate=100"
    first = _open(qtbot, workspace)
    try:
        kept = first.attach(model).endpoint
        dropped = first.attach("system:?rate=20").endpoint
        first.detach(dropped)
    finally:
        first.shutdown()  # closing the window stops the probes; it does not detach them
    before = _committed(workspace, kept)

    again = _open(qtbot, workspace)
    try:
        qtbot.waitUntil(lambda: kept in again.monitor.probes, timeout=20_000)
        assert dropped not in again.monitor.probes
        assert again.endpoint_list.state(dropped) == "stopped"
        # Watching again, live: new samples reach the workspace and the live plot.
        qtbot.waitUntil(lambda: again.endpoint_list.state(kept) in ("up", "degraded"),
                        timeout=20_000)
        panel = again.panels[kept]
        qtbot.waitUntil(lambda: panel.latency_plot.point_count("points") > 0, timeout=20_000)
        assert again.actions.window_box.currentText() != "all"  # live, not the past
        again.endpoint_list.select(kept)
        assert again.actions.detach.isEnabled() and not again.actions.reattach.isEnabled()
    finally:
        again.shutdown()
    assert _committed(workspace, kept) > before


def test_a_copy_of_the_workspace_from_elsewhere_attaches_nothing_by_itself(
        qtbot, workspace: Path, tmp_path: Path):
    # What was attached is the user's setting for that file, not something the file carries:
    # a workspace handed over by someone else must not connect anywhere by being opened.
    first = _open(qtbot, workspace)
    try:
        endpoint = first.attach("system:?rate=20").endpoint
    finally:
        first.shutdown()
    handed_over = tmp_path / "from-a-colleague.db"
    shutil.copy(workspace, handed_over)

    w = _open(qtbot, handed_over)
    try:
        assert w.endpoint_list.endpoints() == [endpoint]
        assert not w.reattacher.pending and not w.monitor.probes
        assert w.endpoint_list.state(endpoint) == "stopped"
    finally:
        w.shutdown()


def test_an_endpoint_that_cannot_be_attached_again_says_why_and_is_attached_from_the_dialog(
        qtbot, workspace: Path, tmp_path: Path):
    model = tmp_path / "wine.onnx"
    shutil.copy(model_path("wine-v1"), model)
    uri = f"onnx:{model}?provider=cpu&rate=50"
    first = _open(qtbot, workspace)
    try:
        endpoint = first.attach(uri).endpoint
    finally:
        first.shutdown()
    moved = model.rename(tmp_path / "moved.onnx")

    w = _open(qtbot, workspace)
    try:
        qtbot.waitUntil(lambda: endpoint in w.reattacher.failures, timeout=20_000)
        assert endpoint not in w.monitor.probes
        assert w.endpoint_list.state(endpoint) == "stopped"
        w.endpoint_list.select(endpoint)
        assert "does not exist" in w.details.text() and "Not attached again" in w.details.text()
        assert "attached 0 of 1" in w.statusBar().currentMessage()
        # Still remembered: a model back in place is watched at the next open, or now.
        assert Settings().attached(workspace) == [(endpoint, uri)]
        moved.rename(model)
        assert w.actions.reattach.isEnabled()
        w.actions.reattach.trigger()
        dialog = w.findChild(AttachDialog)
        assert dialog.uri.text() == uri  # shown before it connects anywhere
        dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
        qtbot.waitUntil(lambda: endpoint in w.monitor.probes, timeout=20_000)
        assert endpoint not in w.reattacher.failures
        assert "Not attached again" not in w.details.text()
    finally:
        w.shutdown()


def test_an_agent_is_attached_again_with_the_token_file_its_endpoint_name_leaves_out(
        qtbot, workspace: Path, tmp_path: Path):
    token_file = tmp_path / "agent.token"
    token_file.write_text(secrets.token_urlsafe(32) + "\n")
    token_file.chmod(0o600)
    agent = Proc(["agent", "--listen", "127.0.0.1:0", "--token-file", str(token_file),
                  "--model", str(model_path("wine-v1")), "--rate", "50",
                  "--buffer", str(tmp_path / "agent.sqlite")], env=env_with())
    try:
        uri = f"agent+{agent.url}?token_file={token_file}"
        first = _open(qtbot, workspace)
        try:
            endpoint = first.attach(uri).endpoint
            assert "token_file" not in endpoint
        finally:
            first.shutdown()

        again = _open(qtbot, workspace)
        try:
            qtbot.waitUntil(lambda: endpoint in again.monitor.probes, timeout=20_000)
            # Its name alone would have read the token from $PROBESCOPE_AGENT_TOKEN, which
            # is not set here: the agent would have refused it.
            qtbot.waitUntil(lambda: again.endpoint_list.state(endpoint) == "up",
                            timeout=20_000)
            assert not again.reattacher.failures
            # The list counts the model's requests the agent recorded, not this window's pulls.
            probe = again.monitor.probes[endpoint]
            qtbot.waitUntil(lambda: probe.model_requests > probe.requests, timeout=20_000)
            qtbot.waitUntil(lambda: again.endpoint_list.row_texts(endpoint)["Requests"]
                            == f"{probe.model_requests:,}", timeout=20_000)
        finally:
            again.shutdown()
    finally:
        agent.kill()


def test_endpoints_named_on_the_command_line_are_attached_and_a_bad_one_is_said(
        qtbot, workspace: Path, tmp_path: Path):
    w = _open(qtbot, workspace)
    try:
        missing = f"onnx:{tmp_path / 'missing.onnx'}?provider=cpu"
        w.reattacher.attach_new(["system:?rate=20", missing])
        qtbot.waitUntil(lambda: "system:?rate=20" in w.monitor.probes, timeout=20_000)
        qtbot.waitUntil(lambda: "could not attach" in w.statusBar().currentMessage(),
                        timeout=20_000)
        assert "missing.onnx does not exist" in w.statusBar().currentMessage()
        assert list(w.monitor.probes) == ["system:?rate=20"]
    finally:
        w.shutdown()
    # Attached as the user asked: watched again when the workspace next opens.
    assert Settings().attached(workspace) == [("system:?rate=20", "system:?rate=20")]


def test_probescope_attach_opens_the_window_recording_that_endpoint(tmp_path: Path):
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    workspace = tmp_path / "ws.db"
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "QT_QPA_PLATFORM": "offscreen"}
    with (tmp_path / "stderr.txt").open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "--db", str(workspace),
                                 "--attach", "system:?rate=20"], env=env, cwd=root,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline, recorded = time.monotonic() + 60, 0
        while not recorded and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if workspace.exists():
                try:  # made, its tables perhaps not yet: the window is still starting
                    store = Store(workspace, readonly=True)
                except StoreError:
                    continue
                try:
                    recorded = store.count_samples("system:?rate=20", "cpu_percent")
                except sqlite3.OperationalError:
                    pass
                finally:
                    store.close()
        assert recorded, (tmp_path / "stderr.txt").read_text()
        proc.send_signal(signal.SIGINT)  # closes as Quit does
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_attaching_again_an_endpoint_from_someone_elses_workspace_says_which_token_goes_where(
        qtbot, workspace: Path):
    # Not remembered here: its name is all there is, and it names the host the token goes to.
    store = Store(workspace)
    try:
        store.endpoint_id("agent+http://10.0.0.7:7070", "agent+http")
    finally:
        store.close()
    w = _open(qtbot, workspace)
    try:
        w.endpoint_list.select("agent+http://10.0.0.7:7070")
        assert w.actions.reattach.isEnabled() and not w.monitor.probes
        dialog = w.show_reattach_dialog("agent+http://10.0.0.7:7070")
        assert dialog.uri.text() == "agent+http://10.0.0.7:7070"
        assert ("Attaching sends the token in $PROBESCOPE_AGENT_TOKEN to 10.0.0.7:7070"
                in dialog.hint.text())
        dialog.reject()
    finally:
        w.shutdown()


def test_a_reopened_workspaces_live_windows_go_on_from_its_recent_past(qtbot, workspace: Path):
    """The live plots started empty on reopening: the last minutes, in the workspace, were
    only in the long (history) windows."""
    first = _open(qtbot, workspace)
    try:
        probe = first.attach(f"onnx:{model_path('wine-v1')}?provider=cpu&rate=100"
                             f"&payload={model_path('wine-v1').parent / 'production.csv'}")
        endpoint = probe.endpoint
        # Past a whole second too: a recording shorter than one closes no second, so it
        # has no rate to show (a CI run stopped at 3 errors within the first second).
        qtbot.waitUntil(lambda: probe.errors >= 3
                        and first.panels[endpoint].series.throughput.n >= 2, timeout=20_000)
        first.detach(endpoint)  # not attached again: what the plots show is the past alone
    finally:
        first.shutdown()
    store = Store(workspace)
    try:
        recorded = store.count_samples(endpoint, "latency_ms")
        failed = store.count_captures(endpoint, failed=True)
    finally:
        store.close()

    again = _open(qtbot, workspace)
    try:
        panel = again.panels[endpoint]
        qtbot.waitUntil(lambda: panel.series.newest_s() is not None, timeout=20_000)
        assert panel.series.ring("latency_ms").n == recorded
        assert panel.series.failures.n == failed > 0  # the red dots too
        again.set_time_window("1 min")
        qtbot.waitUntil(lambda: panel.latency_plot.point_count("points") > 0, timeout=10_000)
        qtbot.waitUntil(lambda: panel.latency_plot.point_count("failures") > 0, timeout=10_000)
        # Its figures are its last, not a server answering now.
        qtbot.waitUntil(lambda: panel.stats.text().startswith("stopped; last recorded:"),
                        timeout=10_000)
        assert "req/s" in panel.stats.text()
    finally:
        again.shutdown()
