"""Fixtures shared by every test: the demo's real models and data, fresh workspaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "demo"


@pytest.fixture
def demo_dir() -> Path:
    return DEMO


@pytest.fixture
def demo_model() -> Path:
    return DEMO / "wine-v1.onnx"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "workspace.db"
