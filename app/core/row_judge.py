"""Per-row judging of a version's stacked outputs: top class, confidence and finiteness.
Thread: any (the kernel releases the GIL).

One compiled pass over the rows (numba) instead of numpy's whole-column passes: a replay of a
small model spends as long judging as inferring otherwise. numpy's axis=1 reductions run a
loop per row, and the column-wise workaround (a transposed copy, then a dozen passes over the
columns) still read every value a dozen times, after inference had evicted them from cache.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

NO_CLASS = -1
PROB_TOLERANCE = 1e-3  # a row is a probability when it is >= 0 and sums to 1 within this


def _scan_rows(x, lo, hi, no_class, arg, conf, finite, k):
    """The judging pass with ``k`` (the row width) as a compile-time constant where the
    caller passes a literal: the row loop then unrolls into selects, without a branch per
    value. Returns how many rows have a sum that is not finite."""
    not_finite = 0
    for i in range(x.shape[0]):
        best = x[i, 0]
        b = 0
        total = best
        low = best
        for j in range(1, k):
            v = x[i, j]
            above = v > best  # strict: a tie keeps the first class
            b = j if above else b
            best = v if above else best
            total += v
            low = v if v < low else low
        ok = (total - total) == 0  # False for NaN and for either infinity
        not_finite += not ok
        finite[i] = ok
        arg[i] = b if ok else no_class
        conf[i] = best if (ok and low >= 0 and total > lo and total < hi) else math.nan
    return not_finite


def _scan_wide(x, lo, hi, no_class, arg, conf, finite):
    """``_scan_rows`` for rows of any width, with a branch per value: once rows are wide
    that beats selects (the running maximum rarely changes)."""
    not_finite = 0
    n, k = x.shape
    for i in range(n):
        best = x[i, 0]
        b = 0
        total = best
        low = best
        for j in range(1, k):
            v = x[i, j]
            if v > best:
                best = v
                b = j
            total += v
            if v < low:
                low = v
        ok = (total - total) == 0
        not_finite += not ok
        finite[i] = ok
        arg[i] = b if ok else no_class
        conf[i] = best if (ok and low >= 0 and total > lo and total < hi) else math.nan
    return not_finite


def _judge_rows(x, lo, hi, no_class, arg, conf, finite):
    """Per row of ``x`` (n, k): the first index of the maximum, the maximum where the row is
    a probability (values >= 0, sum strictly between ``lo`` and ``hi``) else NaN, and whether
    every value is finite. The sum runs in ``x``'s own float type, left to right, so a NaN or
    an inf in the row, or a sum that overflows, makes it non-finite; only those rows are then
    read value by value: finite values that overflowed still make a finite row (with a class,
    and no confidence)."""
    k = x.shape[1]
    if k == 2:  # the usual class counts, unrolled: 2-4x faster than the general loop
        not_finite = _scan_rows(x, lo, hi, no_class, arg, conf, finite, 2)
    elif k == 3:
        not_finite = _scan_rows(x, lo, hi, no_class, arg, conf, finite, 3)
    elif k == 4:
        not_finite = _scan_rows(x, lo, hi, no_class, arg, conf, finite, 4)
    else:
        not_finite = _scan_wide(x, lo, hi, no_class, arg, conf, finite)
    if not_finite == 0:
        return
    for i in range(x.shape[0]):
        if finite[i]:
            continue
        total = x[i, 0]
        for j in range(1, k):
            total += x[i, j]
        if math.isnan(total):
            continue
        ok = True
        for j in range(k):
            ok = ok and math.isfinite(x[i, j])
        if ok:
            finite[i] = True
            b = 0
            for j in range(1, k):
                if x[i, j] > x[i, b]:
                    b = j
            arg[i] = b


@functools.cache
def _compiled() -> Callable:
    # Imported on first use: numba's import and its first compile (cached on disk after
    # that) cost a few tenths of a second, which a replay pays once and start-up never does.
    import numba

    global _scan_rows, _scan_wide  # compiled into the kernel that calls them
    _scan_rows = numba.njit(inline="always")(_scan_rows)
    _scan_wide = numba.njit(inline="always")(_scan_wide)
    return numba.njit(cache=True, nogil=True, boundscheck=False)(_judge_rows)


_BOUNDS = {np.dtype(t): (t(1.0 - PROB_TOLERANCE), t(1.0 + PROB_TOLERANCE))
           for t in (np.float32, np.float64)}  # in the rows' own type, as numpy compares


def judge_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top class (int64, NO_CLASS where the row is not finite), confidence (``x``'s float
    type, NaN where the row is not a probability) and finiteness of each row of a 2-D float
    array with at least one column."""
    work = x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)
    work = np.ascontiguousarray(work)
    n = len(work)
    arg = np.empty(n, dtype=np.int64)
    conf = np.empty(n, dtype=work.dtype)
    finite = np.empty(n, dtype=bool)
    _compiled()(work, *_BOUNDS[work.dtype], NO_CLASS, arg, conf, finite)
    return arg, conf.astype(x.dtype, copy=False), finite


def judge_columns(outputs: dict[str, np.ndarray], n: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top class, confidence and finiteness per row. The class and confidence come from the
    first output: float rows of two or more values are scores, one integer per row is the
    class itself. A row is finite when every float value of every output is."""
    if not outputs or n == 0:
        return (np.full(n, NO_CLASS, dtype=np.int64), np.full(n, np.nan),
                np.ones(n, dtype=bool))
    arrays = [o.reshape(n, -1) for o in outputs.values()]
    first = arrays[0]
    judged_first = first.dtype.kind == "f" and first.shape[1] >= 2
    if judged_first:
        prediction, confidence, finite = judge_rows(first)
    else:
        if first.dtype.kind in "iu" and first.shape[1] == 1:
            prediction = first[:, 0].astype(np.int64)  # a model that outputs the class itself
        else:
            prediction = np.full(n, NO_CLASS, dtype=np.int64)
        confidence = np.full(n, np.nan)
        finite = np.ones(n, dtype=bool)
    others = False  # whether another output made some row not finite
    for k, o in enumerate(arrays):
        if o.dtype.kind != "f" or (k == 0 and judged_first) or np.isfinite(o).all():
            continue  # one flat pass answers for an output that is finite throughout
        finite &= np.isfinite(o).all(axis=1)
        others = True
    if others or not judged_first:  # judge_rows already left no class on its own rows
        np.putmask(prediction, ~finite, NO_CLASS)
    return prediction, confidence, finite

