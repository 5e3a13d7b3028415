"""Driving the replay panel in tests as a person does: load the failures, click Replay, read
the summary line. Shared by the panel's test modules (the `panel` fixture is in conftest)."""

from __future__ import annotations

import re

from app.core.replay import ReplayResult
from app.gui.replay_panel import ReplayPanel

TIMEOUT_MS = 30_000


def plain(panel: ReplayPanel) -> str:
    """The panel's summary line without its markup."""
    return re.sub("<[^>]+>", "", panel.summary.text())


def load(qtbot, panel: ReplayPanel) -> int:
    """Click Load; how many failures the list holds once it has loaded."""
    with qtbot.waitSignal(panel.failures_loaded, timeout=TIMEOUT_MS) as blocker:
        panel.load_button.click()
    return blocker.args[0]


def replay_now(qtbot, panel: ReplayPanel) -> ReplayResult:
    """Click Replay; the result, or the test fails with the panel's refusal."""
    finished: list[ReplayResult] = []
    failed: list[str] = []
    panel.replay_finished.connect(finished.append)
    panel.replay_failed.connect(failed.append)
    panel.run_button.click()
    qtbot.waitUntil(lambda: bool(finished or failed), timeout=TIMEOUT_MS)
    assert not failed, failed[0]
    return finished[0]
