"""Fast drift of a data set against a prepared reference, with Evidently's verdicts. Thread: any.

The public face of drift: prepare a reference once (``prepare_reference``), then ``evaluate``
any number of current windows against it. Each column gets the test Evidently 0.7.23 would
choose (see ``drift_stats``); ``DriftResult.to_json`` has the shape the CLI prints. Features
of captured requests come from the first input tensor of each capture (``capture_frame``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from app.core.domain import TensorBlob
from app.core.drift_stats import ColumnDrift, ColumnReference, Kind, clean, column_drift, infer_kind

# Bookkeeping columns of a data file: never features. Labels and predictions are kept, since
# their drift (target and prediction drift) is worth seeing.
# Not features: ids, the time columns `import` reads, and the index pandas writes unnamed.
BOOKKEEPING_COLUMNS = frozenset({"id", "request_id", "ts", "timestamp", "time", "unnamed: 0"})
PREDICTION_COLUMN = "prediction"
PARALLEL_MIN_ROWS = 100_000  # below this, threads cost more than they save


class DriftError(Exception):
    """Drift cannot be computed for a reason the user can fix; the message says which."""


@dataclass(frozen=True, slots=True)
class DriftResult:
    """Per-column verdicts of one evaluation; the share counts only columns that were tested."""

    columns: tuple[ColumnDrift, ...]
    rows_reference: int
    rows_current: int
    note: str | None = None

    @property
    def tested(self) -> tuple[ColumnDrift, ...]:
        return tuple(c for c in self.columns if c.tested)

    @property
    def share_drifted(self) -> float:
        tested = self.tested
        return sum(c.drifted for c in tested) / len(tested) if tested else 0.0

    @property
    def drifted_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.drifted]

    def column(self, name: str) -> ColumnDrift:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_json(self) -> dict:
        out = {"columns": [c.to_json() for c in self.columns],
               "share_drifted": self.share_drifted,
               "rows": {"reference": self.rows_reference, "current": self.rows_current}}
        if self.note:
            out["note"] = self.note
        return out


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """Columns of a data file that drift looks at: all but the bookkeeping ones."""
    return [str(c) for c in frame.columns if str(c).lower() not in BOOKKEEPING_COLUMNS]


class PreparedReference:
    """A reference data set prepared once: per column its cleaned, sorted and counted values."""

    def __init__(self, frame: pd.DataFrame, columns: Sequence[str] | None = None) -> None:
        names = list(columns) if columns is not None else feature_columns(frame)
        missing = [c for c in names if c not in frame.columns]
        if missing:
            raise DriftError(f"reference has no column(s) {', '.join(missing)}")
        self.rows = len(frame)
        self.columns: tuple[str, ...] = tuple(names)
        self._columns = {c: ColumnReference.prepare(c, frame[c]) for c in names}

    def __contains__(self, name: str) -> bool:
        return name in self._columns

    def column(self, name: str) -> ColumnReference:
        return self._columns[name]

    def add_column(self, column: ColumnReference) -> None:
        """Add (or replace) one prepared column, e.g. a prediction baseline gathered later."""
        self._columns[column.name] = column
        if column.name not in self.columns:
            self.columns = (*self.columns, column.name)

    def warm(self) -> PreparedReference:
        """Sort numeric columns now, so the first evaluation costs no more than the next."""
        def warm_one(ref: ColumnReference) -> None:
            if ref.numeric:
                ref.sorted()
                ref.std()
                ref.unique()

        if self.rows >= PARALLEL_MIN_ROWS and len(self._columns) > 1:
            with ThreadPoolExecutor(max_workers=2) as pool:
                list(pool.map(warm_one, self._columns.values()))
        else:
            for ref in self._columns.values():
                warm_one(ref)
        return self


def prepare_reference(frame: pd.DataFrame, columns: Sequence[str] | None = None
                      ) -> PreparedReference:
    return PreparedReference(frame, columns).warm()


def evaluate(reference: PreparedReference, current: pd.DataFrame, *,
             columns: Sequence[str] | None = None,
             kinds: Mapping[str, Kind] | None = None) -> DriftResult:
    """Drift of ``current`` against ``reference`` for each shared column (or those given).

    ``kinds`` forces a column's kind (captured tensors are always numbers, predictions always
    categories); otherwise it is inferred from the current data, as Evidently does.
    """
    names = list(columns) if columns is not None else [
        c for c in reference.columns if c in current.columns]
    if len(current) == 0:
        return DriftResult(tuple(
            ColumnDrift(n, (kinds or {}).get(n, Kind.NUMERICAL), None, None, None, False,
                        "not tested: the current window is empty") for n in names),
            reference.rows, 0, "no rows in the current window")
    missing = [n for n in names if n not in current.columns or n not in reference]
    if missing:
        raise DriftError(f"column(s) {', '.join(missing)} missing from "
                         f"{'the current data' if missing[0] in reference else 'the reference'}")

    def one(name: str) -> ColumnDrift:
        return column_drift(reference.column(name), current[name], (kinds or {}).get(name))

    if len(current) >= PARALLEL_MIN_ROWS and len(names) > 1:
        # numpy sorts and merges release the GIL, so columns run side by side on two cores.
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = tuple(pool.map(one, names))
    else:
        results = tuple(one(n) for n in names)
    return DriftResult(results, reference.rows, len(current))


def drift(reference: pd.DataFrame, current: pd.DataFrame) -> DriftResult:
    """One-off drift of two data frames over the features they share; a feature only one
    of them has is listed as not tested, saying which lacks it."""
    for frame, which in ((reference, "reference"), (current, "current data")):
        if frame.empty:
            raise DriftError(f"the {which} holds no rows")
    ref_cols = feature_columns(reference)
    shared = [c for c in ref_cols if c in current.columns]
    if not shared:
        raise DriftError("reference and current data share no feature columns "
                         f"(reference has {', '.join(ref_cols) or 'none'})")
    result = evaluate(prepare_reference(reference, shared), current, columns=shared)
    alone = one_sided(reference, current)
    return replace(result, columns=(*result.columns, *alone)) if alone else result


def one_sided(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[ColumnDrift, ...]:
    """The features only one of two files has, as not tested, saying which lacks each."""
    alone = [(c, "the current data") for c in feature_columns(reference)
             if c not in current.columns]
    alone += [(c, "the reference") for c in feature_columns(current)
              if c not in reference.columns]
    return tuple(ColumnDrift(c, Kind.NUMERICAL, None, None, None, False,
                             f"not tested: not in {lacks}") for c, lacks in alone)


def tensor_rows(tensor: TensorBlob) -> np.ndarray:
    """A captured input tensor as feature rows, one per request row: [B, ...] is B rows (a
    client batching 50 rows into one request sent 50 rows), a tensor without a batch
    dimension one row."""
    a = tensor.to_array()
    if a.ndim >= 2 and a.shape[0] > 0:
        return a.reshape(a.shape[0], -1).astype(np.float64, copy=False)
    return a.reshape(1, -1).astype(np.float64, copy=False)


def capture_frame(rows: Iterable[tuple[int, Sequence[TensorBlob], str | None]],
                  feature_names: Sequence[str]) -> pd.DataFrame:
    """Features of captured requests, one row per request row, plus their predictions.

    Each capture's first input tensor gives its rows (``tensor_rows``); names come from the
    reference. A row of another width keeps the columns it has and leaves the rest NaN. A
    capture holds one prediction: it goes with a single row; the rows of a batch get none.
    """
    ts, blocks, preds = [], [], []
    width = len(feature_names)
    for ts_ns, inputs, prediction in rows:
        values = tensor_rows(inputs[0]) if inputs else np.full((1, 0), np.nan)
        block = np.full((len(values), width), np.nan)
        k = min(width, values.shape[1])
        block[:, :k] = values[:, :k]
        blocks.append(block)
        ts += [ts_ns] * len(block)
        preds += [prediction] if len(block) == 1 else [None] * len(block)
    matrix = np.vstack(blocks) if blocks else np.empty((0, width))
    frame = pd.DataFrame(matrix, columns=list(feature_names))
    frame[PREDICTION_COLUMN] = pd.Series(preds, dtype=object)
    frame.index = pd.Index(np.asarray(ts, dtype=np.int64), name="ts_ns")
    return frame


@dataclass(frozen=True, slots=True)
class Distribution:
    """Reference and current shares of one feature on shared bins, for an overlaid plot.

    Numerical: ``edges`` has one more entry than the shares. Categorical: ``categories``.
    """

    feature: str
    kind: Kind
    reference: np.ndarray
    current: np.ndarray
    edges: np.ndarray | None = None
    categories: tuple[str, ...] | None = None


def distribution(reference: PreparedReference, feature: str, current: pd.Series, *,
                 bins: int = 30, kind: Kind | None = None) -> Distribution:
    ref = reference.column(feature)
    cur = clean(current)
    kind = kind or infer_kind(current)
    if kind is Kind.NUMERICAL and ref.numeric:
        ref_sorted = ref.sorted()
        cur_values = cur.to_numpy(dtype=np.float64)
        both = np.concatenate((ref_sorted[:1], ref_sorted[-1:], cur_values))
        lo, hi = (float(both.min()), float(both.max())) if len(both) else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        # The reference is already sorted: its counts are two binary searches per edge.
        ref_counts = np.diff(np.searchsorted(ref_sorted, edges, side="left")).astype(float)
        ref_counts[-1] += np.count_nonzero(ref_sorted == edges[-1])
        cur_counts = np.histogram(cur_values, edges)[0].astype(float)
        return Distribution(feature, Kind.NUMERICAL, _share(ref_counts), _share(cur_counts),
                            edges=edges)
    rc, cc = ref.counts(), cur.value_counts()
    keys = rc.index.union(cc.index)
    return Distribution(feature, Kind.CATEGORICAL,
                        _share(rc.reindex(keys, fill_value=0).to_numpy(dtype=float)),
                        _share(cc.reindex(keys, fill_value=0).to_numpy(dtype=float)),
                        categories=tuple(str(k) for k in keys))


def _share(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else counts
