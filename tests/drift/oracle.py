"""Test helpers: synthetic data sets and Evidently itself as the oracle the fast path must match."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from app.core.drift import DriftResult

# Evidently's display names -> its StatTest names (our method names); kept here, not imported
# from the code under test, so a wrong mapping there cannot agree with itself.
EVIDENTLY_METHODS = {
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "Jensen-Shannon distance": "jensenshannon",
    "Wasserstein distance (normed)": "wasserstein",
}


def evidently_columns(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, tuple]:
    """{column: (method, score, drifted)} straight from an Evidently DataDriftPreset report."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from evidently import Report
        from evidently.presets import DataDriftPreset

        snapshot = Report([DataDriftPreset()], include_tests=True).run(current, reference).dict()
    failed = {t["metric_config"]["metric_id"]: t["status"] == "FAIL"
              for t in snapshot["tests"] if t["id"] == "drift"}
    out = {}
    for m in snapshot["metrics"]:
        config = m["config"]
        if config["type"].endswith(":ValueDrift"):
            out[config["column"]] = (EVIDENTLY_METHODS[config["method"]], float(m["value"]),
                                     failed[m["id"]])
    return out


def assert_agrees(result: DriftResult, expected: dict[str, tuple]) -> None:
    """Same columns, same method, same verdict and the same score (to rounding)."""
    got = {c.name: (c.method, c.score, c.drifted) for c in result.columns if c.tested}
    assert set(got) == set(expected)
    for name, (method, score, drifted) in expected.items():
        g_method, g_score, g_drifted = got[name]
        assert (g_method, g_drifted) == (method, drifted), name
        assert g_score == __import__("pytest").approx(score, rel=1e-9, abs=1e-12), name


def mixed(n: int, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Every kind Evidently tells apart: floats, few-valued floats, small and large integer
    ranges, strings, a binary flag and a constant."""
    r = np.random.default_rng(seed)
    return pd.DataFrame({
        "gauss": r.normal(shift, 1.0, n),
        "skewed": r.exponential(1.0 + shift, n),
        "steps": r.choice([0.5, 1.5, 2.5, 3.5], n, p=[0.25, 0.25, 0.25, 0.25] if not shift
                          else [0.1, 0.2, 0.3, 0.4]).astype(float),
        "small_int": r.integers(0, 4 + (shift > 0), n),  # categorical; shift adds a value
        "wide_int": r.integers(0, 100, n) + int(shift * 30),  # numerical (>10 values)
        "colour": r.choice(["red", "green", "blue"], n,
                           p=[0.5, 0.3, 0.2] if not shift else [0.3, 0.3, 0.4]),
        "flag": r.integers(0, 2, n),
        "constant": np.full(n, 3.0),
    })
