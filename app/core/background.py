"""A recorder listener whose judging runs on a thread of its own, with its own Store.

Thread: ``__call__`` on the recorder's thread (it only queues); ``subscribe``, ``start``,
``evaluate_soon`` and ``close`` from any one controlling thread; the rest on the worker. The
drift and incident monitors are both this shape: take what the recorder committed, evaluate
every ``interval_s`` (or at once when asked), tell their own listeners.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from app.core.store import Store, StoreError

log = logging.getLogger(__name__)


class BackgroundEvaluator(ABC):
    thread_name = "evaluator"

    def __init__(self, db_path: str | Path, *, interval_s: float) -> None:
        self.db_path = Path(db_path)
        self.interval_s = interval_s
        self.last_error: str | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._listeners: list[Callable[[Any], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what a subclass provides (worker thread) -----------------------------------------

    def _opened(self, store: Store) -> None:  # noqa: B027  (optional hook)
        """Called once with the worker's own Store, before the first item."""

    @abstractmethod
    def _take(self, item: Any) -> None:
        """Absorb one item that ``__call__`` queued."""

    @abstractmethod
    def _evaluate(self, store: Store) -> None:
        """Judge what has been taken so far; tell listeners through ``_notify``."""

    # -- controlling thread ---------------------------------------------------------------

    def subscribe(self, listener: Callable[[Any], None]) -> None:
        self._listeners.append(listener)

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.thread_name,
                                            daemon=True)
            self._thread.start()
        return self

    def evaluate_soon(self) -> threading.Event:
        """Ask for an evaluation now; the event is set once it has been made."""
        done = threading.Event()
        self._queue.put(done)
        return done

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    # -- worker thread --------------------------------------------------------------------

    def _notify(self, event: Any) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("%s listener %r failed", self.thread_name, listener)

    def _run(self) -> None:
        try:
            store = Store(self.db_path)
        except StoreError as exc:
            self.last_error = str(exc)
            log.error("%s stopped: %s", self.thread_name, exc)
            return
        try:
            self._opened(store)
            next_due = time.monotonic() + self.interval_s
            while True:
                try:
                    item = self._queue.get(timeout=max(0.0, next_due - time.monotonic()))
                except queue.Empty:
                    item = None
                if self._stop.is_set():
                    break
                # The queue is FIFO: when an ask arrives, all that was committed before it has
                # been taken, so each ask is answered by one evaluation of all of it.
                asked = item if isinstance(item, threading.Event) else None
                if item is not None and asked is None:
                    self._take(item)
                if asked is None and time.monotonic() < next_due:
                    continue
                self._evaluate(store)
                next_due = time.monotonic() + self.interval_s
                if asked is not None:
                    asked.set()
        finally:
            store.close()
