"""Saves a replay (its cases, per case x version results and verdicts) in the workspace and
reopens it as it was. Thread: the caller's, with that thread's own Store.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict
from itertools import repeat
from typing import Any

import numpy as np

from app.core import codec
from app.core.domain import CaptureStatus, TensorBlob
from app.core.replay import (
    NO_CLASS,
    Case,
    Criteria,
    ReplayResult,
    Selection,
    VersionRun,
    selection_from_json,
)
from app.core.replay_run import Columns
from app.core.replay_targets import ReplayError
from app.core.store import Store


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _encode_one(outs: list[tuple[str, np.ndarray]]) -> bytes | None:
    return codec.encode(tuple(TensorBlob.from_array(n, np.ascontiguousarray(a))
                              for n, a in outs)) if outs else None


def _output_blobs(run: VersionRun, n: int) -> list[bytes | None]:
    """Each case's outputs as ``codec.encode`` writes them. Rows of the stacked columns share
    one header, so it is encoded once and each row's blob is that header plus the row's
    bytes, cut from one buffer; errors and irregular rows are encoded alone."""
    if not run.outputs or n == 0:
        return [_encode_one(run.output(i)) for i in range(n)]
    cols = [np.ascontiguousarray(c).reshape(n, -1).view(np.uint8) for c in run.outputs.values()]
    row_bytes = sum(c.shape[1] for c in cols)
    regular = next((i for i in range(n) if i not in run.errors and i not in run.irregular),
                   None)
    if regular is None:
        return [_encode_one(run.output(i)) for i in range(n)]
    prefix = _encode_one(run.output(regular))[:-row_bytes or None]
    table = np.empty((n, len(prefix) + row_bytes), dtype=np.uint8)
    table[:, :len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    at = len(prefix)
    for c in cols:
        table[:, at:at + c.shape[1]] = c
        at += c.shape[1]
    buf, width = table.tobytes(), table.shape[1]
    blobs: list[bytes | None] = [buf[i * width:(i + 1) * width] for i in range(n)]
    for i in (*run.errors, *run.irregular):
        blobs[i] = _encode_one(run.output(i))
    return blobs


def _failing_column(failing: np.ndarray, unanswered: set[int]) -> list[int | None]:
    """1 or 0 per case; NULL where the version was never asked (no verdict either way)."""
    column: list[int | None] = failing.astype(np.int64).tolist()
    for i in unanswered:
        column[i] = None
    return column


def _slow_limits_json(result: ReplayResult) -> str | None:
    """Each SLOW case's SLO and scale (aligned with its SLOW cases in case order), NaN as
    null; None when the replay worked none out."""
    if result.slo_limits is None or result.slow_scale is None:
        return None
    return json.dumps({k: [None if math.isnan(v) else v for v in a.tolist()] for k, a in
                       (("slo_ms", result.slo_limits), ("scale", result.slow_scale))})


def _slow_limits(text: str | None, slow_cases: int) -> tuple[np.ndarray | None, ...]:
    """``_slow_limits_json`` read back; (None, None) when absent or not for these cases."""
    try:
        doc = json.loads(text) if text else None
        arrays = tuple(np.array([np.nan if v is None else float(v) for v in doc[k]])
                       for k in ("slo_ms", "scale")) if isinstance(doc, dict) else ()
    except (ValueError, TypeError, KeyError):
        arrays = ()
    if len(arrays) != 2 or any(a.size != slow_cases for a in arrays):
        return None, None
    return arrays


# A replay the CLI's Ctrl+C cut short was saved with this title before replays kept how many
# versions they were asked for (and had titles of their own): it is a note, not a title.
STOPPED_NOTE = re.compile(r"stopped by Ctrl\+C after (\d+) of (\d+) versions")


def _selection_doc(result: ReplayResult) -> str:
    """The replays.selection column: the filters (``Selection``'s fields) and, beside them,
    what the run made of them: failures and controls replayed, failures matched before the
    limit, versions asked for. ``replay --list`` reads these without loading any case."""
    doc = asdict(result.selection) if result.selection else {}
    control = result.control_mask
    failures = int(np.count_nonzero(~control))
    doc["replayed"] = {"failures": failures, "controls": len(control) - failures,
                       "failures_matched": result.failures_matched,
                       "versions_asked": result.versions_asked,
                       "requests_asked": result.requests_asked}
    return json.dumps(doc)


def saved_counts(row: dict) -> dict:
    """What ``_selection_doc`` kept beside a saved replay's filters (failures, controls,
    failures_matched, versions_asked); empty for a replay saved before they were kept."""
    try:
        doc = json.loads(row.get("selection") or "null")
    except ValueError:
        return {}
    kept = doc.get("replayed") if isinstance(doc, dict) else None
    return kept if isinstance(kept, dict) else {}


def saved_selection(row: dict) -> Selection | None:
    """A saved replay's filters (None when it kept none)."""
    try:
        return selection_from_json(json.loads(row.get("selection") or "null"))
    except (ValueError, TypeError):
        return None


def saved_title(row: dict) -> str | None:
    """A saved replay's title as a person gave it; None for none, or for the note an older
    CLI saved in its place when Ctrl+C cut the run short."""
    title = row.get("title")
    return None if not title or STOPPED_NOTE.fullmatch(title) else title


def save_replay(store: Store, result: ReplayResult, title: str | None = None) -> int:
    """Write the replay in one transaction; sets and returns ``result.replay_id``.
    ``title``: what its title column holds (default ``result.title``)."""
    firsts = result.first_failing()
    meta = {
        "created_ns": time.time_ns(),
        "title": result.title if title is None else title,
        "selection": _selection_doc(result),
        "versions": json.dumps([{"name": r.version, "location": r.location,
                                 "classes": r.class_names,
                                 "batched_ms_per_row": r.batched_ms_per_row}
                                for r in result.runs]),
        "criteria": json.dumps(asdict(result.criteria)),
        "cancelled": result.cancelled,
        "slow_limits": _slow_limits_json(result),
    }
    cases = list(zip(range(len(firsts)), result.capture_ids, result.control_mask.tolist(),
                     firsts, strict=True))

    def rows() -> Any:
        n = len(firsts)
        for j, (run, failing) in enumerate(zip(result.runs, result.failing, strict=True)):
            pred = run.prediction.tolist()
            names = {p: None if p == NO_CLASS else str(p) for p in set(pred)}
            yield from zip(range(n), repeat(j, n), map(names.__getitem__, pred),
                           map(_num, run.confidence.tolist()),
                           map(_num, run.latency_ms.tolist()), map(run.errors.get, range(n)),
                           _failing_column(failing, run.unanswered), _output_blobs(run, n),
                           strict=True)

    result.replay_id = store.save_replay(meta, cases, rows())
    return result.replay_id


def load_replay(store: Store, replay_id: int) -> ReplayResult:
    """A saved replay, with its captures read back from the workspace."""
    found = store.replay_rows(replay_id)
    if found is None:
        raise ReplayError(f"no replay {replay_id} in {store.path}")
    meta, case_rows, result_rows = found
    cases = []
    found = store.captures_by_id([int(r[1]) for r in case_rows if r[1] is not None])
    for _, capture_id, control, _ in case_rows:
        stored = found.get(capture_id)
        if stored is None:
            raise ReplayError(f"replay {replay_id} refers to capture {capture_id}, which is no "
                              "longer in the workspace")
        cases.append(Case(stored.id, stored.capture, bool(control)))
    n = len(cases)
    versions = json.loads(meta["versions"])
    selection = saved_selection(meta)
    counts = saved_counts(meta)
    versions_asked = counts.get("versions_asked")
    stopped = STOPPED_NOTE.fullmatch(meta.get("title") or "")
    if stopped and versions_asked is None:  # saved by an older CLI, the count in its title
        versions_asked = int(stopped.group(2))
    criteria = Criteria(**json.loads(meta["criteria"]))
    by_version: dict[int, list[tuple]] = {}
    for row in result_rows:
        by_version.setdefault(int(row[1]), []).append(row)
    runs, failing = [], []
    for j, v in enumerate(versions):
        rows = by_version.get(j, [])
        prediction = np.full(n, NO_CLASS, dtype=np.int64)
        confidence = np.full(n, np.nan)
        latency = np.full(n, np.nan)
        finite = np.ones(n, dtype=bool)
        fail = np.zeros(n, dtype=bool)
        errors: dict[int, str] = {}
        unanswered: set[int] = set()
        col = Columns(n)
        for i, _, pred, conf, lat, err, failed, blob in rows:
            if pred is not None and pred.lstrip("-").isdigit():
                prediction[i] = int(pred)
            confidence[i] = np.nan if conf is None else conf
            latency[i] = np.nan if lat is None else lat
            fail[i] = bool(failed)
            if err is not None:
                errors[i] = err
                if failed is None:
                    unanswered.add(i)
            outs = [(t.name, t.to_array()) for t in codec.decode(blob)]
            if outs:
                col.place(slice(i, i + 1), 1, outs)
                finite[i] = all(np.isfinite(a).all() for _, a in outs if a.dtype.kind == "f")
        runs.append(VersionRun(v["name"], v["location"], prediction, confidence, latency,
                               finite, errors, unanswered, col.outputs, col.irregular,
                               class_names=v.get("classes", []),
                               batched_ms_per_row=v.get("batched_ms_per_row")))
        failing.append(fail)
    slow_cases = sum(1 for c in cases if c.capture.status == CaptureStatus.SLOW)
    slo, scale = _slow_limits(meta.get("slow_limits"), slow_cases)
    return ReplayResult(cases, runs, criteria, selection, bool(meta["cancelled"]),
                        replay_id=int(meta["id"]), failing=failing, slo_limits=slo,
                        slow_scale=scale, failures_matched=counts.get("failures_matched"),
                        title=saved_title(meta), versions_asked=versions_asked,
                        requests_asked=counts.get("requests_asked"))
