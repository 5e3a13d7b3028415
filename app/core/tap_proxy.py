"""The tap's hot path: an HTTP/1.1 reverse proxy on asyncio protocols that copies bytes. Thread:
the tap's event-loop thread only.

Callbacks instead of coroutines: ``data_received`` parses what has arrived and, once a request
is complete, writes it to a pooled keep-alive upstream connection; the upstream's
``data_received`` hands the complete response back as the very bytes received. That keeps the
proxy's own cost per request near 50 µs of Python (streams and awaits cost three times that).
Each finished exchange goes to ``on_exchange`` for recording, off this thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.core.tap_decode import Exchange

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                         b"upgrade", b"transfer-encoding", b"expect", b"host",
                         b"content-length"})


class BadMessage(ValueError):
    """Bytes that are not a well-formed HTTP/1.1 message."""


@dataclass(slots=True)
class Message:
    """One parsed message: first line, headers, where it ends in the buffer, decoded body."""

    line: bytes
    headers: list[tuple[bytes, bytes]]
    end: int
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


def _chunked(buf: bytearray, pos: int) -> tuple[int, bytes] | None:
    body = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadMessage("bad chunk size") from None
        pos = eol + 2
        if size == 0:
            while True:  # trailers, then the empty line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return eol + 2, bytes(body)
                pos = eol + 2
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos:pos + size]
        pos += size + 2


def parse(buf: bytearray, *, response_to: bytes | None = None, eof: bool = False
          ) -> Message | None:
    """The first complete message in ``buf``, or None while more bytes are needed.

    ``response_to`` is the request method when parsing a response (HEAD has no body); a
    response with neither length nor chunking ends at ``eof``.
    """
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        if len(buf) > MAX_HEADER_BYTES:
            raise BadMessage("headers too large")
        return None
    lines = bytes(buf[:head_end]).split(b"\r\n")
    headers = []
    for raw in lines[1:]:
        name, sep, value = raw.partition(b":")
        if not sep:
            raise BadMessage("bad header line")
        headers.append((name.strip(), value.strip()))
    msg = Message(lines[0], headers, head_end + 4, b"")
    start = head_end + 4
    if response_to is not None:
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise BadMessage("bad status line") from None
        if response_to == b"HEAD" or status in (204, 304) or 100 <= status < 200:
            return msg
    if b"chunked" in (msg.header(b"transfer-encoding") or b"").lower():
        got = _chunked(buf, start)
        if got is None:
            return None
        msg.end, msg.body = got
        return msg
    length = msg.header(b"content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise BadMessage("bad Content-Length") from None
        if len(buf) < start + n:
            return None
        msg.end, msg.body = start + n, bytes(buf[start:start + n])
        return msg
    if response_to is None:
        return msg  # a request without a body
    if not eof:
        return None  # the body runs until the server closes
    msg.end, msg.body = len(buf), bytes(buf[start:])
    return msg


@dataclass(frozen=True, slots=True)
class ProxySettings:
    host: str
    port: int
    tls: ssl.SSLContext | None
    timeout_s: float
    max_record_bytes: int
    on_exchange: Callable[[Exchange], None]

    @property
    def hostport(self) -> bytes:
        return f"{self.host}:{self.port}".encode()


class Pool:
    """Idle keep-alive connections to the upstream."""

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        self.idle: list[UpstreamConnection] = []

    def close(self) -> None:
        for conn in self.idle:
            conn.transport.close()
        self.idle.clear()


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.buf = bytearray()
        self.waiter: ClientConnection | None = None
        self.method = b"GET"
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes, method: bytes, waiter: ClientConnection) -> None:
        self.buf.clear()
        self.method, self.waiter = method, waiter
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            # Bytes nobody asked for (a 408 on an idle connection, the late answer to a
            # timed-out call): this connection can no longer be trusted to stay in step.
            self.closed = True
            if self in self.pool.idle:
                self.pool.idle.remove(self)
            self.transport.close()
            return
        self.buf += data
        self._check(eof=False)

    def _check(self, eof: bool) -> None:
        if self.waiter is None:
            return
        try:
            msg = parse(self.buf, response_to=self.method, eof=eof)
        except BadMessage as exc:
            self._fail(f"upstream sent a malformed response: {exc}")
            return
        if msg is None:
            return
        status = int(msg.line.split(b" ", 2)[1])
        if 100 <= status < 200 and status != 101:
            # An interim answer: pass it on and keep waiting for the final one.
            waiter = self.waiter
            waiter.transport.write(bytes(self.buf[:msg.end]))
            del self.buf[:msg.end]
            self._check(eof)
            return
        raw = bytes(self.buf[:msg.end])
        keep = (not eof and status != 101 and msg.line.startswith(b"HTTP/1.1")
                and b"close" not in (msg.header(b"connection") or b"").lower()
                and msg.end == len(self.buf))
        waiter, self.waiter = self.waiter, None
        if keep:
            self.pool.idle.append(self)
        else:
            self.closed = True
            self.transport.close()
        waiter.answered(status, raw, msg.body)

    def _fail(self, reason: str) -> None:
        waiter, self.waiter = self.waiter, None
        self.closed = True
        self.transport.close()
        if waiter is not None:
            waiter.upstream_failed(reason, got_bytes=bool(self.buf))

    def eof_received(self) -> bool | None:
        self._check(eof=True)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self in self.pool.idle:
            self.pool.idle.remove(self)
        if self.waiter is not None:
            self._fail(f"connection lost{f': {exc}' if exc else ''}")


class ClientConnection(asyncio.Protocol):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.s = pool.settings
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.buf = bytearray()
        self.busy = False
        self.sent_continue = False
        self.request: Message | None = None
        self.out = b""
        self.t0 = 0.0
        self.ts_ns = 0
        self.timer: asyncio.TimerHandle | None = None
        self.retried = False
        self.reused = False
        self.keep_client = True
        self.upstream: UpstreamConnection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        try:
            msg = parse(self.buf)
        except BadMessage:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
            self.transport.close()
            return
        if msg is None:
            head_done = self.buf.find(b"\r\n\r\n") >= 0
            if head_done and not self.sent_continue and b"100-continue" in self.buf[
                    :self.buf.find(b"\r\n\r\n")].lower():
                self.sent_continue = True
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        del self.buf[:msg.end]
        self.sent_continue = False
        parts = msg.line.split(b" ", 2)
        if len(parts) != 3:
            self.transport.close()
            return
        method, target, version = parts
        conn = (msg.header(b"connection") or b"").lower()
        self.keep_client = (b"close" not in conn if version.strip() == b"HTTP/1.1"
                            else b"keep-alive" in conn)
        keep = [b"%s: %s" % kv for kv in msg.headers if kv[0].lower() not in _HOP_BY_HOP]
        self.out = b"\r\n".join([
            b"%s %s HTTP/1.1" % (method, target), b"Host: " + self.s.hostport, *keep,
            b"Content-Length: %d" % len(msg.body)]) + b"\r\n\r\n" + msg.body
        self.request = msg
        self.busy = True
        self.retried = False
        self.ts_ns = time.time_ns()
        self.t0 = time.perf_counter()
        self.timer = asyncio.get_running_loop().call_later(self.s.timeout_s, self._timed_out)
        self._send()

    def _send(self) -> None:
        method = self.request.line.split(b" ", 1)[0] if self.request else b"GET"
        while self.pool.idle:
            conn = self.pool.idle.pop()
            if not conn.closed:
                self.reused = True
                self.upstream = conn
                conn.send(self.out, method, self)
                return
        self.reused = False
        asyncio.get_running_loop().create_task(self._connect(method))

    async def _connect(self, method: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                lambda: UpstreamConnection(self.pool), self.s.host, self.s.port, ssl=self.s.tls)
        except OSError as exc:
            self.upstream_failed(f"cannot connect: {exc.strerror or exc}", got_bytes=True)
            return
        if not self.busy:  # timed out meanwhile
            conn.transport.close()
            return
        self.upstream = conn
        conn.send(self.out, method, self)

    # -- outcomes -------------------------------------------------------------------------

    def answered(self, status: int, raw: bytes, body: bytes) -> None:
        if not self.busy:
            return
        self._finish(status, raw, body, None, False)

    def upstream_failed(self, reason: str, got_bytes: bool) -> None:
        if not self.busy:
            return
        if self.reused and not got_bytes and not self.retried:
            # A pooled connection the server had already closed: one fresh try. Only then,
            # since the request might not be idempotent.
            self.retried = True
            self.pool.idle.clear()
            self._send()
            return
        error = f"upstream {self.s.hostport.decode()}: {reason}"
        self._finish(None, _error_response(502, error), b"", error, False)

    def _timed_out(self) -> None:
        if not self.busy:
            return
        error = (f"upstream {self.s.hostport.decode()} did not answer within "
                 f"{self.s.timeout_s:g} s")
        self._finish(None, _error_response(504, error), b"", error, True)

    def _finish(self, status: int | None, raw: bytes, body: bytes, error: str | None,
                timed_out: bool) -> None:
        latency_ms = (time.perf_counter() - self.t0) * 1000.0
        if self.timer is not None:
            self.timer.cancel()
        self.busy = False
        self.transport.write(raw)
        req = self.request
        assert req is not None
        if timed_out and self.upstream is not None and self.upstream.waiter is self:
            # That connection still owes an answer nobody wants: it cannot be reused.
            self.upstream.waiter = None
            self.upstream.transport.close()
        limit = self.s.max_record_bytes
        method, target = req.line.split(b" ", 2)[:2]
        rid = req.header(b"x-request-id")
        self.s.on_exchange(Exchange(
            self.ts_ns, method.decode("latin-1"), target.decode("latin-1"), req.body[:limit],
            len(req.body) > limit, status, body[:limit], len(body) > limit, latency_ms, error,
            timed_out, rid.decode("latin-1") if rid else None))
        if not self.keep_client or status is None:
            self.transport.close()
        elif self.buf and not self.transport.is_closing():
            self._next()  # a pipelined request already waiting

    def connection_lost(self, exc: Exception | None) -> None:
        # A request already forwarded still gets its answer (or its timeout) recorded: the
        # server did the work even if the client stopped waiting.
        self.buf.clear()


def _error_response(status: int, message: str) -> bytes:
    reason = {502: b"Bad Gateway", 504: b"Gateway Timeout"}[status]
    body = json.dumps({"error": message}).encode()
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (status, reason, len(body))) + body
