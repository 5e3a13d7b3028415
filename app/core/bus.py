"""Bounded, thread-safe hand-off from probe threads to the recorder. Thread: any.

When the bus is full the *incoming* item is refused and counted against its endpoint. Probes
must never block on the bus: a blocked probe would stretch the very latencies it measures, and
an overloaded recorder would back-pressure into the model server. The count is committed by
the recorder as a ``probescope.dropped`` sample and shown in the window, so a drop is never
silent.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence

from app.core.domain import Capture, Sample

Item = Sample | Capture

DEFAULT_CAPACITY = 200_000


class Bus:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError("bus capacity must be positive")
        self.capacity = capacity
        self._items: deque[Item] = deque()
        self._lock = threading.Lock()
        self._dropped: Counter[str] = Counter()  # since the last drain
        self._dropped_total = 0
        self._accepted_total = 0

    def put(self, item: Item) -> bool:
        """Offer one item; False (and counted) if the bus is full."""
        with self._lock:
            if len(self._items) >= self.capacity:
                self._dropped[item.endpoint] += 1
                self._dropped_total += 1
                return False
            self._items.append(item)
            self._accepted_total += 1
            return True

    def put_many(self, items: Iterable[Item]) -> int:
        """Offer several items under one lock; returns how many were accepted."""
        accepted = 0
        with self._lock:
            room = self.capacity - len(self._items)
            for item in items:
                if room > 0:
                    self._items.append(item)
                    room -= 1
                    accepted += 1
                else:
                    self._dropped[item.endpoint] += 1
                    self._dropped_total += 1
            self._accepted_total += accepted
        return accepted

    def put_waiting(self, items: Sequence[Item], poll_s: float = 0.01) -> None:
        """Hand over every item, in order, waiting while the bus is full. Only for producers
        that replay what has already happened (the tap's recording process), where waiting
        costs nothing and a refusal would lose a record; probes never wait (see above)."""
        pending = list(items)
        while True:
            with self._lock:
                room = max(0, self.capacity - len(self._items))
                self._items.extend(pending[:room])
                self._accepted_total += min(room, len(pending))
            pending = pending[room:]
            if not pending:
                return
            time.sleep(poll_s)

    def drain(self, limit: int | None = None) -> tuple[list[Item], dict[str, int]]:
        """Take up to ``limit`` queued items and the drop counts accumulated since last time."""
        with self._lock:
            if limit is None or limit >= len(self._items):
                items = list(self._items)
                self._items.clear()
            else:
                items = [self._items.popleft() for _ in range(limit)]
            dropped = dict(self._dropped)
            self._dropped.clear()
        return items, dropped

    def __len__(self) -> int:
        return len(self._items)

    @property
    def dropped_total(self) -> int:
        return self._dropped_total

    @property
    def accepted_total(self) -> int:
        return self._accepted_total
