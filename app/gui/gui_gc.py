"""Python's cyclic garbage collection, run on the GUI thread only. Thread: GUI.

With the drift and incident monitors (and the probes) allocating on their own threads, the
automatic collector would otherwise run on whichever thread crosses its threshold, and a cycle
holding a Qt object would then be destroyed off the GUI thread: Qt warns that timers "cannot be
stopped from another thread" or crashes. pyqtgraph's GarbageCollector does the same.

What the window holds once it is up (Qt wrappers, pyqtgraph items, numpy, pandas, onnx:
about 260,000 objects) is frozen out of the collector's view: a full collection scanned all of
it, 100-160 ms of frozen window every few minutes, and now scans what came after.
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

    def freeze_what_is_held(self) -> None:
        """Collect once, then leave every object alive now out of later collections (call
        when the window is up, and again when a workspace has been opened)."""
        gc.collect()
        gc.freeze()

    def stop(self) -> None:
        """Back to automatic collection (as it was before ``start``), after one full pass
        that sees the frozen objects again: a closed window's cycles are garbage now."""
        if self.active:
            self._timer.stop()
            gc.unfreeze()
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
