"""Per-column drift tests exactly as Evidently 0.7.23 picks and computes them. Thread: any.

Evidently's default rule (legacy/calculations/stattests/registry.py, ``_get_default_stattest``),
applied after NaN and ±inf are dropped from each side:

- reference of 1,000 rows or fewer: numerical columns with more than 5 distinct values (in
  reference and current together) get the two-sample K-S test (drift when p <= 0.05); with 3-5
  values chi-squared, with 1-2 the two-proportion Z-test; categorical columns chi-squared or Z
  the same way (drift when p < 0.05).
- more than 1,000 reference rows: numerical columns with more than 5 values get the Wasserstein
  distance normed by the reference's standard deviation (floor 0.001), others and all
  categorical columns the Jensen-Shannon distance over category shares (drift when >= 0.1).

The column's kind comes from the *current* data, as Evidently infers it: float is numerical,
integer with at most 10 distinct values categorical, bool/category categorical, strings
categorical unless more than half are distinct (then text, which the fast path skips).

A reference column is prepared once (sorted values, standard deviation, category counts) so a
window is only sorted or counted once per evaluation.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

SMALL_REFERENCE_ROWS = 1000  # Evidently: <= 1000 rows is "small"
FEW_VALUES = 5  # numerical columns with <= 5 distinct values are tested like categories
INTEGER_CARDINALITY_LIMIT = 10  # integers with <= 10 distinct values are categorical


class Kind(enum.StrEnum):
    NUMERICAL = "num"
    CATEGORICAL = "cat"
    TEXT = "text"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class Method:
    name: str  # Evidently's StatTest.name
    display: str  # Evidently's display_name, as its reports print it
    threshold: float
    is_p_value: bool

    def drifted(self, score: float) -> bool:
        if self.name == "ks":  # ks compares with <=, the other p-value tests with <
            return bool(score <= self.threshold)
        if self.is_p_value:
            return bool(score < self.threshold)
        return bool(score >= self.threshold)


KS = Method("ks", "K-S p_value", 0.05, True)
CHI = Method("chisquare", "chi-square p_value", 0.05, True)
Z = Method("z", "Z-test p_value", 0.05, True)
JS = Method("jensenshannon", "Jensen-Shannon distance", 0.1, False)
WASSERSTEIN = Method("wasserstein", "Wasserstein distance (normed)", 0.1, False)
METHODS = {m.name: m for m in (KS, CHI, Z, JS, WASSERSTEIN)}
BY_DISPLAY = {m.display: m for m in METHODS.values()}


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """One column's verdict. ``method`` is None when the column could not be tested (see note)."""

    name: str
    kind: Kind
    method: str | None
    score: float | None
    threshold: float | None
    drifted: bool
    note: str | None = None

    @property
    def tested(self) -> bool:
        return self.method is not None

    def to_json(self) -> dict:
        score = None if self.score is None or not math.isfinite(self.score) else self.score
        out = {"name": self.name, "method": self.method, "score": score,
               "threshold": self.threshold, "drifted": self.drifted, "kind": str(self.kind)}
        if self.note:
            out["note"] = self.note
        return out


def infer_kind(values: pd.Series) -> Kind:
    """Evidently's ``infer_column_type`` for the kinds drift cares about."""
    dtype = values.dtype.name
    if dtype.startswith("float"):
        return Kind.NUMERICAL
    # Exactly Evidently's dtype names: uint8, Int64 or boolean columns are "unknown" to it,
    # so they are not tested here either.
    if dtype.startswith("int"):
        return (Kind.CATEGORICAL if values.nunique() <= INTEGER_CARDINALITY_LIMIT
                else Kind.NUMERICAL)
    if dtype in ("bool", "category"):
        return Kind.CATEGORICAL
    if dtype in ("string", "str", "object"):
        present = values.dropna()
        if len(present) == 0 or not (isinstance(present.iloc[0], str)
                                     and isinstance(present.iloc[-1], str)):
            return Kind.UNSUPPORTED
        return Kind.TEXT if values.nunique() > values.count() * 0.5 else Kind.CATEGORICAL
    return Kind.UNSUPPORTED


def kind_note(kind: Kind, dtype: object) -> str:
    """Why a column of this kind is not tested (by the fast path or the full report)."""
    if kind is Kind.TEXT:
        return "not tested: free text (only numbers and categories are compared)"
    return f"not tested: {dtype} values are neither numbers nor categories to Evidently"


def clean(values: pd.Series | np.ndarray) -> pd.Series:
    """Drop NaN and ±inf, as Evidently does before any test."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if series.dtype.kind == "f":
        arr = series.to_numpy()
        return pd.Series(arr[np.isfinite(arr)])
    if series.dtype.kind in "iub":
        return series.reset_index(drop=True)
    return series.replace([np.inf, -np.inf], np.nan).dropna().reset_index(drop=True)


def _counts(series: pd.Series) -> pd.Series:
    return series.value_counts(sort=False, dropna=True)


@dataclass(slots=True)
class ColumnReference:
    """A reference column prepared once; numeric and categorical views are built on demand."""

    name: str
    values: pd.Series  # cleaned
    _sorted: np.ndarray | None = field(default=None, repr=False)
    _std: float | None = field(default=None, repr=False)
    _counts: pd.Series | None = field(default=None, repr=False)
    _unique: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def prepare(cls, name: str, values: pd.Series | np.ndarray) -> ColumnReference:
        return cls(name, clean(values))

    def __len__(self) -> int:
        return len(self.values)

    @property
    def numeric(self) -> bool:
        return self.values.dtype.kind in "iufb"

    def sorted(self) -> np.ndarray:
        if self._sorted is None:
            self._sorted = np.sort(self.values.to_numpy(dtype=np.float64))
        return self._sorted

    def std(self) -> float:
        """Population std; NaN with no values. Computed on values scaled to [-1, 1], so
        values near 1e200 do not overflow its squares to inf (an inf std read every shift
        as no drift)."""
        if self._std is None:
            values = self.values.to_numpy(dtype=np.float64)
            scale = float(np.max(np.abs(values))) if len(values) else 0.0
            if not len(values):
                self._std = float("nan")
            elif scale == 0.0 or not np.isfinite(scale):
                self._std = float(np.std(values)) if scale == 0.0 else float("inf")
            else:
                self._std = scale * float(np.std(values / scale))
        return self._std

    def unique(self) -> np.ndarray:
        """Distinct values (numeric columns only), from the sorted values."""
        if self._unique is None:
            s = self.sorted()
            self._unique = s[np.concatenate(([True], s[1:] != s[:-1]))] if len(s) else s
        return self._unique

    def counts(self) -> pd.Series:
        if self._counts is None:
            self._counts = _counts(self.values)
        return self._counts


def _distinct_union(ref: ColumnReference, cur_sorted: np.ndarray, cap: int) -> int:
    """How many distinct values reference and current hold together, exact up to ``cap + 1``."""
    ref_u = ref.unique()
    if len(ref_u) > cap:
        return len(ref_u)
    cur_u = cur_sorted[np.concatenate(([True], cur_sorted[1:] != cur_sorted[:-1]))]
    if len(cur_u) > cap:
        return len(cur_u)
    return len(np.union1d(ref_u, cur_u))


def choose_method(kind: Kind, ref_rows: int, n_values: int) -> Method:
    """Evidently's default stattest for a column of this kind, reference size and cardinality."""
    if ref_rows <= SMALL_REFERENCE_ROWS:
        if kind is Kind.NUMERICAL and n_values > FEW_VALUES:
            return KS
        return CHI if n_values > 2 else Z
    if kind is Kind.NUMERICAL and n_values > FEW_VALUES:
        return WASSERSTEIN
    return JS


def wasserstein_sorted(u: np.ndarray, v: np.ndarray) -> float:
    """First Wasserstein distance of two sorted samples in one linear merge.

    Same integral as scipy's ``_cdf_distance`` (sum of |F_u - F_v| times the gap to the next
    value); a stable argsort of two sorted runs is a timsort merge, O(n + m).
    """
    n, m = len(u), len(v)
    both = np.concatenate((u, v))
    order = np.argsort(both, kind="stable")
    merged = both[order]
    cu = np.cumsum(order < n)
    cv = np.arange(1, n + m + 1) - cu
    # Inside a run of ties the cumulative counts are partial, but the gap there is zero.
    return float(np.sum(np.abs(cu[:-1] / n - cv[:-1] / m) * np.diff(merged)))


def _aligned_counts(ref: ColumnReference, cur: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """Reference and current counts over the union of their categories; and the unseen count."""
    rc, cc = ref.counts(), _counts(cur)
    keys = rc.index.union(cc.index)
    r = rc.reindex(keys, fill_value=0).to_numpy(dtype=np.float64)
    c = cc.reindex(keys, fill_value=0).to_numpy(dtype=np.float64)
    seen = (r > 0) | (c > 0)  # a pandas category that occurs on neither side is not a key
    r, c = r[seen], c[seen]
    return r, c, int(((r == 0) & (c > 0)).sum())


def _chi_square(ref: ColumnReference, cur: pd.Series) -> tuple[float, str | None]:
    r, c, unseen = _aligned_counts(ref, cur)
    if unseen:
        # A category the reference never saw has an expected count of 0: Evidently's scipy call
        # then gives an infinite statistic and p = 0.
        return 0.0, f"{unseen} categor{'y' if unseen == 1 else 'ies'} unseen in reference"
    f_exp = r * (len(cur) / len(ref))
    return float(stats.chisquare(c, f_exp)[1]), None


def _z_test(ref: ColumnReference, cur: pd.Series) -> float:
    r, c, _ = _aligned_counts(ref, cur)
    if (r > 0).sum() == 1 and (c > 0).sum() == 1 and np.argmax(r) == np.argmax(c):
        return 1.0
    n1, n2 = len(ref), len(cur)
    # Share of rows that are not the first category; the test is symmetric in which one.
    p1 = float(n1 - r[0]) / n1
    p2 = float(n2 - c[0]) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def _jensen_shannon(ref: ColumnReference, cur: pd.Series) -> float:
    r, c, _ = _aligned_counts(ref, cur)
    return float(distance.jensenshannon(r / len(ref), c / len(cur)))


def column_drift(ref: ColumnReference, current: pd.Series, kind: Kind | None = None
                 ) -> ColumnDrift:
    """Test one column the way Evidently's DataDriftPreset would, with clear results for
    columns that cannot be tested (empty, text, non-numeric values in a numerical column)."""
    name = ref.name
    kind = infer_kind(current) if kind is None else kind
    if kind in (Kind.TEXT, Kind.UNSUPPORTED):
        return ColumnDrift(name, kind, None, None, None, False, kind_note(kind, current.dtype))
    cur = clean(current)
    if len(ref) == 0 or len(cur) == 0:
        side = "reference" if len(ref) == 0 else "current data"
        return ColumnDrift(name, kind, None, None, None, False,
                           f"not tested: no values in the {side} (all missing)")
    if kind is Kind.NUMERICAL and not (ref.numeric and cur.dtype.kind in "iufb"):
        return ColumnDrift(name, kind, None, None, None, False,
                           "not tested: numerical in current data but not in reference")
    cur_sorted = None
    if kind is Kind.NUMERICAL:
        cur_sorted = np.sort(cur.to_numpy(dtype=np.float64))
        n_values = _distinct_union(ref, cur_sorted, FEW_VALUES)
    elif ref.numeric and cur.dtype.kind in "iufb":
        n_values = _distinct_union(ref, np.sort(cur.to_numpy(dtype=np.float64)), FEW_VALUES)
    else:
        n_values = len(ref.counts().index.union(_counts(cur).index))
    method = choose_method(kind, len(ref), n_values)
    note = None
    if method is KS:
        score = float(stats.ks_2samp(ref.sorted(), cur_sorted)[1])
    elif method is WASSERSTEIN:
        score = wasserstein_sorted(ref.sorted(), cur_sorted) / max(ref.std(), 0.001)
    elif method is CHI:
        score, note = _chi_square(ref, cur)
    elif method is Z:
        score = _z_test(ref, cur)
    else:
        score = _jensen_shannon(ref, cur)
    return ColumnDrift(name, kind, method.name, score, method.threshold,
                       method.drifted(score), note)
