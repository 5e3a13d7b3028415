"""The full drift report: Evidently's ``Report`` with the data-drift preset, as a plain function
with progress and cancel callbacks; saves its HTML and returns per-column results.
Thread: any (the GUI runs it on a worker; the CLI calls it directly).

Evidently computes the whole report in one call, so cancelling takes effect between stages
(before the run, after it, before the HTML is written), not in the middle of one.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from pandas.api.types import is_numeric_dtype

from app.core.drift import DriftError, DriftResult, feature_columns, one_sided
from app.core.drift_stats import BY_DISPLAY, ColumnDrift, Kind, clean, infer_kind, kind_note
from app.core.output_files import refusal

log = logging.getLogger(__name__)


class DriftCancelled(DriftError):
    """The user cancelled the report before it finished."""


def report_path_for(db_path: str | Path, endpoint: str, ts_ns: int | None = None) -> Path:
    """Where a report's HTML goes: a folder beside the workspace file, one file per report."""
    db_path = Path(db_path)
    ts = datetime.fromtimestamp((ts_ns or time.time_ns()) / 1e9, UTC).strftime("%Y%m%dT%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", endpoint.split("?")[0]).strip("_")[-60:]
    return db_path.parent / f"{db_path.stem}-drift-reports" / f"{slug or 'endpoint'}-{ts}.html"


def evidently_report(reference: pd.DataFrame, current: pd.DataFrame, *,
                     columns: Sequence[str] | None = None,
                     kinds: Mapping[str, Kind] | None = None,
                     html_path: str | Path | None = None,
                     progress: Callable[[float], None] = lambda _: None,
                     cancelled: Callable[[], bool] = lambda: False) -> DriftResult:
    """Run Evidently's data-drift preset on the columns both frames share (or ``columns``).

    Column kinds are inferred from the current data as Evidently does, unless ``kinds`` says.
    Columns Evidently would refuse (empty after dropping NaN, text, other types) are reported
    as not tested, with a note, exactly as the fast path reports them.
    """
    if html_path is not None:  # refused before seconds of Evidently, not after
        why = refusal(Path(html_path), (b"<!doctype html", b"<html"), "an HTML report")
        if why:
            raise DriftError(why)
    names = list(columns) if columns is not None else [
        c for c in feature_columns(reference) if c in current.columns]
    missing = [n for n in names if n not in reference.columns or n not in current.columns]
    if missing:
        raise DriftError(f"column(s) {', '.join(missing)} missing from the reference or "
                         "the current data")
    if len(current) == 0:
        return DriftResult(tuple(
            ColumnDrift(n, (kinds or {}).get(n, Kind.NUMERICAL), None, None, None, False,
                        "not tested: the current window is empty") for n in names),
            len(reference), 0, "no rows in the current window")
    progress(0.05)
    kind_of = {n: (kinds or {}).get(n) or infer_kind(current[n]) for n in names}
    untested: dict[str, ColumnDrift] = {}
    for n in names:
        kind = kind_of[n]
        if kind in (Kind.TEXT, Kind.UNSUPPORTED):
            untested[n] = ColumnDrift(n, kind, None, None, None, False,
                                      kind_note(kind, current[n].dtype))
        elif len(clean(reference[n])) == 0 or len(clean(current[n])) == 0:
            side = "reference" if len(clean(reference[n])) == 0 else "current data"
            untested[n] = ColumnDrift(n, kind, None, None, None, False,
                                      f"not tested: no values in the {side} (all missing)")
        elif kind is Kind.NUMERICAL and not (is_numeric_dtype(clean(reference[n]))
                                             and is_numeric_dtype(clean(current[n]))):
            # Numbers on one side, text on the other: Evidently fails the whole report on
            # it (a numpy TypeError); the fast path sets the column aside, and so does this.
            untested[n] = ColumnDrift(n, kind, None, None, None, False,
                                      "not tested: numerical in current data but not in "
                                      "reference")
    tested = [n for n in names if n not in untested]
    found: dict[str, ColumnDrift] = {}
    snapshot = None
    if tested:
        if cancelled():
            raise DriftCancelled("drift report cancelled")
        progress(0.1)
        snapshot = _run(reference[tested], current[tested], tested, kind_of)
        progress(0.85)
        found = _columns(snapshot.dict(), kind_of)
    if html_path is not None and snapshot is not None:
        if cancelled():
            raise DriftCancelled("drift report cancelled")
        html_path = Path(html_path)
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    progress(1.0)
    results = tuple(untested.get(n) or found[n] for n in names)
    if columns is None:  # two files: a column only one has is listed, as the fast path does
        results += one_sided(reference, current)
    return DriftResult(results, len(reference), len(current))


def _run(reference: pd.DataFrame, current: pd.DataFrame, names: list[str],
         kind_of: Mapping[str, Kind]):
    # Imported here: evidently takes seconds to import, and only this report needs it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # evidently's own deprecation noise on import and run
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        definition = DataDefinition(
            numerical_columns=[n for n in names if kind_of[n] is Kind.NUMERICAL],
            categorical_columns=[n for n in names if kind_of[n] is Kind.CATEGORICAL])
        report = Report([DataDriftPreset(columns=names)], include_tests=True)
        try:
            return report.run(Dataset.from_pandas(current, data_definition=definition),
                              Dataset.from_pandas(reference, data_definition=definition))
        except Exception as exc:
            raise DriftError(f"Evidently could not build the drift report: "
                             f"{type(exc).__name__}: {exc}") from exc


def _columns(snapshot: dict, kind_of: Mapping[str, Kind]) -> dict[str, ColumnDrift]:
    """Per-column results from a snapshot: ValueDrift metrics and their drift tests."""
    failed = {t["metric_config"]["metric_id"]: t["status"] == "FAIL"
              for t in snapshot.get("tests", []) if t.get("id") == "drift"}
    out: dict[str, ColumnDrift] = {}
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if not config["type"].endswith(":ValueDrift"):
            continue
        name = config["column"]
        method = BY_DISPLAY.get(config["method"])
        score = float(metric["value"])
        drifted = failed.get(metric["id"])
        if drifted is None:  # no test attached: judge by the method's own rule
            drifted = method.drifted(score) if method else False
        out[name] = ColumnDrift(name, kind_of[name],
                                method.name if method else config["method"], score,
                                float(config["threshold"]), bool(drifted))
    return out
