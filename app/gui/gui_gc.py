"""Python's cyclic garbage collection, run on the GUI thread only. Thread: GUI.

With the drift and incident monitors (and the probes) allocating on their own threads, the
automatic collector would otherwise run on whichever thread crosses its threshold, and a cycle
holding a Qt object would then be destroyed off the GUI thread: Qt warns that timers "cannot be
stopped from another thread" or crashes. pyqtgraph's GarbageCollector does the same.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

CHECK_INTERVAL_MS = 500


class GuiThreadCollector(QObject):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._timer = QTimer(self, interval=CHECK_INTERVAL_MS)
        self._timer.timeout.connect(self._on_timer_timeout)
        self._was_enabled = False
        self.active = False

    def start(self) -> None:
        if not self.active:
            self._was_enabled = gc.isenabled()
            gc.disable()
            self._timer.start()
            self.active = True

    def stop(self) -> None:
        """Back to automatic collection (as it was before ``start``), after one full pass."""
        if self.active:
            self._timer.stop()
            gc.collect()
            if self._was_enabled:
                gc.enable()
            self.active = False

    def _on_timer_timeout(self) -> None:
        # The generational thresholds, checked on our clock instead of at each allocation.
        t0, t1, t2 = gc.get_threshold()
        c0, c1, c2 = gc.get_count()
        if c0 > t0:
            gc.collect(2 if c2 > t2 else 1 if c1 > t1 else 0)
