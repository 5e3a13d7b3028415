"""Runs one plain function off the GUI thread with progress and cancel, reporting back through
queued signals (Orange's concurrent pattern). Thread: created and connected on the GUI thread;
``run`` executes on a QThreadPool thread.

The function is called as ``fn(progress, cancelled)``: ``progress(fraction)`` may be called from
the worker thread as often as it likes (the signal is throttled: at most about 30 per second,
plus one per whole percent moved, so the bar never stays behind what the work reported), and
``cancelled()`` says whether the user asked to stop. Whatever it returns arrives in ``finished``;
an exception arrives in ``failed`` as one line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1 / 30
# An update that moves the bar this far always goes through, however soon after the last one:
# a burst of steps followed by a long one (three quick versions, then a slow fourth) must not
# leave the bar at the burst's first step. At most 100 such per 0..1, so the rate stays bounded.
PROGRESS_STEP = 0.01


class JobSignals(QObject):
    progressed = Signal(float)  # 0..1
    finished = Signal(object)  # the function's result
    failed = Signal(str)  # one line for the user


class Job(QRunnable):
    def __init__(self, fn: Callable[[Callable[[float], None], Callable[[], bool]], Any]) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the owner keeps it (and its signals) alive until done
        self.fn = fn
        self.signals = JobSignals()
        self._cancel = threading.Event()
        self._last_progress = 0.0  # when the last update was sent
        self._last_fraction = 0.0  # and what it said
        self.done = threading.Event()

    def cancel(self) -> None:
        """Thread-safe; the function sees it at its next ``cancelled()`` check."""
        self._cancel.set()

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def _progress(self, fraction: float) -> None:
        # A dropped update is within PROGRESS_STEP of the one shown (not stale by a whole
        # step): nothing is left to send later, so no trailing timer is needed.
        now = time.monotonic()
        if (fraction >= 1.0 or now - self._last_progress >= PROGRESS_INTERVAL_S
                or abs(fraction - self._last_fraction) >= PROGRESS_STEP):
            self._last_progress = now
            self._last_fraction = fraction
            self.signals.progressed.emit(float(fraction))

    def run(self) -> None:
        try:
            result = self.fn(self._progress, self._cancel.is_set)
        except Exception as exc:
            text = str(exc).strip()
            log.debug("job failed", exc_info=True)
            self.signals.failed.emit(text.splitlines()[0] if text else type(exc).__name__)
        else:
            self.signals.finished.emit(result)
        finally:
            self.done.set()


class JobRunner(QObject):
    """A private pool (so closing a panel waits only for its own jobs) and the jobs in flight."""

    def __init__(self, parent: QObject | None = None, max_threads: int = 1) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._jobs: list[Job] = []

    def start(self, job: Job) -> Job:
        self._jobs = [j for j in self._jobs if not j.done.is_set()]
        self._jobs.append(job)
        self.pool.start(job)
        return job

    def busy(self) -> bool:
        return any(not j.done.is_set() for j in self._jobs)

    def shutdown(self, timeout_ms: int = 10_000) -> None:
        for j in self._jobs:
            j.cancel()
        self.pool.waitForDone(timeout_ms)
