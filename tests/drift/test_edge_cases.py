"""NaNs, infinities, constant and empty columns, empty windows, unseen categories and text:
each gives a clear result, never an exception, and Evidently's verdict where it has one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.core.drift import DriftError, drift, evaluate, prepare_reference
from app.core.drift_report import evidently_report
from tests.drift.oracle import assert_agrees, evidently_columns


def _frame(n: int, seed: int, **extra) -> pd.DataFrame:
    r = np.random.default_rng(seed)
    return pd.DataFrame({"x": r.normal(0, 1, n), "y": r.normal(5, 2, n), **extra})


@pytest.mark.parametrize(("n_ref", "n_cur"), [(600, 300), (2000, 800)])
def test_nan_and_inf_are_dropped_per_column_as_evidently_does(n_ref, n_cur):
    reference, current = _frame(n_ref, 1), _frame(n_cur, 2)
    reference.loc[::7, "x"] = np.nan
    current.loc[::5, "x"] = np.nan
    current.loc[::11, "y"] = np.inf
    current.loc[::13, "y"] = -np.inf
    result = drift(reference, current)
    assert_agrees(result, evidently_columns(reference, current))
    assert all(c.tested for c in result.columns)


@pytest.mark.parametrize(("n_ref", "n_cur"), [(600, 300), (2000, 800)])
def test_constant_columns_same_or_moved(n_ref, n_cur):
    reference = _frame(n_ref, 1, same=np.full(n_ref, 2.0), moved=np.full(n_ref, 2.0))
    current = _frame(n_cur, 2, same=np.full(n_cur, 2.0), moved=np.full(n_cur, 3.0))
    result = drift(reference, current)
    assert_agrees(result, evidently_columns(reference, current))
    assert not result.column("same").drifted
    assert result.column("moved").drifted


@pytest.mark.parametrize(("n_ref", "n_cur"), [(600, 300), (2000, 800)])
def test_a_category_unseen_in_the_reference(n_ref, n_cur):
    r = np.random.default_rng(3)
    reference = _frame(n_ref, 1, kind=r.choice(["a", "b", "c"], n_ref))
    current = _frame(n_cur, 2, kind=r.choice(["a", "b", "c", "d"], n_cur))
    result = drift(reference, current)
    assert_agrees(result, evidently_columns(reference, current))
    column = result.column("kind")
    assert column.drifted
    if column.method == "chisquare":
        assert column.score == 0.0 and "unseen in reference" in column.note


def test_an_all_missing_column_is_reported_not_tested_by_both_paths():
    reference = _frame(500, 1, gone=np.linspace(0, 1, 500))
    current = _frame(300, 2, gone=np.full(300, np.nan))
    for result in (drift(reference, current), evidently_report(reference, current)):
        gone = result.column("gone")
        assert (gone.method, gone.score, gone.drifted) == (None, None, False)
        assert "no values in the current data" in gone.note
        assert result.column("x").tested and result.column("y").tested
        assert result.to_json()["columns"][2]["score"] is None


def test_an_empty_window_gives_an_empty_result_with_a_note():
    prepared = prepare_reference(_frame(500, 1))
    result = evaluate(prepared, _frame(0, 2))
    assert result.share_drifted == 0.0
    assert result.rows_current == 0
    assert [c.tested for c in result.columns] == [False, False]
    assert result.note == "no rows in the current window"
    assert evidently_report(_frame(500, 1), _frame(0, 2)).note == result.note


def test_text_columns_are_named_as_not_tested():
    r = np.random.default_rng(4)
    reference = _frame(300, 1, comment=[f"note {i}" for i in range(300)])
    current = _frame(200, 2, comment=[f"remark {i} {r.integers(9)}" for i in range(200)])
    result = drift(reference, current)
    comment = result.column("comment")
    assert comment.kind == "text" and not comment.tested and "text" in comment.note
    assert result.share_drifted == sum(c.drifted for c in result.tested) / 2


def test_bookkeeping_columns_are_not_features():
    reference = _frame(300, 1, id=[f"r{i}" for i in range(300)])
    current = _frame(200, 2, id=[f"c{i}" for i in range(200)])
    assert [c.name for c in drift(reference, current).columns] == ["x", "y"]


def test_no_shared_columns_is_a_clear_error():
    with pytest.raises(DriftError, match="share no feature columns"):
        drift(_frame(10, 1), pd.DataFrame({"other": [1.0, 2.0]}))


def test_pandas_categories_and_types_evidently_does_not_test():
    r = np.random.default_rng(5)
    kinds = pd.CategoricalDtype(["a", "b", "c", "never"])
    reference = _frame(400, 1, grade=pd.Series(r.choice(["a", "b", "c"], 400), dtype=kinds),
                       counts=r.integers(0, 50, 400).astype("uint8"))
    current = _frame(300, 2, grade=pd.Series(r.choice(["a", "b"], 300), dtype=kinds),
                     counts=r.integers(0, 50, 300).astype("uint8"))
    result = drift(reference, current)
    assert_agrees(result, evidently_columns(reference, current))  # 'counts' absent from both
    assert result.column("grade").drifted
    assert "neither numbers nor categories" in result.column("counts").note
