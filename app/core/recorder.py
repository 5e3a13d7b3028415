"""Drains the bus in batches, writes one transaction per batch, tells listeners. Thread: own.

A listener is a plain callable taking the committed ``Batch``; it is called on the recorder
thread after the commit, so whatever it is handed is already durable. Listeners must be quick
(the GUI bridge only emits a queued signal).

If a write fails (disk full, file removed) the batch is kept and retried on the next tick;
nothing is dropped unless the backlog outgrows ``max_backlog``, and then the oldest items are
dropped and counted like bus drops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.core.bus import Bus
from app.core.domain import Batch, Capture, Metric, Sample, StoreError

if TYPE_CHECKING:  # the edge agent records into its own buffer, without sqlite-utils
    from app.core.store import Store

log = logging.getLogger(__name__)

DROPPED_METRIC = Metric.DROPPED

Listener = Callable[[Batch], None]


@dataclass(frozen=True, slots=True)
class RecorderStats:
    committed_samples: int
    committed_captures: int
    dropped: int
    backlog: int
    last_error: str | None


class Recorder:
    def __init__(self, bus: Bus, store_factory: Callable[[], Store], *,
                 flush_interval_s: float = 0.05, max_batch: int = 50_000,
                 max_backlog: int = 1_000_000) -> None:
        self.bus = bus
        self._store_factory = store_factory
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.max_backlog = max_backlog
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[Sample | Capture] = []
        self._pending_dropped: dict[str, int] = {}
        self._committed_samples = 0
        self._committed_captures = 0
        self._dropped = 0
        self._last_error: str | None = None
        self._opened = threading.Event()
        self._open_error: StoreError | None = None

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def start(self) -> None:
        """Start the thread; raises StoreError at once if the store cannot be opened."""
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()
        self._opened.wait()
        if self._open_error is not None:
            raise self._open_error

    def stop(self, timeout_s: float = 10.0) -> None:
        """Flush what is queued, then stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("recorder did not stop within %.1f s", timeout_s)

    def stats(self) -> RecorderStats:
        return RecorderStats(self._committed_samples, self._committed_captures,
                             self._dropped + self.bus.dropped_total, len(self._pending),
                             self._last_error)

    def _run(self) -> None:
        try:
            store = self._store_factory()
        except StoreError as exc:
            self._open_error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            while not self._stop.wait(self.flush_interval_s):
                self._flush(store)
            # Final drain: probes are stopped before the recorder, so this empties the bus.
            while len(self.bus) or self._pending:
                if not self._flush(store):
                    break
        finally:
            store.close()

    def _flush(self, store: Store) -> bool:
        """One transaction; returns False if it could not be written."""
        room = max(0, self.max_batch - len(self._pending))
        items, dropped = self.bus.drain(room)
        self._pending.extend(items)
        for endpoint, n in dropped.items():
            self._pending_dropped[endpoint] = self._pending_dropped.get(endpoint, 0) + n
        self._trim_backlog()
        if not self._pending and not self._pending_dropped:
            return True
        now = time.time_ns()
        samples = [i for i in self._pending if isinstance(i, Sample)]
        samples += [Sample(ep, now, DROPPED_METRIC, float(n))
                    for ep, n in self._pending_dropped.items()]
        captures = [i for i in self._pending if isinstance(i, Capture)]
        try:
            store.write_batch(samples, captures)
        except StoreError as exc:
            if self._last_error != str(exc):
                log.error("%s; keeping %d items to retry", exc, len(self._pending))
            self._last_error = str(exc)
            return False
        self._last_error = None
        batch = Batch(tuple(samples), tuple(captures), dict(self._pending_dropped))
        self._pending = []
        self._pending_dropped = {}
        self._committed_samples += len(samples)
        self._committed_captures += len(captures)
        for listener in list(self._listeners):
            try:
                listener(batch)
            except Exception:
                log.exception("recorder listener %r failed", listener)
        return True

    def _trim_backlog(self) -> None:
        excess = len(self._pending) - self.max_backlog
        if excess > 0:
            for item in self._pending[:excess]:
                self._pending_dropped[item.endpoint] = (
                    self._pending_dropped.get(item.endpoint, 0) + 1)
            self._dropped += excess
            del self._pending[:excess]
