"""The tap's hot path: an HTTP/1.1 reverse proxy that copies bytes. Thread: one per client
connection (``ClientSession``), plus the accepting thread (``ProxyServer``).

Each client connection has its own keep-alive connection upstream and is served with blocking
sockets: a request's rewritten head goes upstream as soon as it has arrived and its body
follows as it comes; the answer's bytes go back to the client as they arrive, once its head has
proved to be HTTP, and are parsed only to find where the answer ends. Each finished exchange
then goes to ``on_exchange`` (a queue put); ``ProxyServer.close`` lets calls in flight finish
first, so a call a client has seen answered is recorded even when the tap stops right after.
The bytes themselves (heads, where a body ends, chunked bodies) are parsed by tap_http.py.

Clients need no credential, so what one may hold of the tap is bounded (``ClientLimits``):
connections served at once (more wait in the listen queue), the time a request's whole head
and body may take to arrive and a kept-alive connection may sit idle, and a request body's
size. An accept() that fails for want of descriptors is retried, never taken for the stop.

This module is the accepting server (``ProxyServer``) and the proxy's public face; a client
connection is tap_session.py, its connection upstream tap_upstream.py, and the settings and
limits they share tap_settings.py.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time

from app.core.tap_session import ClientSession
from app.core.tap_settings import ClientLimits, ListenerNotes, ProxySettings

__all__ = ["ClientLimits", "ProxyServer", "ProxySettings"]

log = logging.getLogger(__name__)

CUT_SESSIONS_END_S = 2.0  # after the stop's grace: for cut calls to be handed over
# accept() failing for want of descriptors or memory: the listener stays readable, so
# retrying at once would spin until something frees one.
ACCEPT_PAUSE_S = 0.1
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# A connection that failed between the client's connect and our accept: only that one.
_CLIENT_GONE_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EINTR, errno.EPERM})


class ProxyServer:
    """Accepts client connections on a loopback socket and serves each on its own thread.
    Thread per connection rather than an event loop: measured on two cores, the blocking
    sockets add about half the latency of asyncio protocols (no loop iteration between a
    wake-up and the work), and a tap has tens of client connections, not thousands: at
    ``max_connections`` the next ones wait in the listen queue until one ends."""

    def __init__(self, host: str, port: int, settings: ProxySettings) -> None:
        self.settings = settings
        self.listener = socket.create_server((host, port), backlog=128)
        self._sessions: set[ClientSession] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(settings.limits.max_connections)
        self.notes = ListenerNotes()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._accept, name="tap accept", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        """Accept until the listener is closed. Any other failure of accept() is one
        connection's (ECONNABORTED) or passes (EMFILE, ENFILE): taking it for the stop left
        a tap that ran on, accepting nobody, and exited 0."""
        while not self._stopping.is_set():
            if not self._slots.acquire(blocking=False):
                self.notes.full("tap is serving its limit of %d client connections "
                                "(--max-connections): new ones wait to be accepted",
                                self.settings.limits.max_connections)
                while not self._slots.acquire(timeout=0.2):
                    if self._stopping.is_set():
                        return
            try:
                sock, _ = self.listener.accept()
            except OSError as exc:
                self._slots.release()
                if self._stopping.is_set() or self.listener.fileno() < 0:
                    return  # the listener was closed: stopping
                if exc.errno in _CLIENT_GONE_ERRNOS:
                    log.debug("tap: a connection failed before it was accepted: %s", exc)
                    continue
                self.notes.accept_failed(
                    "tap cannot accept a connection: %s; accepting again in %g s (each "
                    "client connection takes two file descriptors: see ulimit -n and "
                    "--max-connections)", exc.strerror or exc, ACCEPT_PAUSE_S)
                if self._stopping.wait(ACCEPT_PAUSE_S):
                    return
                continue
            self._start_session(sock)

    def _start_session(self, sock: socket.socket) -> None:
        session = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            session = ClientSession(sock, self.settings, self.notes)
            with self._lock:
                self._sessions.add(session)
            threading.Thread(target=self._serve, args=(session,), name="tap client",
                             daemon=True).start()
        except (OSError, RuntimeError) as exc:  # RuntimeError: no thread to be had
            if session is not None:
                with self._lock:
                    self._sessions.discard(session)
            with contextlib.suppress(OSError):
                sock.close()
            self._slots.release()
            self.notes.accept_failed("tap cannot serve a new connection: %s", exc)

    def _serve(self, session: ClientSession) -> None:
        try:
            session.serve()
        except Exception as exc:  # a bug of ours: its traceback once per kind, not per call
            kind = type(exc).__name__
            if kind not in self.notes.bugs:
                self.notes.bugs.add(kind)
                log.error("tap: internal error serving a client from %s", session.peer,
                          exc_info=exc)
            else:
                log.debug("tap: internal error serving a client: %s: %s", kind, exc)
            session.close()
        finally:
            with self._lock:
                self._sessions.discard(session)
            self._slots.release()

    def close(self, grace_s: float = 5.0) -> None:
        """Stop accepting; let requests already in flight finish (and be recorded) for up
        to ``grace_s``, then close every connection."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:  # idle ones wake from recv and end
            with contextlib.suppress(OSError):
                session.client.shutdown(socket.SHUT_RD)
        if not self._all_ended_within(grace_s):
            with self._lock:
                cut = list(self._sessions)
            for session in cut:  # their calls end as failures and are handed over (recorded)
                session.close()
            self._all_ended_within(CUT_SESSIONS_END_S)
        self.notes.flush()  # what was held back of the refusals, said before the summary

    def _all_ended_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            with self._lock:
                if not self._sessions:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
