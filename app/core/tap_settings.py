"""What the tap's proxy is set up with and what all its connections share: its settings
(``ProxySettings``), what a client may hold of it (``ClientLimits``), and the log lines of what
clients can repeat at will (``ListenerNotes``). Thread: shared by the accepting thread and every
client connection's (the settings are frozen; ``LogThrottle`` locks).

Apart from tap_proxy.py so that the client sessions (tap_session.py) and the server that
accepts them (tap_proxy.py) both import these without importing each other.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from app.core.log_throttle import LogThrottle
from app.core.tap_decode import Exchange

# The proxy's log lines keep the logger name they had when it was one module, whichever of its
# modules writes them: the tap's stderr shows it (``WARNING app.core.tap_proxy: ...``), and a
# logging config or a test's caplog picks the lines out by it.
PROXY_LOGGER = "app.core.tap_proxy"
log = logging.getLogger(PROXY_LOGGER)


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """What a client may hold of the tap (``probescope tap --max-connections ...``). Each
    connection takes a thread and two descriptors (the client's and its upstream one)."""

    max_connections: int = 256  # served at once; the next wait in the listen queue
    client_timeout_s: float = 30.0  # a request's whole head, from connect or its first byte
    idle_timeout_s: float = 60.0  # a kept-alive connection waiting for its next request
    max_body_bytes: int = 64 * 2**20  # a longer request body is answered 413, not read


@dataclass(frozen=True, slots=True)
class ProxySettings:
    host: str
    port: int
    tls: ssl.SSLContext | None
    timeout_s: float
    max_record_bytes: int
    on_exchange: Callable[[Exchange], None]
    limits: ClientLimits = ClientLimits()

    @property
    def hostport(self) -> bytes:
        return f"{self.host}:{self.port}".encode()


class ListenerNotes:
    """The log lines of what clients can repeat at will (a refused request, a slow one, a
    full table, a failing accept): each said once, then counted (``LogThrottle``)."""

    def __init__(self) -> None:
        self.refused = LogThrottle(log)
        self.cut_slow = LogThrottle(log)
        self.full = LogThrottle(log)
        self.accept_failed = LogThrottle(log, logging.ERROR)
        self.bugs: set[str] = set()

    def flush(self) -> None:
        for throttle in (self.refused, self.cut_slow, self.full, self.accept_failed):
            throttle.flush()

