"""Fixtures shared by every test: the demo's real models and data, fresh workspaces."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "demo"


@pytest.fixture(autouse=True)
def qt_garbage_dies_on_the_main_thread(request: pytest.FixtureRequest):
    """Qt objects must be destroyed on the GUI thread. Python's cyclic collector runs on
    whichever thread crosses its threshold: in a GUI test that can be a replay or monitor
    worker, which would then destroy a Qt object an earlier test left in a cycle (Qt warns
    "Timers cannot be started from another thread", and pytest-qt fails the test). The app
    collects on its GUI thread (app/gui/gui_gc.py); GUI tests do the same: no automatic
    collection during the test, one full pass on the main thread after its teardown."""
    if "qtbot" not in request.fixturenames or request.node.get_closest_marker("automatic_gc"):
        yield
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.collect()
        if was_enabled:
            gc.enable()


@pytest.fixture
def demo_dir() -> Path:
    return DEMO


@pytest.fixture
def demo_model() -> Path:
    return DEMO / "wine-v1.onnx"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "workspace.db"
