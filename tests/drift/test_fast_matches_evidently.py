"""The fast path gives Evidently's method, score and verdict for every column, whatever the
sample size, kind or shift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from app.core.drift import drift, evaluate, prepare_reference
from app.core.drift_stats import wasserstein_sorted
from tests.drift.oracle import assert_agrees, evidently_columns, mixed

CASES = [
    # (reference rows, current rows, shift): small samples take p-value tests, large distances.
    (400, 300, 0.0),
    (400, 300, 0.3),
    (1000, 700, 0.3),  # exactly 1,000 reference rows is still "small"
    (1001, 400, 0.0),  # one more and the distances take over
    (3000, 2000, 0.3),
    (3000, 2000, 0.05),
]


@pytest.mark.parametrize(("n_ref", "n_cur", "shift"), CASES)
def test_verdicts_equal_evidentlys(n_ref, n_cur, shift):
    reference, current = mixed(n_ref, seed=1), mixed(n_cur, shift, seed=2)
    assert_agrees(drift(reference, current), evidently_columns(reference, current))


def test_the_cases_cover_every_method_evidently_picks():
    methods = set()
    for n_ref, n_cur, shift in CASES:
        result = drift(mixed(n_ref, seed=1), mixed(n_cur, shift, seed=2))
        methods |= {c.method for c in result.columns}
    assert methods == {"ks", "chisquare", "z", "jensenshannon", "wasserstein"}


def test_shift_is_found_and_no_shift_mostly_is_not():
    reference = mixed(3000, seed=1)
    shifted = drift(reference, mixed(2000, 0.3, seed=2))
    assert {"gauss", "skewed", "steps", "small_int", "wide_int", "colour"} <= set(
        shifted.drifted_columns)
    assert drift(reference, mixed(2000, seed=2)).drifted_columns == []


def test_the_demo_files_agree_with_evidently(demo_dir):
    reference = pd.read_csv(demo_dir / "reference.csv").drop(columns="id")
    production = pd.read_csv(demo_dir / "production.csv").drop(columns="id")
    for rows in (slice(0, 500), slice(1000, 2000)):
        current = production.iloc[rows]
        assert_agrees(drift(reference, current), evidently_columns(reference, current))


def test_a_prepared_reference_gives_the_same_answer_every_time():
    reference, current = mixed(2000, seed=1), mixed(500, 0.3, seed=2)
    prepared = prepare_reference(reference)
    first = evaluate(prepared, current)
    assert evaluate(prepared, current) == first == drift(reference, current)


@pytest.mark.parametrize("seed", range(4))
def test_wasserstein_merge_equals_scipy_with_ties_and_unequal_sizes(seed):
    r = np.random.default_rng(seed)
    u = np.sort(r.integers(0, 20, 1000).astype(float))  # many ties
    v = np.sort(r.normal(5, 3, 337))
    assert wasserstein_sorted(u, v) == pytest.approx(stats.wasserstein_distance(u, v), rel=1e-12)
