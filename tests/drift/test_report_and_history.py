"""The full Evidently report as a plain function (progress, cancel, HTML); references kept in
the workspace; drift history and distributions read back for the drift panel."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from app.core.drift import DriftError, distribution, drift, prepare_reference
from app.core.drift_history import drift_matrix, latest_table, severity, share_series
from app.core.drift_monitor import save_result
from app.core.drift_report import DriftCancelled, evidently_report
from app.core.references import (
    ReferenceKind,
    demo_reference,
    file_reference,
    get_reference,
    load_reference,
    set_reference,
    set_reference_if_missing,
)
from app.core.store import Store
from tests.drift.oracle import mixed


def test_the_report_reports_progress_saves_html_and_matches_the_fast_path(tmp_path):
    reference, current = mixed(600, seed=1), mixed(300, 0.3, seed=2)
    seen: list[float] = []
    html = tmp_path / "reports" / "drift.html"
    result = evidently_report(reference, current, html_path=html, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 3
    assert html.stat().st_size > 10_000 and "<html" in html.read_text()[:2000].lower()
    fast = drift(reference, current)
    assert [(c.name, c.method, c.drifted) for c in result.columns] == [
        (c.name, c.method, c.drifted) for c in fast.columns]


def test_cancelling_the_report_stops_it_before_evidently_runs(tmp_path):
    html = tmp_path / "drift.html"
    with pytest.raises(DriftCancelled):
        evidently_report(mixed(300, seed=1), mixed(300, seed=2), html_path=html,
                         cancelled=lambda: True)
    assert not html.exists()


def test_references_are_kept_in_the_workspace(tmp_path, demo_dir):
    db = tmp_path / "ws.db"
    store = Store(db)
    endpoint = "onnx:wine-v1.onnx"
    assert get_reference(store, endpoint) is None
    assert set_reference_if_missing(store, endpoint, demo_reference())
    store.close()

    store = Store(db)  # a later session sees it, and keeps it
    assert not set_reference_if_missing(store, endpoint, file_reference(
        demo_dir / "validation.csv"))
    reference = get_reference(store, endpoint)
    assert reference.kind is ReferenceKind.DEMO
    assert reference.columns[:2] == ("alcohol", "malic_acid") and "label" not in reference.columns
    assert len(load_reference(store, reference)) == 1000

    copy = tmp_path / "ref.parquet"
    pd.read_csv(demo_dir / "reference.csv").to_parquet(copy)
    set_reference(store, endpoint, file_reference(copy))
    assert get_reference(store, endpoint).path == copy.resolve()
    copy.unlink()
    with pytest.raises(DriftError, match="does not exist"):
        load_reference(store, get_reference(store, endpoint))
    store.close()


def test_severity_is_one_at_the_threshold_for_every_method():
    assert severity("ks", 0.05, 0.05) == pytest.approx(1.0)
    assert severity("ks", 1.0, 0.05) == 0.0
    assert severity("chisquare", 0.0, 0.05) == 10.0
    assert severity("wasserstein", 0.2, 0.1) == pytest.approx(2.0)
    assert math.isnan(severity(None, None, None))


def test_history_matrix_share_and_table_from_stored_evaluations(tmp_path):
    store = Store(tmp_path / "ws.db")
    endpoint = "onnx:m.onnx"
    reference = mixed(1500, seed=1)
    results = [drift(reference, mixed(800, shift, seed=2)) for shift in (0.0, 0.3)]
    for i, result in enumerate(results):
        save_result(store, endpoint, 1_000 + i, result)
    matrix = drift_matrix(store, endpoint)
    assert matrix.ts_ns.tolist() == [1_000, 1_001]
    assert matrix.features == tuple(c.name for c in results[0].columns)
    assert matrix.drifted[1].tolist() == [c.drifted for c in results[1].columns]
    assert np.array_equal(matrix.severity[1] >= 1.0, matrix.drifted[1])
    ts, share = share_series(store, endpoint)
    assert ts.tolist() == [1_000, 1_001]
    assert share.tolist() == pytest.approx([r.share_drifted for r in results])
    table = latest_table(store, endpoint)
    assert [r.drifted for r in table] == sorted([r.drifted for r in table], reverse=True)
    assert {r.feature for r in table} == set(matrix.features)
    store.close()


def test_distributions_share_bins_for_an_overlaid_plot():
    reference, current = mixed(1000, seed=1), mixed(400, 0.5, seed=2)
    prepared = prepare_reference(reference)
    gauss = distribution(prepared, "gauss", current["gauss"], bins=20)
    assert len(gauss.edges) == 21 and gauss.reference.sum() == pytest.approx(1.0)
    assert gauss.current.sum() == pytest.approx(1.0)
    expected = np.histogram(reference["gauss"], gauss.edges)[0] / 1000
    assert gauss.reference == pytest.approx(expected)
    colour = distribution(prepared, "colour", current["colour"])
    assert set(colour.categories) == {"red", "green", "blue"}
    assert colour.current.sum() == pytest.approx(1.0)


def test_a_features_distribution_from_the_workspace(tmp_path, demo_dir):
    from app.core.domain import Capture, CaptureStatus, TensorBlob
    from app.core.drift_history import feature_distribution

    rows = pd.read_csv(demo_dir / "production.csv").iloc[1500:2000]
    uri = "onnx:wine-v1.onnx"
    store = Store(tmp_path / "ws.db")
    store.write_batch([], [Capture(uri, i, 1.0, CaptureStatus.OK, inputs=(TensorBlob.from_array(
        "x", r.astype(np.float32).reshape(1, -1)),)) for i, r in
        enumerate(rows.iloc[:, 1:-1].to_numpy())])
    assert feature_distribution(store, uri, "alcohol") is None  # no reference yet
    set_reference(store, uri, demo_reference())
    alcohol = feature_distribution(store, uri, "alcohol", rows=400, bins=25)
    centres = (alcohol.edges[:-1] + alcohol.edges[1:]) / 2
    # The demo shifts alcohol up by 1.2 standard deviations in this stretch.
    assert centres @ alcohol.current > centres @ alcohol.reference + 0.5
    assert alcohol.current.sum() == pytest.approx(1.0)
    store.close()


def test_the_live_table_s_time_is_local_and_named(monkeypatch):
    """Beside local-time plots and incidents, the drift table said "UTC": one dock in
    another zone than the rest of the window."""
    from app.core.drift_history import evaluation_text

    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        text = evaluation_text({"ts_ns": 1_700_000_000 * 10**9, "rows_current": 500}, [])
    finally:
        monkeypatch.undo()
        time.tzset()
    assert text == "0 of 0 drifted in the last 500 captured rows up to 03:43:20 IST"
