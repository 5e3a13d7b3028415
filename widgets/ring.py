"""A fixed-capacity numpy ring of (time, value); the newest points are one slice. Thread: one.

Each point is written twice, at ``i`` and ``i + capacity``, so the newest ``n`` points are
always a contiguous slice of one array: plots read a view, never a concatenated copy.
"""

from __future__ import annotations

import numpy as np


class Ring:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("ring capacity must be positive")
        self.capacity = capacity
        self._t = np.zeros(2 * capacity)
        self._v = np.zeros(2 * capacity)
        self._head = 0  # index (mod capacity) where the next point goes
        self.n = 0  # points held, at most capacity
        # Points ever added, dropped ones included: it moves on every change, so a plot can
        # tell from it alone whether to redraw.
        self.total = 0

    def __len__(self) -> int:
        return self.n

    def extend(self, t: np.ndarray, v: np.ndarray) -> None:
        """Append points (oldest first); one or two slice copies per batch, not per point."""
        t = np.asarray(t, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        k = len(t)
        if k == 0:
            return
        self.total += k
        cap = self.capacity
        if k >= cap:
            t, v, k = t[-cap:], v[-cap:], cap
        start = self._head
        first = min(k, cap - start)
        for offset in (0, cap):
            self._t[start + offset:start + offset + first] = t[:first]
            self._v[start + offset:start + offset + first] = v[:first]
            if k > first:
                self._t[offset:offset + k - first] = t[first:]
                self._v[offset:offset + k - first] = v[first:]
        self._head = (start + k) % cap
        self.n = min(cap, self.n + k)

    def append(self, t: float, v: float) -> None:
        self.extend(np.array([t]), np.array([v]))

    def view(self) -> tuple[np.ndarray, np.ndarray]:
        """All held points, oldest first, as read-only views (valid until the next extend)."""
        # The newest point sits just before head in the mirrored upper half.
        end = self._head + self.capacity
        start = end - self.n
        t, v = self._t[start:end], self._v[start:end]
        t.flags.writeable = False
        v.flags.writeable = False
        return t, v

    def since(self, t0: float) -> tuple[np.ndarray, np.ndarray]:
        """Points with time >= t0 (times are assumed non-decreasing)."""
        t, v = self.view()
        i = int(np.searchsorted(t, t0, side="left"))
        return t[i:], v[i:]

    def last(self) -> tuple[float, float] | None:
        if self.n == 0:
            return None
        i = (self._head - 1) % self.capacity
        return float(self._t[i]), float(self._v[i])

    def drop_newest(self, k: int) -> None:
        """Forget the newest ``k`` points (to write them again); older ones stay as they were."""
        k = max(0, min(k, self.n))
        self._head = (self._head - k) % self.capacity
        self.n -= k

    def clear(self) -> None:
        self._head = 0
        self.n = 0
