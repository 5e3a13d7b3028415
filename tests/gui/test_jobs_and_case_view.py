"""Job progress that keeps up with the work, and the side-by-side case view's chart: a legend
beside the bars, not over them, and no bar for an output that is not a number. The case view
is fed what the demo's real models answer, through real onnxruntime sessions."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnxruntime as ort
import pyqtgraph as pg
import pytest
from PySide6.QtCore import QRectF
from PySide6.QtGui import QTextDocument

from app.gui.jobs import Job, JobRunner
from probes.payload import load_payload
from tests.conftest import DEMO
from widgets.case_view import CaseViewWidget, VersionAnswer


def _run(qtbot, job: Job, seen: list[float]) -> JobRunner:
    job.signals.progressed.connect(seen.append)
    runner = JobRunner()
    runner.start(job)
    return runner


def test_progress_shows_the_latest_step_when_the_next_is_long(qtbot):
    """Three versions done in a burst, then a slow fourth: the bar must say 75%, not the
    burst's first 25% until the end."""
    release = threading.Event()

    def work(progress, cancelled) -> str:
        for fraction in (0.25, 0.5, 0.75):
            progress(fraction)
        release.wait(10)
        progress(1.0)
        return "done"

    job = Job(work)
    seen: list[float] = []
    runner = _run(qtbot, job, seen)
    try:
        qtbot.waitUntil(lambda: bool(seen) and seen[-1] == 0.75, timeout=2_000)
        assert not job.done.is_set()  # shown while the long step still runs
    finally:
        release.set()
        runner.shutdown()
    qtbot.waitUntil(lambda: seen[-1] == 1.0, timeout=2_000)


def test_progress_updates_stay_few_however_often_the_work_reports(qtbot):
    steps = 100_000

    def work(progress, cancelled) -> None:
        for k in range(1, steps + 1):
            progress(k / steps)

    job = Job(work)
    seen: list[float] = []
    start = time.monotonic()
    runner = _run(qtbot, job, seen)
    with qtbot.waitSignal(job.signals.finished, timeout=10_000):
        pass
    elapsed = time.monotonic() - start
    runner.shutdown()
    qtbot.waitUntil(lambda: bool(seen) and seen[-1] == 1.0, timeout=2_000)
    # One per whole percent, plus at most 30 a second on time alone.
    assert len(seen) <= 101 + 30 * (elapsed + 1)
    assert seen == sorted(seen)


@pytest.fixture(scope="module")
def sessions() -> dict[str, ort.InferenceSession]:
    return {f"wine-v{i}": ort.InferenceSession(str(DEMO / f"wine-v{i}.onnx"),
                                               providers=["CPUExecutionProvider"])
            for i in (1, 2, 3)}


def _answers(sessions: dict[str, ort.InferenceSession], row: np.ndarray) -> list[VersionAnswer]:
    """What each version answers for one row, as the replay panel hands it to the view."""
    out = []
    for name, session in sessions.items():
        scores = session.run(None, {"features": row[None, :].astype(np.float32)})[0][0]
        finite = np.isfinite(scores).all()
        out.append(VersionAnswer(
            name, scores, str(int(np.argmax(scores))) if finite else None,
            float(scores.max()) if finite else None, 0.01, "ok" if finite else "still_failing"))
    return out


def _legend(view: CaseViewWidget) -> str:
    """The legend as it reads on screen."""
    doc = QTextDocument()
    doc.setHtml(view.legend.text())
    return doc.toPlainText().replace("\xa0", " ").replace("\u2060", "")


def _bar_rects(view: CaseViewWidget) -> list[QRectF]:
    """Each drawn bar's rectangle in scene coordinates."""
    vb = view.bars.plotItem.vb
    rects = []
    for item in view._bar_items:
        o = item.opts
        for x, h in zip(o["x"], o["height"], strict=True):
            corner = vb.mapViewToScene(pg.Point(x - o["width"] / 2, 0))
            far = vb.mapViewToScene(pg.Point(x + o["width"] / 2, h))
            rects.append(QRectF(corner, far).normalized())
    return rects


@pytest.mark.parametrize("width", [560, 420])
def test_the_legend_leaves_the_bars_in_sight(qtbot, sessions, width):
    payload = load_payload(DEMO / "production.csv")
    features = payload.features.reshape(len(payload), -1).astype(np.float64)
    # A confident class-0 answer: the tallest bars stand where a legend in the corner sat.
    probs = sessions["wine-v1"].run(None, {"features": features.astype(np.float32)})[0]
    row = int(np.flatnonzero(np.isfinite(features).all(axis=1) & (probs[:, 0] > 0.85))[0])
    view = CaseViewWidget()
    qtbot.addWidget(view)
    view.resize(width, 400)
    view.show()
    qtbot.waitExposed(view)
    view.show_case(f"row {row}", features[row], [], _answers(sessions, features[row]))
    view.bars.plotItem.vb.autoRange()
    qtbot.wait(50)
    bars = _bar_rects(view)
    assert len(bars) == 9 and max(r.height() for r in bars) > 0
    for legend in (i for i in view.bars.scene().items() if isinstance(i, pg.LegendItem)):
        box = legend.sceneBoundingRect()
        assert not any(box.intersects(r) for r in bars), "a legend covers a bar"
    # Each version is named, in its bars' colour, outside the plot.
    assert view.legend.isVisible()
    for name in sessions:
        assert name in _legend(view)
    legend_box = view.legend.geometry()
    assert legend_box.bottom() < view.bars.geometry().top() or \
        not legend_box.intersects(view.bars.geometry())


def test_an_output_that_is_not_a_number_draws_no_bar_and_says_nan(qtbot, sessions):
    payload = load_payload(DEMO / "production.csv")
    features = payload.features.reshape(len(payload), -1).astype(np.float64)
    row = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])  # a NaN input
    answers = _answers(sessions, features[row])
    assert all(np.isnan(a.scores).all() for a in answers)  # what the real models answer
    view = CaseViewWidget()
    qtbot.addWidget(view)
    view.show_case(f"row {row}", features[row], [], answers)
    # No flat bars at 0 (they read as "output 0"); the legend says why there are none.
    assert view.bar_count() == 0
    assert _legend(view).count("(NaN: no bars)") == 3
    # One class NaN among numbers: the others are drawn, that one is named.
    mixed = VersionAnswer("m", np.array([0.2, np.nan, 0.8]), "2", 0.8, 0.01, "ok")
    view.show_case("mixed", features[0], [], [mixed])
    assert view.bar_count() == 1
    opts = view._bar_items[0].opts
    assert len(opts["height"]) == 2 and np.isfinite(opts["height"]).all()
    assert "m (NaN at class 1)" in _legend(view) and "NaN at class 1" in view.legend.toolTip()
