"""What the drift panel reads off the GUI thread, on its query worker: an endpoint's drift
share series, and a feature's distributions now against its reference (with the reference's
parsed frames kept between refreshes). Qt-free; the panel draws what these return.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from app.core.demo import demo_path
from app.core.drift import DriftError
from app.core.drift_history import FeatureComparison, feature_comparison, share_series
from app.core.references import DEMO_REFERENCE, Reference, ReferenceKind, load_reference
from app.core.store import Store, StoreError

REFERENCE_FRAMES_KEPT = 2  # parsed reference files kept (the shown endpoint's, and one more)


def read_share_series(db_path: str | Path, endpoint: str, start_ns: int | None = None,
                      end_ns: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ts_ns, share drifted) of an endpoint's live evaluations; empty when there are none."""
    store = Store(db_path, readonly=True)
    try:
        return share_series(store, endpoint, start_ns, end_ns)
    finally:
        store.close()


@dataclass(frozen=True, slots=True)
class ShownDistribution:
    """A distribution read on the worker: of which endpoint's feature, and what to show, or
    the one line that says why it could not be read."""

    endpoint: str
    feature: str
    comparison: FeatureComparison | None
    error: str | None = None


class ReferenceFrames:
    """Reference frames kept between distribution reads: every refresh (each 5 s) parsed the
    same reference file again. A file is read anew once its size or modification time
    changes; a captures reference (its rows can grow) is always read from the store.
    Thread: the panel's query worker; the lock only makes a second worker safe."""

    def __init__(self, kept: int = REFERENCE_FRAMES_KEPT) -> None:
        self._kept = kept
        self._frames: OrderedDict[tuple, pd.DataFrame] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, store: Store, reference: Reference) -> pd.DataFrame:
        path = (reference.path if reference.kind is ReferenceKind.FILE
                else demo_path(DEMO_REFERENCE) if reference.kind is ReferenceKind.DEMO
                else None)
        try:
            version = path.stat() if path is not None else None
        except OSError:
            version = None  # gone: load_reference says so in its own words
        if version is None:
            return load_reference(store, reference)
        key = (reference, str(path), version.st_mtime_ns, version.st_size)
        with self._lock:
            frame = self._frames.get(key)
            if frame is not None:
                self._frames.move_to_end(key)
                return frame
        frame = load_reference(store, reference)
        with self._lock:
            self._frames[key] = frame
            while len(self._frames) > self._kept:
                self._frames.popitem(last=False)
        return frame


def read_distribution(store: Store, endpoint: str, feature: str,
                      frames: Callable[[Store, Reference], pd.DataFrame] = load_reference
                      ) -> ShownDistribution:
    """``feature_comparison`` for the worker: a workspace or reference that cannot be read
    becomes a line to show, not a failed refresh (the table is still worth showing)."""
    try:
        return ShownDistribution(endpoint, feature, feature_comparison(store, endpoint, feature,
                                                            load=frames))
    except (StoreError, DriftError) as exc:
        return ShownDistribution(endpoint, feature, None, str(exc))
