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
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.core.log_throttle import LogThrottle
from app.core.tap_decode import Exchange, decode_content
from app.core.tap_http import (
    BadMessage,
    BodyReader,
    HeadTooLarge,
    Message,
    answer_framing,
    error_response,
    header_secrets,
    parse_head,
)
from probes.http_common import Redactor

log = logging.getLogger(__name__)

CUT_SESSIONS_END_S = 2.0  # after the stop's grace: for cut calls to be handed over
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                         b"upgrade", b"transfer-encoding", b"expect", b"host",
                         b"content-length"})
# What stands in the record for a credential's value (``header_secrets``, app/core/tap_http.py).
REDACTED = "[redacted]"
# A request body gets ``client_timeout_s`` plus one second per this many bytes received
# (Apache's mod_reqtimeout MinRate): a body trickled slower than that is cut.
BODY_MIN_BYTES_PER_S = 64 * 1024
# After refusing a request whose body is still coming, how long its bytes are read and
# dropped before the close: closing on unread bytes resets the connection, and a client
# still sending would lose the 413 (nginx's lingering close).
LINGER_S = 1.0
# accept() failing for want of descriptors or memory: the listener stays readable, so
# retrying at once would spin until something frees one.
ACCEPT_PAUSE_S = 0.1
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# A connection that failed between the client's connect and our accept: only that one.
_CLIENT_GONE_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EINTR, errno.EPERM})


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


class UpstreamFailed(Exception):
    """The upstream gave no usable answer; ``got_bytes``: it had started one."""

    def __init__(self, reason: str, got_bytes: bool) -> None:
        super().__init__(reason)
        self.got_bytes = got_bytes


class _ClientGone(Exception):
    """The client closed its connection or the tap is stopping."""


class _ClientTooSlow(Exception):
    """A request's head or body did not arrive within its time."""

    def __init__(self, part: str) -> None:
        super().__init__(part)
        self.part = part  # "head" or "body"


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


def _set_kernel_timeout(sock: socket.socket, option: int, seconds: float) -> None:
    """SO_RCVTIMEO/SO_SNDTIMEO: one syscall per recv or send, where a Python-level timeout
    adds a poll() to each. A timed-out call raises BlockingIOError. (0 would mean never.)"""
    whole = int(seconds)
    micros = int((seconds - whole) * 1e6) or (0 if whole else 1)
    sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", whole, micros))


class ClientSession:
    """One client connection, served on its own thread with blocking sockets, and its own
    keep-alive connection upstream. A request with a Content-Length body is streamed: its
    rewritten head goes upstream as soon as it is complete and the body follows as it
    arrives, so the server reads the head while the client is still sending (these clients
    send head and body in separate writes). A chunked request is read whole, then sent with
    a Content-Length."""

    def __init__(self, sock: socket.socket, settings: ProxySettings,
                 notes: ListenerNotes | None = None) -> None:
        self.client = sock
        self.s = settings
        self.limits = settings.limits
        self.notes = notes or ListenerNotes()
        try:
            self.peer = str(sock.getpeername()[0])
        except OSError:  # gone already
            self.peer = "?"
        self._accepted_s = time.monotonic()
        self._heads = 0  # request heads read on this connection
        self._client_ok = True  # False once a send to the client failed: nothing more goes
        # A client that does not read its answer is cut after this long without progress.
        _set_kernel_timeout(sock, socket.SO_SNDTIMEO, self.limits.client_timeout_s)
        self.buf = bytearray()
        self.upstream: socket.socket | None = None
        self.closed = False
        self.sent_continue = False
        self.forwarded = 0  # bytes of this request's final answer already with the client
        self._ts_ns, self._t0 = 0, 0.0  # when the call's clock started (``_stamp``)
        self._redaction: tuple[tuple[str, ...], Redactor] | None = None

    # -- the loop -------------------------------------------------------------------------

    def serve(self) -> None:
        try:
            while not self.closed and self._one_request():
                pass
        except _ClientGone:
            pass
        except _ClientTooSlow as exc:
            self.notes.cut_slow("tap closed a connection from %s that did not send its "
                                "request %s within its time (--client-timeout %g s)",
                                self.peer, exc.part, self.limits.client_timeout_s)
            if self._client_ok and not self.forwarded:
                with contextlib.suppress(OSError):
                    self.client.sendall(error_response(
                        408, f"the request {exc.part} did not arrive in time"))
        except OSError as exc:
            log.debug("tap client connection ended: %s", exc)
        finally:
            self.close()

    def close(self) -> None:
        """Close both connections; from another thread this also wakes a blocked recv
        (shutdown does, close alone does not on Linux)."""
        self.closed = True
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
        self.upstream = None

    def _recv_client(self, deadline_s: float, part: str) -> bytes:
        """What the client sent next, waiting until ``deadline_s`` (monotonic) at most: a
        timeout restarting with each byte let a client trickling one a second hold the
        connection for as long as it liked. Raises _ClientTooSlow, _ClientGone."""
        left_s = deadline_s - time.monotonic()
        if left_s <= 0:
            raise _ClientTooSlow(part)
        _set_kernel_timeout(self.client, socket.SO_RCVTIMEO, left_s)
        try:
            data = self.client.recv(65536)
        except (TimeoutError, BlockingIOError):
            raise _ClientTooSlow(part) from None
        if not data:
            raise _ClientGone
        return data

    def _read_head(self) -> Message:
        """The next request's head. A new connection's first head is due within
        ``client_timeout_s`` of the connect; on a kept-alive one, the next request may take
        ``idle_timeout_s`` to begin and then ``client_timeout_s`` to finish its head. A
        connection that sent nothing in time ends quietly (_ClientGone), as does one idle
        past its time; one that sent part of a head raises _ClientTooSlow."""
        limits = self.limits
        if not self._heads:
            deadline_s: float | None = self._accepted_s + limits.client_timeout_s
        elif self.buf:  # pipelined: the next head has begun
            deadline_s = time.monotonic() + limits.client_timeout_s
        else:
            deadline_s = None
        head = parse_head(self.buf)
        while head is None:
            try:
                if deadline_s is None:
                    self.buf += self._recv_client(time.monotonic() + limits.idle_timeout_s,
                                                  "head")
                    deadline_s = time.monotonic() + limits.client_timeout_s
                else:
                    self.buf += self._recv_client(deadline_s, "head")
            except _ClientTooSlow:
                if self.buf:
                    raise
                log.debug("tap: a connection from %s sent no request in its time: closed",
                          self.peer)
                raise _ClientGone from None
            head = parse_head(self.buf)
        self._heads += 1
        return head

    def _body_deadline(self, started_s: float, received: int) -> float:
        return started_s + self.limits.client_timeout_s + received / BODY_MIN_BYTES_PER_S

    def _one_request(self) -> bool:
        """Serve one request; False when the client connection is to be closed."""
        self.sent_continue = False
        self.forwarded = 0
        try:
            head = self._read_head()
        except _ClientGone:
            return False
        except HeadTooLarge as exc:
            return self._refuse(431, f"{exc} (the tap's limit)")
        except BadMessage as exc:
            return self._refuse(400, f"malformed request head: {exc}")
        chunked = b"chunked" in (head.header(b"transfer-encoding") or b"").lower()
        length = head.header(b"content-length")
        try:
            size = 0 if chunked or length is None else int(length)
        except ValueError:
            return self._refuse(400, "Content-Length is not a number")
        parts = head.line.split(b" ", 2)
        if size < 0 or len(parts) != 3:
            return self._refuse(400, "malformed request line or Content-Length")
        limit = self.limits.max_body_bytes
        if size > limit:  # said before a byte of the body is read or anything sent upstream
            return self._refuse(413, f"a request body of {size:,} bytes is over the tap's "
                                     f"limit of {limit:,} (--max-body-bytes)")
        started_s = time.monotonic()
        if chunked:  # read whole (it goes upstream with a Content-Length), in one pass
            reader = BodyReader("chunked")
            data = bytes(self.buf[head.end:])
            self.buf.clear()
            while True:
                try:
                    used = reader.feed(data)
                except BadMessage as exc:
                    return self._refuse(400, f"malformed chunked body: {exc}")
                if reader.size > limit:  # held: at most the limit and one read
                    return self._refuse(413, f"a chunked request body over the tap's limit "
                                             f"of {limit:,} bytes (--max-body-bytes)")
                if reader.done:
                    self.buf += data[used:]  # a pipelined next request
                    break
                self._maybe_continue(head)
                data = self._recv_client(self._body_deadline(started_s, reader.size), "body")
            body = reader.kept
            size = len(body)
        else:
            del self.buf[:head.end]
            body = bytearray(self.buf[:size])
            del self.buf[:len(body)]
        method, target, version = parts
        conn = (head.header(b"connection") or b"").lower()
        keep_client = (b"close" not in conn if version.strip() == b"HTTP/1.1"
                       else b"keep-alive" in conn)
        keep = [b"%s: %s" % kv for kv in head.headers if kv[0].lower() not in _HOP_BY_HOP]
        out_head = b"\r\n".join([
            b"%s %s HTTP/1.1" % (method, target), b"Host: " + self.s.hostport, *keep,
            b"Content-Length: %d" % size]) + b"\r\n\r\n"
        status, raw, answer, error, timed_out = None, b"", b"", None, False
        coding: bytes | None = None
        answer_cut = False
        redactor = self._redactor(head)
        # What is kept of the answer for the record: the limit, and a margin past it so a
        # secret the cut would split is still masked whole (12 bytes: the longest spelling
        # of a character). The rest only passes through.
        pad = 12 * len(redactor.secrets[0]) if redactor else 0
        self._stamp()  # provisional: a call that fails before its request is complete
        try:
            reused = self._send_upstream(out_head + body, last=len(body) >= size)
            retried = False
            while True:
                try:
                    while len(body) < size:  # the rest of the body, as it arrives
                        self._maybe_continue(head)
                        data = self._recv_client(
                            self._body_deadline(started_s, len(body)), "body")
                        chunk = data[:size - len(body)]
                        # A pipelining client's next request may come in the same read.
                        self.buf += data[len(chunk):]
                        body += chunk
                        if len(body) == size:
                            self._stamp()
                        self._send_part(chunk)
                    status, answer_head, reader, keep_upstream, closes = self._read_answer(
                        method, self._t0, self.s.max_record_bytes + pad)
                    break
                except UpstreamFailed as exc:
                    if not reused or exc.got_bytes or retried:
                        raise
                    # A kept connection the server had already closed: one fresh try with
                    # what was sent so far. Only then, since the request might not be
                    # idempotent.
                    retried = True
                    self._drop_upstream()
                    reused = self._send_upstream(out_head + body, last=len(body) >= size)
            if not keep_upstream:
                self._drop_upstream()
            keep_client = keep_client and not closes
            answer, answer_cut = bytes(reader.kept), reader.size > len(reader.kept)
            coding = answer_head.header(b"content-encoding")
        except TimeoutError:
            timed_out = True
            error = (f"upstream {self.s.hostport.decode()} did not answer within "
                     f"{self.s.timeout_s:g} s")
            raw = error_response(504, error)
            self._drop_upstream()  # it still owes an answer nobody wants
        except UpstreamFailed as exc:
            error = f"upstream {self.s.hostport.decode()}: {exc}"
            raw = error_response(502, error)
            self._drop_upstream()
        latency_ms = (time.perf_counter() - self._t0) * 1000.0
        self._record(head, redactor, pad, method, target, bytes(body), status, answer,
                     answer_cut, coding, latency_ms, error, timed_out, self._ts_ns)
        if status is None and self.forwarded:
            # Part of a broken answer is already with the client: an error answer after it
            # would be garbage; closing tells the client the answer is incomplete.
            return False
        if len(raw) > self.forwarded:
            with contextlib.suppress(OSError):  # recorded even when the client has gone
                self.client.sendall(raw[self.forwarded:] if self.forwarded else raw)
        return keep_client and status is not None and self._client_ok

    # -- upstream -------------------------------------------------------------------------

    def _stamp(self) -> None:
        """Start the call's clock. The recorded latency runs from just before the send that
        hands the request's last bytes to the kernel (a new upstream connection is set up
        first) to the end of the answer: the server's part of the call. Started after that
        send returned, it missed whatever the server did while this thread waited to run
        again (on a busy core, all of it: 0.05 ms recorded for a 1.7 ms call), or while a
        large send waited for the server to read."""
        self._ts_ns, self._t0 = time.time_ns(), time.perf_counter()

    def _send_upstream(self, data: bytes | bytearray, *, last: bool) -> bool:
        """Send on the kept connection, or a new one; True when it was a kept one. ``last``:
        ``data`` ends the request, so the call's clock starts with this send."""
        reused = self.upstream is not None
        if self.upstream is None:
            self.upstream = self._connect()
        try:
            if last:
                self._stamp()
            self.upstream.sendall(data)
        except OSError as exc:
            if not reused:
                raise UpstreamFailed(f"connection lost: {exc}", got_bytes=False) from None
            self._drop_upstream()  # closed by the server while idle: one fresh connection
            self.upstream = self._connect()
            try:
                if last:
                    self._stamp()
                self.upstream.sendall(data)
            except OSError as exc2:
                raise UpstreamFailed(f"connection lost: {exc2}", got_bytes=False) from None
            return False
        return reused

    def _send_part(self, data: bytes) -> None:
        try:
            assert self.upstream is not None
            self.upstream.sendall(data)
        except OSError as exc:
            raise UpstreamFailed(f"connection lost: {exc}", got_bytes=False) from None

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.s.host, self.s.port), self.s.timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.s.tls is not None:
                sock = self.s.tls.wrap_socket(sock, server_hostname=self.s.host)
            else:
                # A blocking socket with a kernel receive timeout: one syscall per recv,
                # where a Python-level timeout adds a poll() to each (and fcntl()s to each
                # change of it). A timed-out recv raises BlockingIOError.
                sock.settimeout(None)
                whole = int(self.s.timeout_s)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack(
                    "ll", whole, int((self.s.timeout_s - whole) * 1e6)))
        except TimeoutError:
            raise UpstreamFailed("cannot connect: timed out", got_bytes=True) from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamFailed(f"cannot connect: {getattr(exc, 'strerror', None) or exc}",
                                 got_bytes=True) from None
        return sock

    def _drop_upstream(self) -> None:
        if self.upstream is not None:
            with contextlib.suppress(OSError):
                self.upstream.close()
            self.upstream = None

    def _read_answer(self, method: bytes, t0: float, keep: int
                     ) -> tuple[int, Message, BodyReader, bool, bool]:
        """The final answer: status, head, its body's reader (the first ``keep`` bytes of
        the body, de-chunked, and its size), whether the connection can carry the next
        request, and whether the answer ends its connection (the client, reading those very
        bytes, expects its own to close).

        Bytes go on to the client as they arrive once the answer's head has proved to be
        HTTP (``self.forwarded`` counts them), up to the answer's end: the client does not
        wait for the recording, and bytes a server sends after its answer do not reach it.
        Only the head and the kept prefix stay in memory. Interim (1xx) answers pass through
        the same way. Raises TimeoutError past the deadline."""
        sock = self.upstream
        assert sock is not None
        deadline = t0 + self.s.timeout_s
        buf = bytearray()  # the head as it arrives, and what came with it
        eof = False
        while True:
            try:
                head = parse_head(buf)
                if head is None:
                    if eof:
                        raise UpstreamFailed(self._lost(), got_bytes=bool(buf))
                    data = self._recv_upstream(sock, deadline, bool(buf))
                    buf += data
                    eof = not data
                    continue
                try:
                    status = int(head.line.split(b" ", 2)[1])
                except (IndexError, ValueError):
                    raise BadMessage("bad status line") from None
                if not head.line.startswith(b"HTTP/") or status <= 0:
                    raise BadMessage("bad status line")
                reader = BodyReader(*answer_framing(head, method, status), keep=keep)
                self._pass_on(memoryview(buf)[:head.end])
                data = bytes(buf[head.end:])
                while True:
                    used = reader.feed(data)
                    if used:
                        self._pass_on(data[:used] if used < len(data) else data)
                    if reader.done:
                        break
                    if eof:
                        raise UpstreamFailed(self._lost(), got_bytes=True)
                    data = self._recv_upstream(sock, deadline, True)
                    if not data:
                        eof = True
                        reader.end()
                        if reader.done:
                            break
            except BadMessage as exc:
                raise UpstreamFailed(f"upstream sent a malformed response: {exc}",
                                     got_bytes=True) from None
            extra = data[used:]
            if 100 <= status < 200 and status != 101:
                buf = bytearray(extra)
                self.forwarded = 0  # counts the final answer's bytes only
                continue
            says_close = (eof or not head.line.startswith(b"HTTP/1.1")
                          or b"close" in (head.header(b"connection") or b"").lower())
            keep_conn = not says_close and status != 101 and not extra
            return status, head, reader, keep_conn, says_close

    def _recv_upstream(self, sock: socket.socket, deadline: float, got_bytes: bool) -> bytes:
        if time.perf_counter() >= deadline:
            raise TimeoutError
        try:
            return sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            raise TimeoutError from None
        except OSError as exc:
            raise UpstreamFailed(self._lost(exc), got_bytes=got_bytes) from None

    def _lost(self, exc: OSError | None = None) -> str:
        if self.closed:
            return "the tap stopped before the answer came"
        return f"connection lost: {exc}" if exc else "connection lost"

    def _pass_on(self, data: bytes | memoryview) -> None:
        """Bytes of the answer on to the client (gone clients are ignored: the call is still
        recorded)."""
        self.forwarded += len(data)
        if self._client_ok:
            try:
                self.client.sendall(data)
            except OSError:  # gone, or not reading (SO_SNDTIMEO): the rest would be garbage
                self._client_ok = False

    # -- client ---------------------------------------------------------------------------

    def _maybe_continue(self, head: Message) -> None:
        """Tell a client that waits for it to send its body (Expect is not forwarded)."""
        if not self.sent_continue and b"100-continue" in (head.header(b"expect") or b"").lower():
            self.sent_continue = True
            self.client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _refuse(self, status: int, reason: str) -> bool:
        """Answer a request the tap will not forward (400, 413, 431) with one log line, and
        end the connection (False): what follows in it cannot be framed, or is not wanted."""
        self.notes.refused("tap refused a request from %s: HTTP %d, %s", self.peer, status,
                           reason)
        with contextlib.suppress(OSError, _ClientGone, _ClientTooSlow):
            self.client.sendall(error_response(status, reason))
            self.client.shutdown(socket.SHUT_WR)
            deadline_s = time.monotonic() + LINGER_S
            while self._recv_client(deadline_s, "body"):
                pass  # dropped: the answer is sent, the close must not reset it
        return False

    def _record(self, head: Message, redactor: Redactor | None, pad: int, method: bytes,
                target: bytes, body: bytes, status: int | None, answer: bytes,
                answer_cut: bool, answer_coding: bytes | None, latency_ms: float,
                error: str | None, timed_out: bool, ts_ns: int) -> None:
        """Hand the exchange over; ``answer`` is the answer's kept prefix, ``answer_cut``
        whether the answer was longer. Masked with ``pad`` bytes past the record limit."""
        limit = self.s.max_record_bytes
        rid = head.header(b"x-request-id")
        kept_body, body_cut = _readable(body, head.header(b"content-encoding"), limit + pad)
        kept_answer, inflated_cut = _readable(answer, answer_coding, limit + pad)
        answer_cut = answer_cut or inflated_cut
        if redactor:
            kept_body, kept_answer = redactor.bytes(kept_body), redactor.bytes(kept_answer)
            error = redactor.text(error) if error else error
        self.s.on_exchange(Exchange(
            ts_ns, method.decode("latin-1"), target.decode("latin-1"), kept_body[:limit],
            body_cut or len(kept_body) > limit, status, kept_answer[:limit],
            answer_cut or len(kept_answer) > limit, latency_ms, error, timed_out,
            rid.decode("latin-1") if rid else None))

    def _redactor(self, head: Message) -> Redactor | None:
        """A redactor for the request's credentials, None when it carries none. A client
        sends the same ones on each call of its connection: the last one is kept."""
        secrets = tuple(header_secrets(head.headers))
        if not secrets:
            return None
        if self._redaction is None or self._redaction[0] != secrets:
            self._redaction = (secrets, Redactor(secrets, REDACTED))
        return self._redaction[1]


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


def _readable(body: bytes, coding: bytes | None, cap: int) -> tuple[bytes, bool]:
    """What is recorded of a body: up to ``cap`` bytes of it with its Content-Encoding
    undone, and whether that is not all of it. Compressed bytes are not readable, and a
    credential an upstream echoed inside them would get past the masking; one the tap
    cannot inflate is not recorded at all (cut to nothing)."""
    if not coding:
        return body[:cap], len(body) > cap
    decoded = decode_content(body, coding, cap)
    if decoded is None:
        log.debug("tap: a body with Content-Encoding %r is not recorded", coding)
        return b"", bool(body)
    return decoded
