"""Loads the rows an active probe sends: CSV, Parquet, JSON lines, .npy or .npz, with optional ids
and labels (an .npz carries them as arrays beside its rows).

Columns named ``id``/``request_id``, ``label``, ``ts``/``timestamp`` and ``prediction`` are
bookkeeping, not features; every other column is a feature, in file order.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.core.domain import not_a_file
from probes.base import ProbeError

if TYPE_CHECKING:
    import pandas as pd

ID_COLUMNS = ("request_id", "id")
LABEL_COLUMN = "label"
RESERVED = {"request_id", "id", "label", "ts", "timestamp", "prediction"}


@dataclass(frozen=True, slots=True)
class Payload:
    """Rows to send. ``features`` has one row per request (any trailing shape for .npy)."""

    features: np.ndarray
    columns: tuple[str, ...]
    labels: tuple[str, ...] | None = None
    ids: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.features)


def load_payload(path: str | Path) -> Payload:
    path = Path(path)
    if problem := not_a_file(path, "payload file"):
        raise ProbeError(problem)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            # allow_pickle=False: a payload file must never be able to run code.
            array = np.load(path, allow_pickle=False)
            if array.ndim == 0 or len(array) == 0:
                raise ProbeError(f"payload {path} holds no rows")
            return Payload(_numeric_rows(array, path), ())
        if suffix == ".npz":
            return _npz_payload(path)
        # Imported here: every probe module loads this one, and an edge agent serving a
        # model without a table payload should not carry pandas (0.3 s, 60 MB).
        import pandas as pd

        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix in (".jsonl", ".ndjson"):
            frame = pd.read_json(path, lines=True)
        else:
            raise ProbeError(f"payload {path}: unsupported format '{suffix}'; "
                             "use .csv, .parquet, .jsonl, .npy or .npz")
    except ProbeError:
        raise
    except Exception as exc:
        raise ProbeError(f"cannot read payload {path}: {exc}") from exc
    return payload_from_frame(frame, source=str(path))


def _numeric_rows(array: np.ndarray, path: Path, name: str | None = None) -> np.ndarray:
    """``array`` when it holds plain numbers (bool, int, float); else one clear refusal.
    Strings failed inside the probe as an internal error, and complex numbers and dates
    were cast to other numbers and sent as if they were the user's data."""
    if array.dtype.kind in "biuf":
        return array
    kinds = {"U": "text", "S": "bytes", "c": "complex numbers", "M": "dates", "m": "durations",
             "V": "structured records", "O": "objects"}
    what = kinds.get(array.dtype.kind, f"values of type {array.dtype}")
    where = f"'{name}' in " if name else ""
    raise ProbeError(f"payload {where}{path} holds {what} ({array.dtype}); a model's input "
                     "rows are numbers: convert them before saving, or use a .csv whose "
                     "columns are numbers")


def _npz_payload(path: Path) -> Payload:
    """Rows of any shape (images) with their labels and ids, which a .npy cannot carry: one
    array of rows, and optionally arrays named ``label`` and ``id`` (or ``request_id``) with
    one entry per row. Loaded without pickle, so object arrays are refused."""
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        label_key = next((n for n in names if n.lower() == LABEL_COLUMN), None)
        id_key = next((n for n in names if n.lower() in ID_COLUMNS), None)
        rows_keys = [n for n in names if n not in (label_key, id_key)]
        if len(rows_keys) != 1:
            raise ProbeError(f"payload {path} holds the arrays {', '.join(names) or 'none'}; "
                             "an .npz payload holds one array of input rows, and optionally "
                             f"'{LABEL_COLUMN}' and 'id' arrays of one entry per row")
        features = archive[rows_keys[0]]
        if features.ndim == 0 or len(features) == 0:
            raise ProbeError(f"payload {path} holds no rows")
        features = _numeric_rows(features, path, rows_keys[0])

        def per_row(key: str | None) -> np.ndarray | None:
            if key is None:
                return None
            values = archive[key]
            if values.shape != (len(features),):
                raise ProbeError(f"payload {path}: '{key}' has shape {values.shape}; it needs "
                                 f"one entry per row of '{rows_keys[0]}' ({len(features)})")
            return values

        labels, ids = per_row(label_key), per_row(id_key)
    return Payload(features, (),
                   None if labels is None else tuple(_label_text(v) for v in labels.tolist()),
                   None if ids is None else tuple(str(v) for v in ids.tolist()))


def payload_columns(path: str | Path) -> tuple[str, ...]:
    """A payload file's feature columns, in the order a probe sends them, read from its head
    alone; () for a .npy file (its values have no names) or a file that cannot be read."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            import pandas as pd

            names = list(pd.read_csv(path, nrows=0).columns)
        elif suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
        elif suffix in (".jsonl", ".ndjson"):
            with path.open(encoding="utf-8") as f:
                first = json.loads(f.readline() or "{}")
            names = list(first) if isinstance(first, dict) else []
        else:
            return ()
    except Exception:  # no names to offer is not an error: callers fall back to positions
        return ()
    return tuple(str(c) for c in names if str(c).lower() not in RESERVED)


def payload_from_frame(frame: pd.DataFrame, source: str = "payload") -> Payload:
    import pandas as pd

    if frame.empty:
        raise ProbeError(f"{source} holds no rows")
    feature_cols = [c for c in frame.columns if str(c).lower() not in RESERVED]
    if not feature_cols:
        raise ProbeError(f"{source} has no feature columns (only {', '.join(frame.columns)})")
    numeric = frame[feature_cols].apply(pd.to_numeric, errors="coerce")
    bad = [c for c in feature_cols if numeric[c].isna().all() and not frame[c].isna().all()]
    if bad:
        raise ProbeError(f"{source}: columns {', '.join(map(str, bad))} are not numeric")
    # A blank cell is a missing value (the demo's stream has some, sent as NaN on purpose);
    # any other cell that is not a number is a mistake in the file, and read as NaN it would
    # pass for the model's wrong answer.
    # Only a column read as text can hold such a cell; numeric ones are skipped unread.
    texts = [c for c in feature_cols if not pd.api.types.is_numeric_dtype(frame[c])]
    if texts:
        raw = frame[texts]
        given = raw.notna() & ~raw.apply(
            lambda col: col.map(lambda v: isinstance(v, str) and not v.strip()))
        wrong = (given & numeric[texts].isna()).to_numpy()
        if wrong.any():
            rows, cols = np.nonzero(wrong)
            more = len(rows) - 1
            raise ProbeError(
                f"{source}: row {rows[0] + 1}, column {texts[cols[0]]}: "
                f"{raw.iat[rows[0], cols[0]]!r} is not a number"
                + (f" ({more} more such cell{'s' if more > 1 else ''})" if more else ""))
    lower = {str(c).lower(): c for c in frame.columns}
    labels = None
    if LABEL_COLUMN in lower:
        labels = tuple("" if pd.isna(v) else _label_text(v) for v in frame[lower[LABEL_COLUMN]])
    ids = None
    for name in ID_COLUMNS:
        if name in lower:
            ids = tuple(str(v) for v in frame[lower[name]])
            break
    return Payload(numeric.to_numpy(np.float64), tuple(map(str, feature_cols)), labels, ids)


def _label_text(value: object) -> str:
    # 2.0 from a float column and "2" from a text column are the same class; NaN is none.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value)
