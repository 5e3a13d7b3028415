"""Small test utilities that are not fixtures."""

from __future__ import annotations

import socket
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


def until_closed(sock: socket.socket, limit_s: float = 5.0, t0: float | None = None
                 ) -> tuple[bytes, float]:
    """Everything a server sends on ``sock`` until it closes the connection, and how long
    after ``t0`` (monotonic; default: now) that was; the data so far and ``limit_s`` if it
    has not closed by then."""
    t0 = time.monotonic() if t0 is None else t0
    got = b""
    sock.settimeout(0.05)
    while time.monotonic() - t0 < limit_s:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionError:
            break
        if not data:
            break
        got += data
    return got, time.monotonic() - t0
