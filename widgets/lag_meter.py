"""Measures the GUI thread's event-loop lag: how late a short timer fires. Thread: GUI only.

A timer due every ``interval_ms`` that fires late by X ms means the event loop was busy for
about X ms; the worst lateness over the last few seconds is what a user feels as a stutter.
"""

from __future__ import annotations

import time
from collections import deque

from PySide6.QtCore import QObject, Qt, QTimer


class EventLoopLagMeter(QObject):
    def __init__(self, parent: QObject | None = None, *, interval_ms: int = 25,
                 window_s: float = 3.0) -> None:
        super().__init__(parent)
        self.interval_ms = interval_ms
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()  # (monotonic s, lag ms)
        self.worst_ever_ms = 0.0
        self._last = time.perf_counter()
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._on_timer_timeout)

    def start(self) -> None:
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def reset(self) -> None:
        self._samples.clear()
        self.worst_ever_ms = 0.0

    def _on_timer_timeout(self) -> None:
        now = time.perf_counter()
        lag_ms = max(0.0, (now - self._last) * 1000.0 - self.interval_ms)
        self._last = now
        self._samples.append((now, lag_ms))
        self.worst_ever_ms = max(self.worst_ever_ms, lag_ms)
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._samples.popleft()

    def worst_ms(self) -> float:
        """The longest stall in the last ``window_s`` seconds, in ms."""
        now = time.perf_counter()
        # A stall still in progress counts too (the timer has not fired yet).
        pending = max(0.0, (now - self._last) * 1000.0 - self.interval_ms)
        return max([pending] + [lag for t, lag in self._samples if t >= now - self.window_s])
