"""Fast drift vs Evidently's Report on the same data, same run: 1,000,000 rows x 20 columns.

Reference and current both hold ROWS rows: 16 float columns (Evidently picks the normed
Wasserstein distance above 1,000 rows) and 4 integer columns with 6 values (categorical, so
Jensen-Shannon); 5 floats and 1 category are shifted. The baseline is one Evidently 0.7.23
``Report([DataDriftPreset()])`` run (HTML not rendered). The fast path is timed twice: cold
(``prepare_reference`` + ``evaluate``: what a one-off CLI call pays) and warm (``evaluate``
against a reference prepared once: what each live evaluation pays). Verdicts must be
identical, scores equal to rounding. Target: >= 20x.

    python bench/drift.py [--rows N]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.drift import evaluate, prepare_reference
from app.core.drift_stats import BY_DISPLAY

FLOATS, CATEGORIES = 16, 4


def make(rows: int, shifted: bool, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {}
    for i in range(FLOATS):
        shift = 0.2 if shifted and i < 5 else 0.0
        data[f"num{i}"] = rng.normal(shift, 1.0 + 0.1 * i, rows)
    for i in range(CATEGORIES):
        p = np.array([0.3, 0.2, 0.2, 0.1, 0.1, 0.1])
        if shifted and i == 0:
            p = np.array([0.1, 0.2, 0.2, 0.1, 0.1, 0.3])
        data[f"cat{i}"] = rng.choice(6, rows, p=p)
    return pd.DataFrame(data)


def evidently(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[float, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from evidently import Report
        from evidently.presets import DataDriftPreset

        t0 = time.perf_counter()
        snapshot = Report([DataDriftPreset()], include_tests=True).run(current, reference)
        elapsed = time.perf_counter() - t0
    d = snapshot.dict()
    failed = {t["metric_config"]["metric_id"]: t["status"] == "FAIL"
              for t in d["tests"] if t["id"] == "drift"}
    cols = {m["config"]["column"]: (BY_DISPLAY[m["config"]["method"]].name, float(m["value"]),
                                    failed[m["id"]])
            for m in d["metrics"] if m["config"]["type"].endswith(":ValueDrift")}
    return elapsed, cols


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    reference, current = make(args.rows, False, 1), make(args.rows, True, 2)
    print(f"data: {args.rows:,} rows x {reference.shape[1]} columns, reference and current")

    t0 = time.perf_counter()
    prepared = prepare_reference(reference)
    t_prepare = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = evaluate(prepared, current)
    t_cold = t_prepare + time.perf_counter() - t0
    warm = []
    for _ in range(3):
        t0 = time.perf_counter()
        evaluate(prepared, current)
        warm.append(time.perf_counter() - t0)
    t_warm = float(np.median(warm))

    t_evidently, expected = evidently(reference, current)

    mismatches = []
    for c in fast.columns:
        method, score, drifted = expected[c.name]
        close = abs(score - c.score) <= 1e-9 * max(1.0, abs(score))
        if (c.method, c.drifted) != (method, drifted) or not close:
            mismatches.append(f"{c.name}: fast {c.method} {c.score:.6g} {c.drifted}, "
                              f"evidently {method} {score:.6g} {drifted}")
    methods = sorted({c.method for c in fast.columns})
    print(f"methods: {', '.join(methods)}; drifted: {', '.join(fast.drifted_columns)}")
    print(f"evidently Report.run: {t_evidently:8.2f} s")
    print(f"fast, cold (prepare + evaluate): {t_cold:8.3f} s   ratio {t_evidently / t_cold:6.1f}x")
    print(f"fast, warm (evaluate only):      {t_warm:8.3f} s   ratio {t_evidently / t_warm:6.1f}x")
    print(f"verdicts identical: {not mismatches} ({len(fast.columns)} columns, "
          f"share drifted {fast.share_drifted:.2f})")
    for m in mismatches:
        print("  mismatch:", m)
    return 0 if not mismatches else 1


if __name__ == "__main__":
    sys.exit(main())
