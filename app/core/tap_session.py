"""One client connection of the tap's proxy (``ClientSession``): each request's head and body
read under their deadlines, refused (400, 408, 413, 431) or sent on through the connection's
own upstream connection (tap_upstream.py), the answer passed back, and the finished exchange
handed over to be recorded (inflated, masked, cut at the record limit). Thread: the
connection's own; ``close`` from any.

Apart from the accepting server (tap_proxy.py), which only starts, counts and stops sessions:
this is the per-request path.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time

from app.core.tap_decode import Exchange, decode_content
from app.core.tap_http import (
    BadMessage,
    BodyReader,
    HeadTooLarge,
    Message,
    error_response,
    header_secrets,
    parse_head,
)
from app.core.tap_settings import PROXY_LOGGER, ListenerNotes, ProxySettings
from app.core.tap_upstream import UpstreamConnection, UpstreamFailed
from probes.http_common import Redactor

log = logging.getLogger(PROXY_LOGGER)

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


class _ClientGone(Exception):
    """The client closed its connection or the tap is stopping."""


class _ClientTooSlow(Exception):
    """A request's head or body did not arrive within its time."""

    def __init__(self, part: str) -> None:
        super().__init__(part)
        self.part = part  # "head" or "body"


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
        self.upstream = UpstreamConnection(settings)
        self.closed = False
        self.sent_continue = False
        self.forwarded = 0  # bytes of this request's final answer already with the client
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
        self.upstream.closed = True  # before a shutdown wakes this session's thread
        for sock in (self.client, self.upstream.sock):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
        self.upstream.sock = None

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
        self.upstream.stamp()  # provisional: a call that fails before its request is complete
        try:
            reused = self.upstream.send(out_head + body, last=len(body) >= size)
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
                            self.upstream.stamp()
                        self.upstream.send_part(chunk)
                    status, answer_head, reader, keep_upstream, closes = self.upstream.read_answer(
                        method, self.s.max_record_bytes + pad, self)
                    break
                except UpstreamFailed as exc:
                    if not reused or exc.got_bytes or retried:
                        raise
                    # A kept connection the server had already closed: one fresh try with
                    # what was sent so far. Only then, since the request might not be
                    # idempotent.
                    retried = True
                    self.upstream.drop()
                    reused = self.upstream.send(out_head + body, last=len(body) >= size)
            if not keep_upstream:
                self.upstream.drop()
            keep_client = keep_client and not closes
            answer, answer_cut = bytes(reader.kept), reader.size > len(reader.kept)
            coding = answer_head.header(b"content-encoding")
        except TimeoutError:
            timed_out = True
            error = (f"upstream {self.s.hostport.decode()} did not answer within "
                     f"{self.s.timeout_s:g} s")
            raw = error_response(504, error)
            self.upstream.drop()  # it still owes an answer nobody wants
        except UpstreamFailed as exc:
            error = f"upstream {self.s.hostport.decode()}: {exc}"
            raw = error_response(502, error)
            self.upstream.drop()
        latency_ms = (time.perf_counter() - self.upstream.t0) * 1000.0
        self._record(head, redactor, pad, method, target, bytes(body), status, answer,
                     answer_cut, coding, latency_ms, error, timed_out, self.upstream.ts_ns)
        if status is None and self.forwarded:
            # Part of a broken answer is already with the client: an error answer after it
            # would be garbage; closing tells the client the answer is incomplete.
            return False
        if len(raw) > self.forwarded:
            with contextlib.suppress(OSError):  # recorded even when the client has gone
                self.client.sendall(raw[self.forwarded:] if self.forwarded else raw)
        return keep_client and status is not None and self._client_ok

    # -- client ---------------------------------------------------------------------------

    def pass_on(self, data: bytes | memoryview) -> None:
        """Bytes of the answer on to the client (gone clients are ignored: the call is still
        recorded)."""
        self.forwarded += len(data)
        if self._client_ok:
            try:
                self.client.sendall(data)
            except OSError:  # gone, or not reading (SO_SNDTIMEO): the rest would be garbage
                self._client_ok = False

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
