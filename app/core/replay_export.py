"""A replay's cases as a CSV table, one row per case and a group of columns per version, for
a data scientist's own tools (pandas, a spreadsheet). Thread: the caller's.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from pathlib import Path

from app.core.output_files import refusal
from app.core.replay import NO_CLASS, ReplayResult
from app.core.replay_targets import ReplayError


def case_table(result: ReplayResult) -> tuple[list[str], list[list[object]]]:
    """Header and rows: case, capture id, role, kind, label, first failing version, then per
    version its class, confidence, latency (ms), verdict, why it fails there (the rules it
    broke, ``ReplayResult.reasons``; empty when it does not) and error."""
    header = ["case", "capture_id", "role", "kind", "label", "first_failing"]
    for run in result.runs:
        header += [f"{run.version}:{c}" for c in
                   ("class", "confidence", "latency_ms", "verdict", "why", "error")]
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
                    result.verdict(i, j),
                    "; ".join(result.reasons(i, j)) if i not in run.errors else "",
                    run.errors.get(i, "")]
        rows.append(row)
    return header, rows


_OURS = b"case,capture_id,"  # how every export begins: the one kind of file we overwrite


def export_path(out: str | Path) -> Path:
    """Where an export of ``out`` will be written (through a link), or ReplayError: a folder,
    a device, a missing folder, or an existing file that is not an earlier export (a
    workspace, a model, someone's notes) is refused before any work is done."""
    out = Path(out)
    target = out.resolve() if out.is_symlink() else out
    why = refusal(out, (_OURS,), "a replay export")
    if why:
        raise ReplayError(why)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ReplayError(f"cannot write {out}: there is no folder {folder}")
    return target


def write_cases_csv(result: ReplayResult, out: str | Path) -> Path:
    """Write ``case_table`` to ``out``, whole or not at all (a temporary file renamed); see
    ``export_path`` for what it refuses to replace."""
    shown, out = out, export_path(out)
    header, rows = case_table(result)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".probescope-cases-", suffix=".csv",
                                   dir=out.parent if str(out.parent) else ".")
    except OSError as exc:
        raise ReplayError(f"cannot write {shown}: {exc.strerror}") from None
    try:
        # mkstemp makes it private (0600): an export is an ordinary file, readable like the
        # one it replaces. (Not os.umask: it is process-wide, and other threads make files.)
        os.fchmod(fd, out.stat().st_mode & 0o777 if out.exists() else 0o644)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, out)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ReplayError(f"cannot write {shown}: {exc.strerror or exc}") from None
    return Path(shown)
