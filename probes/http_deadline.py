"""A deadline for a whole HTTP exchange, connect to last byte, on top of httpx.

httpx's timeouts are per operation: a server that sends its answer, head included, one byte
at a time never trips them, and would hold a probe's thread for as long as it likes. Here
every socket operation of a request made inside ``deadline(seconds)`` waits at most what is
left of those seconds, and fails as a timeout once none is left. The socket is where this
has to live: httpx reads a response head in one call with no hook between its reads.

httpx takes no network backend of its own, so ``deadline_transport`` builds httpx's
transport and gives its connection pool one; the pool (``_pool``) is the single private
name this relies on, and the tests of the trickled head fail if an httpx release renames it.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

_state = threading.local()  # the calling thread's deadline (perf_counter seconds) or None


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Within the block, this thread's requests on a ``deadline_transport`` end by
    ``seconds`` from now, answered or timed out."""
    previous = getattr(_state, "at", None)
    _state.at = time.perf_counter() + seconds
    try:
        yield
    finally:
        _state.at = previous


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` shortened to what is left of the deadline; ``error`` once nothing is."""
    at = getattr(_state, "at", None)
    if at is None:
        return timeout
    left = at - time.perf_counter()
    if left <= 0:
        raise error("past the deadline")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(
            ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address,
            socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None
                            ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(
            path, _left(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def deadline_transport(limits: httpx.Limits, verify: ssl.SSLContext | bool = True
                       ) -> httpx.HTTPTransport:
    """httpx's own transport (its error mapping, TLS set-up and pooling), whose sockets keep
    the calling thread's ``deadline``."""
    transport = httpx.HTTPTransport(limits=limits, verify=verify)
    transport._pool.close()
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(verify=verify),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_DeadlineBackend())
    return transport
