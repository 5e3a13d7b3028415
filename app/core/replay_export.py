"""A replay's cases as a CSV table, one row per case and a group of columns per version, for
a data scientist's own tools (pandas, a spreadsheet). Thread: the caller's.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from app.core.csv_cells import inert
from app.core.domain import TensorBlob
from app.core.output_files import refusal
from app.core.replay import NO_CLASS, ReplayResult
from app.core.replay_cases import LazyCases
from app.core.replay_targets import ReplayError
from app.core.store import Store

# A case's inputs get a column per value up to this many; past it (an image, a long text
# embedding) a column of values per pixel would drown the table, and it is said instead.
MAX_INPUT_VALUES = 256

Record = tuple[str | None, int | None, str | None, str | None, float | None]


def _records(result: ReplayResult) -> list[Record]:
    """Per case: its endpoint, time (ns), request id, recorded prediction and confidence. A
    replay read straight from the workspace asks it for these few columns, not for every
    capture with its tensors."""
    cases = result.prepared.cases if result.prepared is not None else result.cases
    ids = result.capture_ids
    if isinstance(cases, LazyCases):
        store = Store(cases.path, readonly=True)
        try:
            found = store.capture_records([i for i in ids if i is not None])
        finally:
            store.close()
        return [found.get(i, (None, None, None, None, None)) if i is not None
                else (None, None, None, None, None) for i in ids]
    return [(c.capture.endpoint, c.capture.ts_ns, c.capture.request_id, c.capture.prediction,
             c.capture.confidence) for c in cases]


def _utc(ts_ns: int | None) -> str:
    if ts_ns is None:
        return ""
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def _input_names(result: ReplayResult, workspace: Path | None
                 ) -> dict[str, tuple[str, ...]]:
    """Each endpoint's payload columns (its probe's, where it had a payload file), to name a
    case's input values; read from the replay's workspace, else ``workspace``."""
    cases = result.prepared.cases if result.prepared is not None else result.cases
    path = cases.path if isinstance(cases, LazyCases) else workspace
    if path is None:
        return {}
    store = Store(path, readonly=True)
    try:
        return {e["uri"]: store.endpoint_input_names(e["uri"]) for e in store.endpoints()}
    finally:
        store.close()


def _input_cells(inputs: Sequence[TensorBlob], names: Sequence[str]
                 ) -> tuple[dict[str, object], str]:
    """A case's input values by column (``input:<feature>``, else ``input:<tensor>[k]``), and
    a note when they are too many to put in columns."""
    arrays = [(t.name, t.to_array()) for t in inputs]
    total = sum(a.size for _, a in arrays)
    if total > MAX_INPUT_VALUES:
        shapes = ", ".join(f"{n} {a.dtype}[{','.join(map(str, a.shape))}]" for n, a in arrays)
        return {}, f"left out: {shapes} is {total} values (see the case in the window)"
    cells: dict[str, object] = {}
    for name, a in arrays:
        flat = np.asarray(a).reshape(-1)
        # A probe's payload columns name one input's values, in order.
        named = len(arrays) == 1 and len(names) == flat.size
        # float32 as its shortest text (13.2021), not as the double it widens to
        # (13.202099800109863): the value the model was given, as a person would write it.
        values = ([str(v) for v in flat] if flat.dtype in (np.float32, np.float16)
                  else flat.tolist())
        for k, value in enumerate(values):
            cells[f"input:{names[k]}" if named else f"input:{name}[{k}]"] = value
    return cells, ""


def case_table(result: ReplayResult, *, inputs: bool = False, workspace: Path | None = None
               ) -> tuple[list[str], list[list[object]]]:
    """Header and rows: case, capture id, endpoint, time (UTC ISO 8601), request id (to join
    the case back to production data and its late labels), role, kind, label, the recorded
    prediction and confidence, first failing version (``no answer`` where no version
    answered), then per version its class, confidence, latency (ms), verdict, why it fails
    there (the rules it broke, ``ReplayResult.reasons``; empty when it does not) and error.
    ``inputs``: then each case's input values, a column per value, or a note where they are
    too many (``MAX_INPUT_VALUES``), named by the endpoints' payload columns as the replay's
    workspace (or ``workspace``, for a replay reopened from one) recorded them."""
    header = ["case", "capture_id", "endpoint", "ts", "request_id", "role", "kind", "label",
              "recorded_prediction", "recorded_confidence", "first_failing"]
    for run in result.runs:
        header += [f"{run.version}:{c}" for c in
                   ("class", "confidence", "latency_ms", "verdict", "why", "error")]
    firsts = result.first_failing()
    silent = result.unanswered_everywhere().tolist()
    control = result.control_mask.tolist()
    ids = result.capture_ids
    records = _records(result)
    rows = []
    for i in range(len(control)):
        endpoint, ts_ns, request_id, prediction, recorded = records[i]
        row: list[object] = [i, ids[i], endpoint or "", _utc(ts_ns), request_id or "",
                             "control" if control[i] else "failure", result.kind(i),
                             result.label(i) or "", "" if prediction is None else prediction,
                             "" if recorded is None else round(recorded, 6),
                             firsts[i] or ("no answer" if silent[i] else "")]
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
    if inputs:
        _add_inputs(result, header, rows, _input_names(result, workspace))
    return header, rows


def _add_inputs(result: ReplayResult, header: list[str], rows: list[list[object]],
                names: dict[str, tuple[str, ...]]) -> None:
    """Each case's input values as columns after the others (the union of every case's
    columns, in the order first met), and ``inputs_left_out`` where there were too many."""
    per_case = []
    columns: dict[str, None] = {}
    left_out = False
    for case in result.cases:  # read from the workspace once, with the tensors
        cells, note = _input_cells(case.capture.inputs, names.get(case.capture.endpoint, ()))
        per_case.append((cells, note))
        columns.update(dict.fromkeys(cells))
        left_out |= bool(note)
    header += list(columns)
    if left_out:
        header.append("inputs_left_out")
    for row, (cells, note) in zip(rows, per_case, strict=True):
        row += [cells.get(c, "") for c in columns]
        if left_out:
            row.append(note)


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


def write_cases_csv(result: ReplayResult, out: str | Path, *, inputs: bool = False,
                    workspace: Path | None = None) -> Path:
    """Write ``case_table`` to ``out``, whole or not at all (a temporary file renamed); see
    ``export_path`` for what it refuses to replace. ``inputs``, ``workspace``: as
    ``case_table`` takes them."""
    shown, out = out, export_path(out)
    header, rows = case_table(result, inputs=inputs, workspace=workspace)
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
            writer.writerows([inert(v) for v in row] for row in rows)
        os.replace(tmp, out)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ReplayError(f"cannot write {shown}: {exc.strerror or exc}") from None
    return Path(shown)
