"""Production logs into the workspace: ``import`` turns rows (CSV, Parquet, JSON lines) into
captures; ``label`` joins late ground-truth labels by request id, and a capture whose prediction
disagrees with its label becomes a failure (MISMATCH). Thread: the caller's; plain functions.

Columns are found by name (``request_id``/``id``, ``timestamp``/``ts``, ``prediction``,
``label``, ``latency_ms``, ``confidence``) or named explicitly in a ``ColumnMap``; every other
column is a feature, in file order. A feature column may also hold whole lists (JSON lines).
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from app.core.domain import Capture, CaptureStatus, Metric, Sample, TensorBlob, not_a_file
from app.core.store import Store

CHUNK_ROWS = 5000
_AUTO = {"id": ("request_id", "id"), "timestamp": ("timestamp", "ts", "time"),
         "prediction": ("prediction", "predicted"), "label": ("label", "ground_truth"),
         "latency": ("latency_ms",), "confidence": ("confidence",)}


class LogImportError(Exception):
    """A log or label file that cannot be read as asked; the message says what to change."""


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """Which column holds what; None means "find it by its usual name"."""

    id: str | None = None
    timestamp: str | None = None
    features: tuple[str, ...] | None = None
    prediction: str | None = None
    label: str | None = None
    latency: str | None = None
    confidence: str | None = None


@dataclass(frozen=True, slots=True)
class ImportResult:
    endpoint: str
    rows: int
    imported: int
    skipped: int  # request ids already in the workspace for this endpoint
    failures: int
    ids_made_up: bool = False  # no id column: a second import of the file adds it again
    shared_ids: int = 0  # rows whose id another row of the file has too


@dataclass(frozen=True, slots=True)
class LabelResult:
    rows: int
    matched: int  # captures that got a label
    unknown: int  # label rows whose request id has no capture
    new_failures: int  # captures that became MISMATCH
    cleared: int  # MISMATCH captures whose corrected label now agrees
    blank: int = 0  # label rows with no label or no id: nothing to join


def endpoint_name(name: str) -> str:
    """An endpoint URI for a log: ``log:NAME`` unless NAME already is a URI."""
    return name if ":" in name else f"log:{name}"


def label_text(value: object) -> str | None:
    """Labels and predictions as comparable text: 2, 2.0 and "2" are one class."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    text = str(value).strip()
    return text or None


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if problem := not_a_file(path, "file"):
        raise LogImportError(problem)
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            if suffix == ".tsv":
                return pd.read_csv(path, sep="\t")
            return pd.read_csv(path, **_csv_dialect(path))
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".ndjson", ".json"):
            return pd.read_json(path, lines=suffix != ".json")
    except Exception as exc:
        raise LogImportError(f"cannot read {path}: {str(exc).splitlines()[0]}") from exc
    raise LogImportError(f"{path}: unsupported format '{suffix}'; use .csv, .parquet or .jsonl")


def _csv_dialect(path: Path) -> dict:
    """Separator and decimal mark from the header: spreadsheets set to many European locales
    save "a;b;c" with decimal commas, which read with "," became one column of text."""
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        header = f.readline()
    if header.count(";") > header.count(","):
        return {"sep": ";", "decimal": ","}
    return {"sep": ","}


def _column(frame: pd.DataFrame, given: str | None, role: str, source: str) -> str | None:
    if given is not None:
        if given not in frame.columns:
            raise LogImportError(f"{source} has no column '{given}' (for {role}); columns: "
                                 f"{', '.join(map(str, frame.columns))}")
        return given
    lower = {str(c).lower(): c for c in frame.columns}
    return next((lower[n] for n in _AUTO[role] if n in lower), None)


# Epoch numbers are told apart by size: seconds now are about 1.8e9, milliseconds 1.8e12,
# microseconds 1.8e15, nanoseconds 1.8e18. Each bound sits three orders above the last.
_EPOCH_SCALES = ((1e11, 1e9), (1e14, 1e6), (1e17, 1e3), (float("inf"), 1.0))


_EARLIEST_EPOCH_S = 1e8  # 1973: smaller numbers are not times (20240330 is a date's digits)


def _epoch_ns(values: np.ndarray, where: np.ndarray, col: pd.Series) -> np.ndarray:
    """Epoch seconds, milliseconds, microseconds or nanoseconds, told by size row by row (a
    log may mix them), as ns. ``where``: the rows of ``col`` these values came from, to name
    one that is not a time."""
    size = np.abs(values)
    scale = np.select([size < b for b, _ in _EPOCH_SCALES[:-1]],
                      [s for _, s in _EPOCH_SCALES[:-1]], _EPOCH_SCALES[-1][1])
    ns = values * scale
    bad = (values < _EARLIEST_EPOCH_S) | (ns >= 2.0**63)
    if bad.any():
        row = int(where[np.flatnonzero(bad)[0]])
        raise LogImportError(f"timestamp '{col.iloc[row]}' in {_row(row)} is not a time between "
                             "1973 and 2262 in epoch s, ms, µs or ns; write dates as ISO 8601 "
                             "(2024-03-30T12:00:00Z)")
    return ns.astype(np.int64)


def _row(frame_index: int) -> str:
    return f"row {frame_index + 1}"  # rows after the header, counted from 1


def _timestamps(col: pd.Series | None, rows: int) -> np.ndarray:
    now = time.time_ns()
    if col is None:
        return now + np.arange(rows, dtype=np.int64)  # import order, one ns apart
    numbers = pd.to_numeric(col, errors="coerce")
    is_number = numbers.notna().to_numpy()
    out = np.empty(rows, dtype=np.int64)
    if is_number.any():
        values = numbers.to_numpy(np.float64)[is_number]
        if (values < 0).any() or not np.isfinite(values).all():
            bad = int(np.flatnonzero(is_number)[np.flatnonzero(~(values >= 0))[0]])
            raise LogImportError(f"timestamp '{col.iloc[bad]}' in {_row(bad)} is not a time "
                                 "after 1970")
        out[is_number] = _epoch_ns(values, np.flatnonzero(is_number), col)
    if not is_number.all():
        texts = col[~is_number]
        parsed = pd.to_datetime(texts, utc=True, errors="coerce", format="ISO8601")
        if parsed.isna().any():  # not all ISO 8601: each row on its own (slower)
            with warnings.catch_warnings():  # pandas warns when it must guess per row
                warnings.simplefilter("ignore", UserWarning)
                parsed = pd.to_datetime(texts, utc=True, errors="coerce", format="mixed")
        if parsed.isna().any():
            bad = int(np.flatnonzero(~is_number)[np.flatnonzero(parsed.isna().to_numpy())[0]])
            raise LogImportError(f"timestamp '{col.iloc[bad]}' in {_row(bad)} cannot be read "
                                 "as a date and time or epoch number")
        out[~is_number] = parsed.astype("int64").to_numpy()
    return out


def _numbers(frame: pd.DataFrame, col: str | None, role: str) -> np.ndarray | None:
    """A numeric column (latency, confidence); blanks become NaN, words are an error."""
    if col is None:
        return None
    numbers = pd.to_numeric(frame[col], errors="coerce")
    wrong = (numbers.isna() & frame[col].notna()).to_numpy()
    if wrong.any():
        bad = int(np.flatnonzero(wrong)[0])
        raise LogImportError(f"{role} column '{col}' holds '{frame[col].iloc[bad]}' in "
                             f"{_row(bad)}, which is not a number; fix it or leave the cell "
                             "empty")
    return numbers.to_numpy(np.float64)


def _features(frame: pd.DataFrame, cols: list[str], dtype: np.dtype, source: str) -> np.ndarray:
    if not cols:
        raise LogImportError(f"{source} has no feature columns; name them with --features")
    if len(cols) == 1 and frame[cols[0]].map(lambda v: isinstance(v, list | np.ndarray)).all():
        try:
            return np.stack([np.asarray(v, dtype) for v in frame[cols[0]]])
        except ValueError as exc:
            raise LogImportError(f"{source}: the lists in '{cols[0]}' differ: {exc}") from None
    numeric = frame[cols].apply(pd.to_numeric, errors="coerce")
    bad = [c for c in cols if numeric[c].isna().all() and not frame[c].isna().all()]
    if bad:
        raise LogImportError(f"{source}: feature columns {', '.join(map(str, bad))} are not "
                             "numeric; leave them out with --features")
    values = numeric.to_numpy(np.float64)
    if dtype.kind in "iub":
        # A cast would wrap 300 to 44 in int8 without a word: refuse what does not fit.
        info = np.iinfo(dtype) if dtype.kind != "b" else None
        lo, hi = (info.min, info.max) if info else (0, 1)
        wrong = ~np.isfinite(values) | (values < lo) | (values > hi) | (values != np.round(values))
        if wrong.any():
            r, c = map(int, np.argwhere(wrong)[0])
            raise LogImportError(f"{source}: feature '{cols[c]}' holds '{frame[cols[c]].iloc[r]}' "
                                 f"in {_row(r)}, which is not a whole number from {lo} to {hi} "
                                 f"(--dtype {dtype.name}); pick a wider --dtype")
    return values.astype(dtype)


def import_log(path: str | Path, db: str | Path, endpoint: str,
               columns: ColumnMap = ColumnMap(), *, input_name: str = "features",
               dtype: str = "float32", model_version: str | None = None,
               progress: Callable[[float], None] = lambda _: None) -> ImportResult:
    """Add one capture per row; rows whose request id is already there are skipped."""
    source = str(path)
    frame = read_table(path)
    if frame.empty:
        raise LogImportError(f"{source} holds no rows")
    endpoint = endpoint_name(endpoint)
    roles = {r: _column(frame, getattr(columns, r), r, source) for r in _AUTO}
    if columns.features is not None:
        for c in columns.features:
            _column(frame, c, "features", source)
        feature_cols = list(columns.features)
    else:
        taken = {c for c in roles.values() if c is not None}
        # "Unnamed: 0" is the index pandas writes with to_csv(): a row number, no feature.
        feature_cols = [c for c in frame.columns
                        if c not in taken and str(c).lower() != "unnamed: 0"]
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise LogImportError(f"unknown dtype '{dtype}'") from None
    if np_dtype.kind not in "biuf":  # the store, drift and replay take numbers only
        raise LogImportError(f"--dtype {dtype} is not a number type; use float32, float64, "
                             "int64, ... (features are numbers)")
    features = _features(frame, feature_cols, np_dtype, source)
    ts = _timestamps(frame[roles["timestamp"]] if roles["timestamp"] else None, len(frame))
    if roles["id"]:
        # 1000, not "1000.0" (a blank cell makes pandas read the column as floats), so late
        # labels find them; a blank id would never be found, so it is an error.
        ids = [label_text(v) for v in frame[roles["id"]]]
        if None in ids:
            bad = ids.index(None)
            raise LogImportError(f"request id column '{roles['id']}' is empty in {_row(bad)}; "
                                 "fill it, or leave the column out (--id-column) to have ids "
                                 "made up")
    else:
        ids = [uuid.uuid4().hex for _ in range(len(frame))]

    def texts(role: str) -> list[str | None]:
        col = roles[role]
        return [label_text(v) for v in frame[col]] if col else [None] * len(frame)

    preds, labels = texts("prediction"), texts("label")
    latency = _numbers(frame, roles["latency"], "latency")
    conf = _numbers(frame, roles["confidence"], "confidence")

    store = Store(db)
    imported = skipped = failures = 0
    try:
        store.endpoint_id(endpoint, "log")
        for start in range(0, len(frame), CHUNK_ROWS):
            stop = min(len(frame), start + CHUNK_ROWS)
            existing = store.existing_request_ids(endpoint, ids[start:stop])
            captures, samples = [], []
            for i in range(start, stop):
                if ids[i] in existing:
                    skipped += 1
                    continue
                mismatch = preds[i] is not None and labels[i] is not None and preds[i] != labels[i]
                status = CaptureStatus.MISMATCH if mismatch else CaptureStatus.OK
                lat = float(latency[i]) if latency is not None and np.isfinite(latency[i]) else 0.0
                c = conf[i] if conf is not None and np.isfinite(conf[i]) else None
                captures.append(Capture(
                    endpoint=endpoint, ts_ns=int(ts[i]), latency_ms=lat, status=status,
                    inputs=(TensorBlob.from_array(input_name, features[i:i + 1]),),
                    request_id=ids[i], label=labels[i], prediction=preds[i],
                    confidence=None if c is None else float(c), model_version=model_version))
                if latency is not None and np.isfinite(latency[i]):
                    samples.append(Sample(endpoint, int(ts[i]), Metric.LATENCY_MS, lat))
                if mismatch:
                    failures += 1
                    samples.append(Sample(endpoint, int(ts[i]), Metric.FAILURE, 1.0))
            store.write_batch(samples, captures)
            imported += len(captures)
            progress(stop / len(frame))
    finally:
        store.close()
    return ImportResult(endpoint, len(frame), imported, skipped, failures,
                        ids_made_up=roles["id"] is None,
                        shared_ids=0 if roles["id"] is None else len(ids) - len(set(ids)))


def apply_labels(path: str | Path, db: str | Path, *, id_column: str | None = None,
                 label_column: str | None = None, endpoint: str | None = None) -> LabelResult:
    """Join labels to captures by request id and re-judge each: MISMATCH when they disagree."""
    source = str(path)
    frame = read_table(path)
    id_col = _column(frame, id_column, "id", source)
    label_col = _column(frame, label_column, "label", source)
    if id_col is None or label_col is None:
        raise LogImportError(f"{source} needs a request id and a label column (found "
                             f"{', '.join(map(str, frame.columns))}); name them with "
                             "--id-column and --label-column")
    # Ids as the import stored them (1000, not "1000.0" when a blank made the column floats).
    pairs = [(label_text(i), label_text(v)) for i, v in zip(frame[id_col], frame[label_col],
                                                            strict=True)]
    labels = {k: v for k, v in pairs if k is not None and v is not None}
    blank = sum(1 for k, v in pairs if k is None or v is None)
    store = Store(db)
    try:
        chosen = None
        if endpoint:
            # The name import gave (log:NAME), else the URI or a part only one URI has; a
            # name that matches nothing is an error, not "0 labelled".
            named = endpoint_name(endpoint)
            known = {e["uri"] for e in store.endpoints()}
            chosen = named if named in known else store.resolve_endpoint(endpoint)
        rows = store.captures_for_labels(list(labels), chosen)
        updates, samples, undone = [], [], []
        new_failures = cleared = 0
        for cid, uri, ts, rid, prediction, status in rows:
            label = labels[rid]
            disagree = prediction is not None and prediction != label
            new = status
            if disagree and status == CaptureStatus.OK:
                new = str(CaptureStatus.MISMATCH)
                new_failures += 1
                samples.append(Sample(uri, ts, Metric.FAILURE, 1.0))
            elif not disagree and status == CaptureStatus.MISMATCH:
                new = str(CaptureStatus.OK)  # an earlier, wrong label is corrected
                cleared += 1
                # Its failure goes too: error rates, incidents and reports count samples.
                undone.append(Sample(uri, ts, Metric.FAILURE, 1.0))
            updates.append((cid, label, new))
        store.label_captures(updates, samples, undone)
    finally:
        store.close()
    matched_ids = {r[3] for r in rows}
    return LabelResult(len(frame), len(updates), len(set(labels) - matched_ids),
                       new_failures, cleared, blank)
