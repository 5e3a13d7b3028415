"""Cases read as columns straight from the workspace (``select_case_set``) are the cases
``select_cases`` builds as objects: same order, ids, labels, kinds, inputs, and the same
replay results; the Case objects themselves are read only when asked for."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from app.core.domain import Capture, CaptureStatus, TensorBlob
from app.core.replay import Selection, prepare, replay, select_case_set, select_cases
from app.core.replay_cases import LazyCases
from app.core.replay_store import load_replay, save_replay
from app.core.replay_targets import LocalOnnxTarget, ReplayError
from app.core.store import Store

SELECTIONS = [
    Selection(limit=10_000, controls=10_000),
    Selection(kinds=("mismatch",), label="2", limit=40, controls=25),
    Selection(kinds=("low_confidence", "non_finite"), controls=0),
    Selection(limit=0, controls=7),
    Selection(model_version="nope", controls=5),
]


def assert_same_columns(a, b) -> None:
    assert a.capture_ids == b.capture_ids
    assert a.label_texts == b.label_texts
    for name in ("labels", "has_label", "low_confidence", "slow", "control"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert a.singles == b.singles
    assert len(a.groups) == len(b.groups)
    for g, h in zip(a.groups, b.groups, strict=True):
        assert (g.rows is None) == (h.rows is None)
        assert g.rows is None or np.array_equal(g.rows, h.rows)
        assert list(g.feeds) == list(h.feeds)
        for k in g.feeds:
            assert g.feeds[k].dtype == h.feeds[k].dtype
            assert np.array_equal(g.feeds[k], h.feeds[k], equal_nan=True)


def verdicts(result) -> list[dict]:
    """Summaries without the latencies (two runs never time the same)."""
    return [{k: v for k, v in s.to_json().items() if k != "latency_ms"}
            for s in result.summaries()]


@pytest.mark.parametrize("selection", SELECTIONS)
def test_columns_from_the_workspace_match_the_captures(demo_db, selection):
    store = Store(demo_db)
    try:
        cases = select_cases(store, selection)
        columns = select_case_set(store, selection)
    finally:
        store.close()
    assert len(columns) == len(cases)
    assert_same_columns(columns, prepare(cases))
    assert isinstance(columns.cases, LazyCases)
    assert list(columns.cases) == cases and columns.cases == cases  # read on demand


def test_a_replay_from_columns_gives_the_same_results_and_saves_the_same(demo_db, versions):
    selection = Selection(limit=10_000, controls=10_000)
    store = Store(demo_db)
    try:
        cases = select_cases(store, selection)
        columns = select_case_set(store, selection)
        targets = [LocalOnnxTarget(p) for p in versions]
        a = replay(cases, targets, batch_size=100)
        b = replay(columns, targets, batch_size=100)
        assert verdicts(a) == verdicts(b)
        assert a.first_failing() == b.first_failing()
        for ra, rb, fa, fb in zip(a.runs, b.runs, a.failing, b.failing, strict=True):
            assert np.array_equal(fa, fb)
            assert np.array_equal(ra.prediction, rb.prediction)
            assert np.array_equal(ra.confidence, rb.confidence, equal_nan=True)
            assert np.array_equal(ra.outputs["probabilities"], rb.outputs["probabilities"],
                                  equal_nan=True)
        # Judged and summarised from columns alone: no capture was read back.
        assert b.cases._cases is None
        reopened = load_replay(store, save_replay(store, b))
        assert [c.capture_id for c in reopened.cases] == [c.capture_id for c in cases]
        assert [s.to_json() for s in reopened.summaries()] == \
            [s.to_json() for s in b.summaries()]
    finally:
        store.close()


def _write(db: Path, captures: list[Capture]) -> None:
    store = Store(db)
    try:
        store.write_batch([], captures)
    finally:
        store.close()


def test_mixed_input_signatures_fall_back_to_grouping(tmp_path):
    """Different tensor names, shapes and a batch of two rows: no single stack; the same
    groups and lone cases as from Capture objects."""
    rng = np.random.default_rng(0)

    def cap(i: int, *blobs: TensorBlob, status=CaptureStatus.MISMATCH) -> Capture:
        return Capture("onnx:x", i, 1.0, status, inputs=blobs, label=str(i % 3))

    captures = [cap(i, TensorBlob.from_array("features", rng.random((1, 13), np.float32)))
                for i in range(6)]
    captures += [cap(10 + i, TensorBlob.from_array("input-0", rng.random((1, 4)))) for i in
                 range(3)]
    captures += [cap(20, TensorBlob.from_array("features", rng.random((2, 13), np.float32))),
                 cap(21, TensorBlob.from_array("features", rng.random((1, 13), np.float32)),
                     status=CaptureStatus.OK),
                 cap(22, status=CaptureStatus.ERROR)]
    _write(tmp_path / "w.db", captures)
    store = Store(tmp_path / "w.db")
    try:
        selection = Selection(limit=100, controls=100)
        assert_same_columns(select_case_set(store, selection),
                            prepare(select_cases(store, selection)))
    finally:
        store.close()


def test_cases_gone_from_the_workspace_are_reported_when_asked_for(tmp_path):
    rows = np.arange(26, dtype=np.float32).reshape(2, 13)
    _write(tmp_path / "w.db", [Capture("onnx:x", i, 1.0, CaptureStatus.MISMATCH,
                                       inputs=(TensorBlob.from_array("f", rows[i:i + 1]),))
                               for i in range(2)])
    store = Store(tmp_path / "w.db")
    try:
        columns = select_case_set(store, Selection(controls=0))
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "w.db") as conn:  # retention removing one in between
        conn.execute("DELETE FROM captures WHERE ts_ns = 1")
    assert len(columns.cases) == 2 and columns.capture_ids[0] is not None
    with pytest.raises(ReplayError, match="no longer in"):
        columns.cases[0]
    assert LazyCases(tmp_path / "w.db", [], np.zeros(0, bool)) == []


def test_saved_output_blobs_are_what_the_codec_writes_row_by_row(cases_and_error, versions):
    """Rows of the stacked columns share one encoded header; errors and odd rows are
    encoded alone. Byte for byte what encoding each case on its own gives."""
    from app.core import codec
    from app.core.replay_store import _output_blobs

    result = replay(cases_and_error, [LocalOnnxTarget(versions[1])], batch_size=7)
    run = result.runs[0]
    assert run.errors
    blobs = _output_blobs(run, len(cases_and_error))
    for i, blob in enumerate(blobs):
        outs = run.output(i)
        expected = codec.encode(tuple(TensorBlob.from_array(n, np.ascontiguousarray(a))
                                      for n, a in outs)) if outs else None
        assert blob == expected, i


@pytest.fixture
def cases_and_error(demo_db):
    store = Store(demo_db)
    try:
        cases = select_cases(store, Selection(limit=30, controls=10))
    finally:
        store.close()
    wrong = Capture(endpoint="x", ts_ns=1, latency_ms=1.0, status=CaptureStatus.ERROR,
                    inputs=(TensorBlob.from_array("features", np.zeros((1, 5), np.float32)),))
    from app.core.replay import Case
    return [*cases[:12], Case(None, wrong), *cases[12:]]
