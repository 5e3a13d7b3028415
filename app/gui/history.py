"""Reads downsampled history, single captures and recorded endpoints' counters off the GUI
thread, with its own Store.

Thread: ``HistoryWorker`` lives on its own QThread (one Store = one connection = one thread);
``HistoryClient`` is the GUI-side handle that starts it, sends requests as queued signals and
stops it cleanly.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal, Slot

from app.core.domain import Metric
from app.core.recorded import recorded_facts
from app.core.store import Store, StoreError

log = logging.getLogger(__name__)

HISTORY_BUCKETS = 800
SKIPPED = {Metric.DROPPED}


class HistoryWorker(QObject):
    history_ready = Signal(int, str, object)  # request id, endpoint, {metric: History}
    capture_ready = Signal(int, object)  # request id, StoredCapture | None
    facts_ready = Signal(str, object)  # endpoint, RecordedFacts
    # request id, endpoint, {metric: (t_s, values)}, failed requests' (t_s, latency_ms)
    recent_ready = Signal(int, str, object, object)
    failed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self._path: Path | None = None
        self._store: Store | None = None

    def _open(self) -> Store | None:
        if self._store is None and self._path is not None:
            self._store = Store(self._path)
        return self._store

    @contextlib.contextmanager
    def _reported(self) -> Iterator[None]:
        """A failure reading the workspace, said in one line on ``failed``: a slot must not
        die with a traceback on the terminal."""
        try:
            yield
        except (StoreError, sqlite3.Error) as exc:
            self.failed.emit(str(exc))
        except Exception as exc:
            log.exception("reading the workspace failed")
            self.failed.emit(f"internal error reading the workspace: {type(exc).__name__}: "
                             f"{exc}")

    @Slot(str)
    def set_path(self, path: str) -> None:
        self.close()
        self._path = Path(path) if path else None

    @Slot(int, str, "qint64", "qint64")
    def load_history(self, request_id: int, endpoint: str, start_ns: int, end_ns: int) -> None:
        """start_ns < 0 means all of it: from the endpoint's first sample to its last (or
        ``end_ns``, if sooner). Up to now would squeeze a recording opened a day later into
        one of the buckets, which span the range asked for."""
        with self._reported():
            store = self._open()
            if store is None:
                return
            metrics = [m for m in store.metric_names(endpoint) if m not in SKIPPED]
            if start_ns < 0:
                ranges = [r for m in metrics if (r := store.time_range(endpoint, m))]
                start_ns = min((r[0] for r in ranges), default=end_ns - 1)
                end_ns = min(end_ns, max((r[1] for r in ranges), default=end_ns))
            result = {m: store.history(endpoint, m, start_ns, end_ns + 1, HISTORY_BUCKETS)
                      for m in metrics}
            self.history_ready.emit(request_id, endpoint, result)

    @Slot(int, str, "qint64", bool)
    def load_capture(self, request_id: int, endpoint: str, ts_ns: int, failed: bool) -> None:
        with self._reported():
            store = self._open()
            found = None
            if store is not None:
                found = store.capture_near(endpoint, ts_ns, failed=True if failed else None)
            self.capture_ready.emit(request_id, found)

    @Slot(str)
    def load_facts(self, endpoint: str) -> None:
        with self._reported():
            store = self._open()
            if store is not None:
                self.facts_ready.emit(endpoint, recorded_facts(store, endpoint))

    @Slot(int, str, "qint64")
    def load_recent(self, request_id: int, endpoint: str, since_ns: int) -> None:
        """An endpoint's raw series and failed requests since ``since_ns``, in seconds, as
        the live plots take them from the recorder."""
        with self._reported():
            store = self._open()
            if store is None:
                return
            series = {}
            for metric in store.metric_names(endpoint):
                if metric in SKIPPED:
                    continue
                ts, values = store.values(endpoint, metric, since_ns)
                if len(ts):
                    series[metric] = (ts / 1e9, values)
            ts, latency = store.failure_points(endpoint, since_ns)
            self.recent_ready.emit(request_id, endpoint, series, (ts / 1e9, latency))

    @Slot()
    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class HistoryClient(QObject):
    """GUI-side: owns the worker thread; results arrive as this object's signals."""

    history_ready = Signal(int, str, object)
    capture_ready = Signal(int, object)
    facts_ready = Signal(str, object)
    recent_ready = Signal(int, str, object, object)
    failed = Signal(str)
    _path_requested = Signal(str)
    _facts_requested = Signal(str)
    _recent_requested = Signal(int, str, "qint64")
    _history_requested = Signal(int, str, "qint64", "qint64")
    _capture_requested = Signal(int, str, "qint64", bool)
    _close_requested = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._next_id = 0
        self._thread = QThread()
        self._thread.setObjectName("history")
        self._worker = HistoryWorker()
        self._worker.moveToThread(self._thread)
        self._path_requested.connect(self._worker.set_path)
        self._history_requested.connect(self._worker.load_history)
        self._capture_requested.connect(self._worker.load_capture)
        self._facts_requested.connect(self._worker.load_facts)
        self._worker.facts_ready.connect(self.facts_ready)
        self._recent_requested.connect(self._worker.load_recent)
        self._worker.recent_ready.connect(self.recent_ready)
        self._close_requested.connect(self._worker.close)
        self._worker.history_ready.connect(self.history_ready)
        self._worker.capture_ready.connect(self.capture_ready)
        self._worker.failed.connect(self.failed)
        self._thread.start()

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def set_path(self, path: Path | None) -> None:
        self._path_requested.emit(str(path) if path else "")

    def request_history(self, endpoint: str, start_ns: int, end_ns: int) -> int:
        rid = self._id()
        self._history_requested.emit(rid, endpoint, start_ns, end_ns)
        return rid

    def request_capture(self, endpoint: str, ts_ns: int, failed: bool) -> int:
        rid = self._id()
        self._capture_requested.emit(rid, endpoint, ts_ns, failed)
        return rid

    def request_facts(self, endpoint: str) -> None:
        """A recorded endpoint's counters (``facts_ready``), read after what is queued."""
        self._facts_requested.emit(endpoint)

    def request_recent(self, endpoint: str, since_ns: int) -> int:
        """An endpoint's raw recent series (``recent_ready``), read after what is queued."""
        rid = self._id()
        self._recent_requested.emit(rid, endpoint, since_ns)
        return rid

    def stop(self) -> None:
        """Close the worker's Store on its own thread, then end the thread."""
        if self._thread.isRunning():
            self._close_requested.emit()
            self._thread.quit()
            self._thread.wait()
