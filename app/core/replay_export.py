"""A replay's cases as a CSV table, one row per case and a group of columns per version, for
a data scientist's own tools (pandas, a spreadsheet). Thread: the caller's.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from pathlib import Path

from app.core.replay import NO_CLASS, ReplayResult
from app.core.replay_targets import ReplayError


def case_table(result: ReplayResult) -> tuple[list[str], list[list[object]]]:
    """Header and rows: case, capture id, role, kind, label, first failing version, then per
    version its class, confidence, latency (ms), verdict and error."""
    header = ["case", "capture_id", "role", "kind", "label", "first_failing"]
    for run in result.runs:
        header += [f"{run.version}:{c}" for c in
                   ("class", "confidence", "latency_ms", "verdict", "error")]
    firsts = result.first_failing()
    control = result.control_mask.tolist()
    ids = result.capture_ids
    rows = []
    for i in range(len(result.cases)):
        row: list[object] = [i, ids[i], "control" if control[i] else "failure",
                             result.kind(i), result.label(i) or "", firsts[i] or ""]
        for j, run in enumerate(result.runs):
            predicted = int(run.prediction[i])
            confidence, latency = float(run.confidence[i]), float(run.latency_ms[i])
            row += ["" if predicted == NO_CLASS else predicted,
                    "" if math.isnan(confidence) else round(confidence, 6),
                    "" if math.isnan(latency) else round(latency, 6),
                    result.verdict(i, j), run.errors.get(i, "")]
        rows.append(row)
    return header, rows


def write_cases_csv(result: ReplayResult, out: str | Path) -> Path:
    """Write ``case_table`` to ``out``, whole or not at all (a temporary file renamed)."""
    out = Path(out)
    if out.is_dir():
        raise ReplayError(f"cannot write {out}: it is a folder; give a file name")
    header, rows = case_table(result)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".probescope-cases-", suffix=".csv",
                                   dir=out.parent if str(out.parent) else ".")
    except OSError as exc:
        raise ReplayError(f"cannot write {out}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, out)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ReplayError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out
