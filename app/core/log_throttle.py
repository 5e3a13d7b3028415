"""A log line for an event a stranger can repeat at will (a refused token, a malformed request,
a full connection table): said at once, then at most once per interval with how many times it
happened in between, so a flood of them cannot fill the log. Thread: any.
"""

from __future__ import annotations

import logging
import threading
import time


class LogThrottle:
    """Logs the first event at once and then at most one line per ``every_s``; a line after
    a quiet spell says how many events were not said since the line before (as the kernel's
    printk rate limit does). ``flush`` says what is still pending, e.g. when a server stops."""

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING,
                 every_s: float = 10.0) -> None:
        self._log = logger
        self._level = level
        self._every_s = every_s
        self._lock = threading.Lock()
        self._next_s = 0.0  # monotonic time from which the next line may be written
        self._unsaid = 0  # events since the last line, not written
        self._last: tuple[str, tuple[object, ...]] | None = None
        self.count = 0  # every event, said or not

    def __call__(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            self.count += 1
            if now < self._next_s:
                self._unsaid += 1
                self._last = (msg, args)
                return
            unsaid, self._unsaid, self._last = self._unsaid, 0, None
            self._next_s = now + self._every_s
        self._say(msg, args, unsaid)

    def flush(self) -> None:
        """Write the events held back since the last line, if any (one line)."""
        with self._lock:
            last, unsaid = self._last, self._unsaid
            self._unsaid, self._last = 0, None
        if last is not None and unsaid:
            self._say(last[0], last[1], unsaid - 1)

    def _say(self, msg: str, args: tuple[object, ...], unsaid: int) -> None:
        if unsaid:
            msg += f" ({unsaid:,} more of this kind since the last such line, not logged)"
        self._log.log(self._level, msg, *args)
