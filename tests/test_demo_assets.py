"""The demo's bundled files: small, and holding the regression and drift they promise."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pandas as pd


def _recall(model, frame: pd.DataFrame, cls: int) -> float:
    x = frame.drop(columns=["id", "label"]).to_numpy(np.float32)
    pred = ort.InferenceSession(str(model)).run(None, {"features": x})[0].argmax(1)
    mask = frame["label"].to_numpy() == cls
    return float((pred[mask] == cls).mean())


def test_the_demo_is_small(demo_dir):
    assert sum(p.stat().st_size for p in demo_dir.iterdir()) < 2 * 2**20


def test_v3_regresses_on_class_2_where_v2_does_not(demo_dir):
    validation = pd.read_csv(demo_dir / "validation.csv")
    v2 = _recall(demo_dir / "wine-v2.onnx", validation, 2)
    v3 = _recall(demo_dir / "wine-v3.onnx", validation, 2)
    assert v2 > 0.95
    assert v3 < v2 - 0.15


def test_the_production_stream_drifts_and_carries_failures(demo_dir):
    stream = pd.read_csv(demo_dir / "production.csv")
    first, last = stream.iloc[:1000], stream.iloc[2000:]
    assert last["alcohol"].mean() > first["alcohol"].mean() + 0.5
    assert last["color_intensity"].mean() > first["color_intensity"].mean() * 1.3
    assert stream.drop(columns=["id", "label"]).isna().any(axis=1).sum() >= 20
    # a column the script leaves alone stays put
    assert abs(last["magnesium"].mean() - first["magnesium"].mean()) < 0.3 * first[
        "magnesium"].std()


def test_core_and_probes_import_no_qt():
    code = ("import sys, app.core.monitor, app.core.summary, app.cli, probes; "
            "import app.commands.watch, app.commands.demo; "
            "bad = [m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
