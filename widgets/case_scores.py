"""A version's output scores as the case view's bars draw them: whether they are
probabilities (``is_probabilities``), raw scores stretched min-max to 0..1 to stand beside
probabilities (``min_max``), and what NaN or inf leave out of the bars (``non_finite_note``).
Plain numpy, apart from the widget so the numbers read (and can be checked) without Qt.
Thread: any (the case view calls them on the GUI thread).
"""

from __future__ import annotations

import numpy as np

MAX_LISTED_CLASSES = 6  # classes named in a legend note before "…"


def non_finite_note(scores: np.ndarray) -> str:
    """What a version's bars leave out: ``""``, ``"NaN: no bars"`` when nothing is finite, or
    ``"NaN at class 1, 2"`` / ``"inf at class 0"``. A NaN drawn as a bar of height 0 would
    read as an output of 0."""
    notes = []
    for word, bad in (("NaN", np.isnan(scores)), ("inf", np.isinf(scores))):
        if bad.all():
            return f"{word}: no bars"
        if bad.any():
            where = np.flatnonzero(bad).tolist()
            listed = ", ".join(map(str, where[:MAX_LISTED_CLASSES]))
            more = ", …" if len(where) > MAX_LISTED_CLASSES else ""
            notes.append(f"{word} at class {listed}{more}")
    return "; ".join(notes)


def is_probabilities(scores: np.ndarray) -> bool:
    """Whether every finite score lies in [0, 1] (probabilities, or one per class)."""
    finite = scores[np.isfinite(scores)]
    return bool(finite.size) and finite.min() >= 0.0 and finite.max() <= 1.0


def min_max(scores: np.ndarray) -> np.ndarray:
    """``scores`` stretched linearly to 0..1 (NaN and inf kept where they are)."""
    finite = np.isfinite(scores)
    lo, hi = scores[finite].min(), scores[finite].max()
    out = scores.copy()
    out[finite] = (scores[finite] - lo) / (hi - lo) if hi > lo else 1.0
    return out
