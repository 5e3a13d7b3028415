"""The one place data crosses from the recorder thread into the GUI thread, as a queued signal.

Thread: ``_on_recorder_batch`` runs on the recorder thread; it only regroups the committed
batch into per-series numpy arrays (so the GUI thread does not loop over samples) and emits.
Qt queues the emission to the bridge's own (GUI) thread.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Signal

from app.core.domain import Batch
from app.core.monitor import Monitor

log = logging.getLogger(__name__)

NS = 1e9

Series = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]


@dataclass(frozen=True, slots=True)
class CommittedSeries:
    """A committed batch regrouped for plotting; times in epoch seconds."""

    batch: Batch
    series: Series  # endpoint -> metric -> (t_s, value), oldest first
    failures: dict[str, tuple[np.ndarray, np.ndarray]]  # endpoint -> (t_s, latency_ms)
    sample_count: int
    capture_count: int
    dropped: int


def regroup(batch: Batch) -> CommittedSeries:
    """Split a batch into sorted per-(endpoint, metric) arrays. Pure; any thread."""
    grouped: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for s in batch.samples:
        grouped[(s.endpoint, s.metric)].append((s.ts_ns, s.value))
    series: Series = defaultdict(dict)
    for (endpoint, metric), rows in grouped.items():
        a = np.array(rows, dtype=np.float64)
        t = a[:, 0] / NS
        if len(t) > 1 and np.any(np.diff(t) < 0):
            # Samples of one series usually arrive in order; sort the rare batch that does not.
            order = np.argsort(t, kind="stable")
            a, t = a[order], t[order]
        series[endpoint][metric] = (t, a[:, 1])
    fails: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for c in batch.captures:
        if c.failed:
            fails[c.endpoint].append((c.ts_ns, c.latency_ms))
    failures = {}
    for endpoint, rows in fails.items():
        a = np.array(sorted(rows), dtype=np.float64)
        failures[endpoint] = (a[:, 0] / NS, a[:, 1])
    return CommittedSeries(batch, dict(series), failures, len(batch.samples),
                           len(batch.captures), sum(batch.dropped.values()))


class Bridge(QObject):
    """Emits ``batch_committed(CommittedSeries)`` on the GUI thread for each recorder commit."""

    batch_committed = Signal(object)
    # From the recorder thread, queued to this one with the workspace it came from.
    _arrived = Signal(object, int)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._monitor: Monitor | None = None
        self._open = False
        self._generation = 0  # one per connected monitor
        self._arrived.connect(self._on_arrived)

    def connect_monitor(self, monitor: Monitor) -> None:
        self.disconnect_monitor()
        self._monitor = monitor
        self._open = True
        self._generation += 1
        monitor.subscribe(self._on_recorder_batch)

    def disconnect_monitor(self) -> None:
        """Stop forwarding; call after ``Monitor.close`` so the final flush is not lost."""
        self._open = False
        if self._monitor is not None:
            with contextlib.suppress(ValueError):
                self._monitor.recorder.unsubscribe(self._on_recorder_batch)
            self._monitor = None

    def _on_recorder_batch(self, batch: Batch) -> None:
        # Recorder thread. The flag keeps a late batch from reaching a window being torn down.
        if self._open:
            self._arrived.emit(regroup(batch), self._generation)

    def _on_arrived(self, committed: CommittedSeries, generation: int) -> None:
        # A batch the previous workspace committed just before it closed, still queued when
        # another opened: its endpoints would come back as panels of the new one.
        if generation == self._generation and self._open:
            self.batch_committed.emit(committed)
