"""Drains the bus in batches, writes one transaction per batch, tells listeners. Thread: own.

A listener is a plain callable taking the committed ``Batch``; it is called on the recorder
thread after the commit, so whatever it is handed is already durable. Listeners must be quick
(the GUI bridge only emits a queued signal).

If a write fails (disk full, file removed) the batch is kept and retried on the next tick;
nothing is dropped unless the backlog outgrows ``max_backlog``, and then the oldest items are
dropped and counted like bus drops. On stop, a workspace that still cannot be written gets
``final_retry_s`` more; what is left then is counted as dropped. An item that no workspace
could hold (a time beyond 64 bits from a remote agent) is dropped and counted on arrival, and
a batch that keeps failing for a reason that is not the workspace's is dropped and counted
after a few tries: the thread never dies and never wedges on one bad item.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.core.bus import Bus
from app.core.domain import NEWEST_NS, OLDEST_NS, Batch, Capture, Metric, Sample, StoreError

if TYPE_CHECKING:  # the edge agent records into its own buffer, without sqlite-utils
    from app.core.store import Store

log = logging.getLogger(__name__)

DROPPED_METRIC = Metric.DROPPED
_UNEXPECTED_TRIES = 3  # failures of one batch for a reason that is not the workspace's


def writable(item: Sample | Capture) -> bool:
    """Whether SQLite can hold the item at all: a 64-bit integer time, a real-number value."""
    ts = item.ts_ns
    if not isinstance(ts, int) or not OLDEST_NS <= ts <= NEWEST_NS:
        return False
    return not isinstance(item, Sample) or isinstance(item.value, (int, float))

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
                 max_backlog: int = 1_000_000, final_retry_s: float = 2.0) -> None:
        self.bus = bus
        self.final_retry_s = final_retry_s
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
        self._unexpected_failures = 0
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
            # Final drain: probes are stopped before the recorder, so this empties the bus. A
            # workspace locked by another writer, or full, gets a few seconds to come back;
            # what still cannot be written is counted as dropped, never lost without a word.
            deadline = time.monotonic() + self.final_retry_s
            # Each try waits for another writer's lock a fraction of the grace, not SQLite's
            # 5 s: closing the window froze behind another process's long write.
            with contextlib.suppress(StoreError, sqlite3.Error):
                store.set_busy_timeout(self.final_retry_s / 4)
            while len(self.bus) or self._pending or self._pending_dropped:
                if self._flush(store):
                    continue
                if time.monotonic() >= deadline:
                    self._give_up()
                    break
                time.sleep(min(0.2, self.final_retry_s))
        finally:
            store.close()

    def _give_up(self) -> None:
        items, _ = self.bus.drain(None)
        lost = len(self._pending) + len(items)
        self._dropped += lost
        log.error("%s; %d items could not be written and are dropped", self._last_error, lost)
        self._pending = []
        self._pending_dropped = {}

    def _flush(self, store: Store) -> bool:
        """One transaction; returns False if it could not be written."""
        room = max(0, self.max_batch - len(self._pending))
        items, dropped = self.bus.drain(room)
        bad = [i for i in items if not writable(i)]
        if bad:
            items = [i for i in items if writable(i)]
            self._count_dropped(bad)
            log.warning("dropped %d items no workspace can hold (e.g. %s at time %r)",
                        len(bad), bad[0].endpoint, bad[0].ts_ns)
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
        except Exception as exc:  # not the workspace: something in the items themselves
            self._unexpected_failures += 1
            self._last_error = f"cannot write a batch: {type(exc).__name__}: {exc}"
            if self._unexpected_failures < _UNEXPECTED_TRIES:
                log.exception("cannot write a batch of %d items; retrying", len(self._pending))
                return False
            log.error("%s; dropping its %d items", self._last_error, len(self._pending))
            self._count_dropped(self._pending)
            self._pending = []
            self._unexpected_failures = 0
            return True
        self._unexpected_failures = 0
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

    def _count_dropped(self, items: list[Sample | Capture]) -> None:
        """Count lost items, in all and per endpoint (its dropped series, written next)."""
        for item in items:
            self._pending_dropped[item.endpoint] = self._pending_dropped.get(item.endpoint, 0) + 1
        self._dropped += len(items)

    def _trim_backlog(self) -> None:
        excess = len(self._pending) - self.max_backlog
        if excess > 0:
            for item in self._pending[:excess]:
                self._pending_dropped[item.endpoint] = (
                    self._pending_dropped.get(item.endpoint, 0) + 1)
            self._dropped += excess
            del self._pending[:excess]
