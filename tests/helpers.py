"""Small test utilities that are not fixtures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0,
               poll_s: float = 0.02) -> bool:
    """Poll ``condition`` until it holds or the timeout passes; returns whether it held."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while time.monotonic() < deadline:
        if condition():
            return True
        pause.wait(poll_s)
    return condition()
