"""The agent's HTTP(S) face: serves buffered items as JSON to holders of the bearer token.
Thread: ``serve_forever`` on its own thread (it accepts, and refuses what is over the limits);
one handler thread per client connection, at most ``ListenLimits.max_connections`` of them.

API (every request needs ``Authorization: Bearer TOKEN``, or it gets 401 and nothing else):

- ``GET /v1/info`` -> agent id, sources, buffer bounds, and whether each probe still runs
- ``GET /v1/items?after=SEQ&limit=N`` -> the items with sequence > SEQ, oldest first
- ``POST /v1/contract`` -> the contract measurements of the model file the agent runs
  (``app.core.contract_agent``); 409 when it runs none or another version

Whoever can reach the port needs no token to open connections, so what one connection may
hold is bounded (``ListenLimits``): the number of connections, the time a request's whole
head may take to arrive (a client trickling a byte at a time is cut at that deadline, not
kept while each byte restarts a timeout), and the log lines its refusals write.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import math
import re
import socket
import sqlite3
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, urlsplit

from app.core.agent_auth import bearer_matches
from app.core.agent_buffer import AgentBuffer, not_ours
from app.core.agent_buffer import BufferError as AgentBufferError
from app.core.contract_agent import CONTRACT_PATH, MAX_REQUEST_BYTES, AgentModel, AgentRefusal
from app.core.log_throttle import LogThrottle

log = logging.getLogger(__name__)
_QUERY = re.compile(r"\?[^ \"]*")  # a request line's query string

MAX_PAGE = 20_000
MAX_SEQ = 2**63 - 1  # sequence numbers are SQLite integers; a larger one overflowed there
# A request body gets ``client_timeout_s`` plus one second per this many bytes it declares
# (Apache's mod_reqtimeout MinRate): a 64 MiB validation set may take 17 minutes more.
BODY_MIN_BYTES_PER_S = 64 * 1024
# accept() failing for want of descriptors or memory: the listener stays readable, so
# serve_forever would call it again at once, in a busy loop, until something frees one.
ACCEPT_PAUSE_S = 0.1
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_BUSY_BODY = b'{"error":"the agent is serving its limit of connections; try again shortly"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
         % (len(_BUSY_BODY), _BUSY_BODY))


@dataclass(frozen=True, slots=True)
class ListenLimits:
    """What a client may hold of the agent. The dashboard keeps one connection, pulling every
    half second, so none of these is near what it needs."""

    max_connections: int = 32  # served at once (a thread each); more are answered 503
    client_timeout_s: float = 10.0  # a request's whole head, from connect or its first byte
    idle_timeout_s: float = 30.0  # a kept-alive connection waiting for its next request
    write_timeout_s: float = 30.0  # an answer the client does not read


class AgentHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    # Reuse the port at once after a restart (kill -9 leaves it in TIME_WAIT).
    allow_reuse_address = True
    # Connections over the limit are answered at once, so a burst waits in the kernel's
    # queue for its turn rather than being dropped (the default is 5).
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], *, token: str, buffer_path: Path,
                 info: dict, tls: ssl.SSLContext | None = None,
                 model: AgentModel | None = None, limits: ListenLimits | None = None,
                 status: Callable[[], dict] | None = None) -> None:
        # A stranger can repeat each of these at will: said once, then counted. Set before
        # the bind: a failed one calls server_close, which flushes them.
        self.refused_token = LogThrottle(log)
        self.cut_slow = LogThrottle(log)
        self._refused_busy = LogThrottle(log)
        self._accept_failed = LogThrottle(log, logging.ERROR)
        # A buffer gone or broken fails every pull of every dashboard: said once, then counted.
        self.buffer_failed = LogThrottle(log, logging.ERROR)
        self._errors_told: set[str] = set()
        super().__init__(address, _Handler)
        self.token = token
        self.buffer_path = buffer_path
        self.info = {**info, "model": model.describe()} if model is not None else info
        self.model = model  # the model file the agent runs, measured by contract checks
        self.status = status  # facts that change (the probes' states), merged into /v1/info
        self.limits = limits or ListenLimits()
        self._slots = threading.BoundedSemaphore(self.limits.max_connections)
        self.tls = tls
        if tls is not None:
            # The handshake runs in the handler thread, so a slow client cannot stall accept().
            self.socket = tls.wrap_socket(self.socket, server_side=True,
                                          do_handshake_on_connect=False)

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="agent http", daemon=True)
        thread.start()
        return thread

    def get_request(self) -> tuple[socket.socket, tuple]:
        try:
            return super().get_request()
        except OSError as exc:  # socketserver drops the attempt and calls accept() again
            if exc.errno in _OUT_OF_RESOURCES:
                self._accept_failed("agent cannot accept a connection: %s; accepting again "
                                    "in %g s", exc.strerror, ACCEPT_PAUSE_S)
                time.sleep(ACCEPT_PAUSE_S)
            raise

    def process_request(self, request: socket.socket,  # type: ignore[override]
                        client_address: tuple) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse_busy(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # its thread did not start: the slot is not taken
            self._slots.release()
            raise

    def process_request_thread(self, request: socket.socket,  # type: ignore[override]
                               client_address: tuple) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse_busy(self, request: socket.socket, client_address: tuple) -> None:
        """Over the limit: a 503 and the connection closed, from the accepting thread, so
        it must never block (a TLS client gets no 503: that would take a handshake)."""
        self._refused_busy("agent is serving its limit of %d connections: refused one from "
                           "%s (--max-connections)", self.limits.max_connections,
                           client_address[0])
        if not isinstance(request, ssl.SSLSocket):
            with contextlib.suppress(OSError):
                request.setblocking(False)
                # Closing on unread bytes resets the connection, and the client would lose
                # the 503: read what has come of its request first.
                with contextlib.suppress(OSError):
                    request.recv(65536)
                request.send(_BUSY)
        self.shutdown_request(request)

    def handle_error(self, request: object, client_address: tuple) -> None:
        # socketserver prints a traceback to stderr for each: one a client could repeat.
        self.internal_error(sys.exception(), client_address)

    def internal_error(self, exc: BaseException | None, client_address: tuple) -> None:
        """A bug of ours met serving a client: its traceback logged once per kind, then one
        line at debug level, so a client that keeps causing it cannot fill the log."""
        kind = type(exc).__name__
        if kind not in self._errors_told:
            self._errors_told.add(kind)
            log.error("agent: internal error serving %s", client_address[0], exc_info=exc)
        else:
            log.debug("agent: internal error serving %s: %s: %s", client_address[0], kind, exc)

    def server_close(self) -> None:
        super().server_close()
        for throttle in (self.refused_token, self.cut_slow, self._refused_busy,
                         self._accept_failed, self.buffer_failed):
            throttle.flush()


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


class _DeadlineReader(io.RawIOBase):
    """The connection as the handler reads it: each read waits only until the handler's
    current deadline. A socket timeout restarts with every byte, so a client sending one
    byte a second held a handler for as long as it liked."""

    def __init__(self, handler: _Handler) -> None:
        super().__init__()
        self._h = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        h = self._h
        left_s = h.deadline - time.monotonic()
        if left_s <= 0:
            h.timed_out()
            raise TimeoutError("the request did not arrive in time")
        try:
            h.connection.settimeout(left_s)
            n = h.connection.recv_into(buffer)
        except TimeoutError:
            h.timed_out()
            raise
        if n and h.phase == "idle":  # the next request has begun: its head's clock starts
            h.phase = "head"
            h.deadline = time.monotonic() + h.server.limits.client_timeout_s
        return n


class _Handler(BaseHTTPRequestHandler):
    server: AgentHttpServer
    protocol_version = "HTTP/1.1"  # keep-alive: the probe reuses one connection
    # Headers and body go out in separate writes; with Nagle on, the body waits ~40 ms for
    # the peer's delayed ACK.
    disable_nagle_algorithm = True
    timeout = None  # set before each read (_DeadlineReader) and each answer (flush_headers)
    server_version = "probescope-agent"
    sys_version = ""

    def setup(self) -> None:
        self._buffer: AgentBuffer | None = None
        self._auth: bool | None = None
        self._served = 0
        self._answering = False  # this request's answer has begun to go out
        # The first request's head, TLS handshake included, is due from the connect.
        self.phase = "head"  # "idle" between requests, "head", "body", "answer"
        self.deadline = time.monotonic() + self.server.limits.client_timeout_s
        self._handshaken = True
        super().setup()
        self.rfile.close()  # the socket's own file: reads go through the deadline instead
        self.rfile = io.BufferedReader(_DeadlineReader(self))
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                # One timeout for the whole handshake: CPython's do_handshake keeps a
                # deadline across its reads.
                self.connection.settimeout(max(0.001, self.deadline - time.monotonic()))
                self.connection.do_handshake()
            except (ssl.SSLError, OSError) as exc:  # plain HTTP, a scanner, a slow client
                log.debug("agent TLS handshake with %s failed: %s", self.client_address[0],
                          exc)
                self._handshaken = False

    def handle(self) -> None:
        if self._handshaken:
            super().handle()

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:  # a client gone while its answer was flushed
            pass
        finally:
            if self._buffer is not None:
                self._buffer.close()

    def handle_one_request(self) -> None:
        if self._served:  # a kept-alive connection, waiting for its next request
            self.phase = "idle"
            self.deadline = time.monotonic() + self.server.limits.idle_timeout_s
        self._served += 1
        self._auth = None
        self._answering = False
        # Set by parse_request; an answer to a failure before it needs them too.
        self.command, self.request_version = None, self.default_request_version
        try:
            super().handle_one_request()
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            log.debug("agent connection from %s ended: %s", self.client_address[0], exc)
            self.close_connection = True
        except Exception as exc:  # a bug of ours: the client still gets an answer in JSON
            self.server.internal_error(exc, self.client_address)
            self.close_connection = True
            if not self._answering:
                with contextlib.suppress(OSError):
                    self._json(500, {"error": f"internal error in the agent: "
                                              f"{type(exc).__name__} (see its log)"})

    def timed_out(self) -> None:
        """A read met its deadline. Between requests that is the keep-alive ending; within
        one it is a client too slow to send it, or one that holds a connection open."""
        if self.phase in ("head", "body"):
            limits = self.server.limits
            self.server.cut_slow(
                "agent closed a connection from %s that did not send its request %s within "
                "its time (--client-timeout %g s)", self.client_address[0],
                "head" if self.phase == "head" else "body", limits.client_timeout_s)

    def parse_request(self) -> bool:
        # The token is checked as soon as the head is in, for every method, before any body
        # is read or any handler runs.
        if not super().parse_request():
            return False
        self.phase = "answer"
        return self._authorised()

    def handle_expect_100(self) -> bool:
        # A refused client gets its 401, not an invitation to send its body.
        return self._authorised() and super().handle_expect_100()

    def flush_headers(self) -> None:
        # The socket's timeout is the request's remaining time: give the answer its own.
        self._answering = True
        self.connection.settimeout(self.server.limits.write_timeout_s)
        super().flush_headers()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        try:
            self._answer_get(url)
        except (AgentBufferError, sqlite3.Error) as exc:  # the buffer gone, locked or broken
            self.server.buffer_failed("agent cannot read its buffer: %s", exc)
            self._json(503, {"error": f"the agent cannot read its buffer: {exc}"})

    def _answer_get(self, url: SplitResult) -> None:
        if url.path == "/v1/info":
            first, last = self._open_buffer().bounds()
            status = self.server.status() if self.server.status is not None else {}
            # now_ns: this box's clock, which places every sample it serves; a dashboard
            # compares it with its own (edge boxes boot without a clock source often enough).
            self._json(200, {**self.server.info, **status, "first_seq": first,
                             "last_seq": last, "agent_id": self._open_buffer().agent_id,
                             "now_ns": time.time_ns()})
        elif url.path == "/v1/items":
            self._items(parse_qs(url.query))
        else:
            self._json(404, {"error": f"no such resource {url.path}; try /v1/info"})

    def _other(self) -> None:
        self.close_connection = True  # the body, if any, is not read
        self._json(405, {"error": f"the agent only answers GET, and POST to {CONTRACT_PATH}"})

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _other

    def do_POST(self) -> None:
        if urlsplit(self.path).path != CONTRACT_PATH:
            self._other()
            return
        model = self.server.model
        length = self.headers.get("Content-Length", "")
        if model is None or not length.isdigit() or int(length) > MAX_REQUEST_BYTES:
            self.close_connection = True  # the body is not read
            if model is None:
                self._json(409, {"error": "this agent probes a server, not a model file of "
                                          "its own: there is nothing to measure here"})
            elif not length.isdigit():
                self._json(411, {"error": "a contract request needs a Content-Length"})
            else:
                self._json(413, {"error": f"a contract request is at most "
                                          f"{MAX_REQUEST_BYTES // 2**20} MiB"})
            return
        size = int(length)
        limit_s = self.server.limits.client_timeout_s + size / BODY_MIN_BYTES_PER_S
        self.phase, self.deadline = "body", time.monotonic() + limit_s
        try:
            raw = self.rfile.read(size)
        except TimeoutError:
            self.close_connection = True
            self._json(408, {"error": f"the request body did not arrive within "
                                      f"{math.ceil(limit_s)} s"})
            return
        self.phase = "answer"
        try:
            request = json.loads(raw)
        except ValueError:
            self._json(400, {"error": "the body is not JSON"})
            return
        del raw
        try:
            self._json(200, model.measure(request))
        except AgentRefusal as exc:
            self._json(exc.status, {"error": str(exc)})

    def _authorised(self) -> bool:
        # A refused client's connection is closed, so an unread body cannot pose as the next
        # request on a keep-alive connection.
        if self._auth is None:
            self._auth = bearer_matches(self.headers.get("Authorization"), self.server.token)
            if not self._auth:
                self.server.refused_token("agent refused a request from %s: missing or wrong "
                                          "bearer token", self.client_address[0])
                self.close_connection = True
                self._json(401, {"error": "missing or wrong bearer token"},
                           {"WWW-Authenticate": 'Bearer realm="probescope-agent"'})
        return self._auth

    def _items(self, query: dict[str, list[str]]) -> None:
        try:
            after = int(query.get("after", ["0"])[0])
            limit = min(MAX_PAGE, max(1, int(query.get("limit", ["5000"])[0])))
        except ValueError:
            self._json(400, {"error": "after and limit must be integers"})
            return
        if not 0 <= after <= MAX_SEQ:
            self._json(400, {"error": f"after must be a sequence number from 0 to {MAX_SEQ}"})
            return
        self._json(200, self._open_buffer().page(after, limit).to_json())

    def _open_buffer(self) -> AgentBuffer:
        # A dashboard keeps its connection, and this one its file: once the agent has put a
        # new buffer in place of a deleted one, serve that. Until then the old file still
        # answers (it is what the agent writes to while it cannot make a new one).
        # A file someone else put there is not served: the agent does not write into it.
        if (self._buffer is not None and self._buffer.moved() and self._buffer.path.exists()
                and not_ours(self._buffer.path) is None):
            self._buffer.close()
            self._buffer = None
        if self._buffer is None:
            self._buffer = AgentBuffer(self.server.buffer_path, readonly=True)
        return self._buffer

    def _json(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        # The request line only, its query cut: headers (and so the token) are never logged,
        # and a client that put a token in the URL (?token=...) must not get it logged either.
        log.debug("%s %s", self.client_address[0], _QUERY.sub("?…", format % args))
