"""Saves a replay (its cases, per case x version results and verdicts) in the workspace and
reopens it as it was. Thread: the caller's, with that thread's own Store.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from app.core import codec
from app.core.domain import TensorBlob
from app.core.replay import (
    NO_CLASS,
    Case,
    Criteria,
    ReplayResult,
    Selection,
    VersionRun,
)
from app.core.replay_run import Columns
from app.core.replay_targets import ReplayError
from app.core.store import Store


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def save_replay(store: Store, result: ReplayResult, title: str | None = None) -> int:
    """Write the replay in one transaction; sets and returns ``result.replay_id``."""
    firsts = result.first_failing()
    meta = {
        "created_ns": time.time_ns(),
        "title": title,
        "selection": json.dumps(asdict(result.selection) if result.selection else None),
        "versions": json.dumps([{"name": r.version, "location": r.location}
                                for r in result.runs]),
        "criteria": json.dumps(asdict(result.criteria)),
        "cancelled": result.cancelled,
    }
    cases = list(zip(range(len(firsts)), result.capture_ids, result.control_mask.tolist(),
                     firsts, strict=True))

    def rows() -> Any:
        for j, (run, failing) in enumerate(zip(result.runs, result.failing, strict=True)):
            pred, conf, lat = run.prediction.tolist(), run.confidence.tolist(), \
                run.latency_ms.tolist()
            fail = failing.tolist()
            for i in range(len(result.cases)):
                outs = run.output(i)
                blob = codec.encode(tuple(TensorBlob.from_array(n, np.ascontiguousarray(a))
                                          for n, a in outs)) if outs else None
                yield (i, j, None if pred[i] == NO_CLASS else str(pred[i]), _num(conf[i]),
                       _num(lat[i]), run.errors.get(i), int(fail[i]), blob)

    result.replay_id = store.save_replay(meta, cases, rows())
    return result.replay_id


def load_replay(store: Store, replay_id: int) -> ReplayResult:
    """A saved replay, with its captures read back from the workspace."""
    found = store.replay_rows(replay_id)
    if found is None:
        raise ReplayError(f"no replay {replay_id} in {store.path}")
    meta, case_rows, result_rows = found
    cases = []
    for _, capture_id, control, _ in case_rows:
        stored = store.capture(int(capture_id))
        if stored is None:
            raise ReplayError(f"replay {replay_id} refers to capture {capture_id}, which is no "
                              "longer in the workspace")
        cases.append(Case(stored.id, stored.capture, bool(control)))
    n = len(cases)
    versions = json.loads(meta["versions"])
    selection_doc = json.loads(meta["selection"] or "null")
    selection = (Selection(**{**selection_doc, "kinds": tuple(selection_doc["kinds"])})
                 if selection_doc else None)
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
        col = Columns(n)
        for i, _, pred, conf, lat, err, failed, blob in rows:
            if pred is not None and pred.lstrip("-").isdigit():
                prediction[i] = int(pred)
            confidence[i] = np.nan if conf is None else conf
            latency[i] = np.nan if lat is None else lat
            fail[i] = bool(failed)
            if err is not None:
                errors[i] = err
            outs = [(t.name, t.to_array()) for t in codec.decode(blob)]
            if outs:
                col.place(slice(i, i + 1), 1, outs)
                finite[i] = all(np.isfinite(a).all() for _, a in outs if a.dtype.kind == "f")
        runs.append(VersionRun(v["name"], v["location"], prediction, confidence, latency,
                               finite, errors, col.outputs, col.irregular))
        failing.append(fail)
    return ReplayResult(cases, runs, criteria, selection, bool(meta["cancelled"]),
                        replay_id=int(meta["id"]), failing=failing)
