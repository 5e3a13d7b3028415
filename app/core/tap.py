"""The recording reverse proxy behind ``probescope tap``. Thread: the proxy runs an asyncio loop
on its own thread; a decoder thread turns exchanges into captures for the bus and recorder.

Requests are forwarded with their bytes unchanged (only ``Host`` and hop-by-hop headers are
rewritten, and a chunked request body is sent with a Content-Length); responses go back to the
client exactly as the upstream sent them, byte for byte, status line and headers included.
Recording happens after the response is on its way: the hot path only copies bytes and keeps a
prefix of each body (``max_record_bytes``); a longer body is forwarded whole and recorded cut,
with ``truncated=True``.

Why not httpx upstream: httpx re-parses and re-encodes every message and costs ~0.3 ms a
request in this process; a pooled keep-alive connection on asyncio streams that copies bytes
keeps the tap's own cost near a tenth of a 1 ms model (see docs/PERFORMANCE.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from app.core.bus import Bus
from app.core.recorder import Recorder
from app.core.store import Store
from app.core.tap_decode import Exchange, to_capture

log = logging.getLogger(__name__)

DEFAULT_MAX_RECORD_BYTES = 1 << 20
MAX_HEADER_BYTES = 64 * 1024
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                         b"upgrade", b"transfer-encoding", b"expect", b"host",
                         b"content-length"})


class TapError(Exception):
    """The tap cannot start as configured; the message says what to change."""


class _Closed(Exception):
    """The upstream connection closed before a complete response."""


@dataclass(frozen=True, slots=True)
class Upstream:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Upstream:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TapError(f"--upstream '{url}' must be http://HOST:PORT or https://HOST:PORT")
        if parts.path not in ("", "/") or parts.query:
            raise TapError(f"--upstream '{url}' must not have a path; clients keep theirs")
        return cls(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                   parts.scheme == "https")

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"


def _headers(block: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    lines = block.split(b"\r\n")
    out = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            out.append((name.strip(), value.strip()))
    return lines[0], out


def _get(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


async def _read_chunked(reader: asyncio.StreamReader, raw: bytearray | None) -> bytes:
    """Read a chunked body; returns the decoded body and appends the wire bytes to ``raw``."""
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        if raw is not None:
            raw += line
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while True:  # trailers, then the empty line
                trailer = await reader.readuntil(b"\r\n")
                if raw is not None:
                    raw += trailer
                if trailer == b"\r\n":
                    return bytes(body)
        chunk = await reader.readexactly(size + 2)
        if raw is not None:
            raw += chunk
        body += chunk[:-2]


class Tap:
    def __init__(self, upstream_url: str, db_path: str | Path, *, host: str = "127.0.0.1",
                 port: int = 9000, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                 timeout_s: float = 30.0) -> None:
        self.upstream = Upstream.parse(upstream_url)
        self.host, self.port = host, port
        self.max_record_bytes = max_record_bytes
        self.timeout_s = timeout_s
        self.db_path = Path(db_path)
        Store(self.db_path).close()  # fail now, on the caller's thread, if the path is bad
        self.bus = Bus()
        self.recorder = Recorder(self.bus, lambda: Store(self.db_path))
        self.forwarded = 0
        self.recorded = 0
        self._exchanges: queue.SimpleQueue[Exchange | None] = queue.SimpleQueue()
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._ssl = ssl.create_default_context() if self.upstream.tls else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle (controlling thread) ---------------------------------------------------

    def start(self) -> None:
        self.recorder.start()
        for target, name in ((self._serve, "tap proxy"), (self._decode, "tap decoder")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self._ready.wait(10)
        if self._error is not None:
            self.close()
            raise TapError(f"cannot listen on {self.host}:{self.port}: {self._error}")

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    def close(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._exchanges.put(None)
        for t in self._threads:
            t.join(10)
        self.recorder.stop()

    # -- decoder thread -------------------------------------------------------------------

    def _decode(self) -> None:
        while (x := self._exchanges.get()) is not None:
            try:
                decoded = to_capture(x, self.upstream.hostport)
            except Exception:  # a decoding bug must not stop the recording of later requests
                log.exception("tap could not decode a %s %s exchange", x.method, x.path)
                continue
            if decoded is not None:
                capture, samples = decoded
                self.bus.put_many([*samples, capture])
                self.recorded += 1

    # -- proxy thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._client, self.host, self.port,
                                     limit=MAX_HEADER_BYTES))
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for _, w in self._idle:
                w.close()
            loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        except (asyncio.LimitOverrunError, ValueError):
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Proxy one request; returns whether the client connection stays open."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return False  # clean close between requests
        line, headers = _headers(head[:-4])
        method, target, version = line.split(b" ", 2)
        if (_get(headers, b"expect") or b"").lower() == b"100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        te = (_get(headers, b"transfer-encoding") or b"").lower()
        if b"chunked" in te:
            body = await _read_chunked(reader, None)
        else:
            body = await reader.readexactly(int(_get(headers, b"content-length") or 0))
        keep = [b"%s: %s" % kv for kv in headers if kv[0].lower() not in _HOP_BY_HOP]
        out_head = b"\r\n".join([
            b"%s %s HTTP/1.1" % (method, target),
            b"Host: " + self.upstream.hostport.encode(), *keep,
            b"Content-Length: %d" % len(body)]) + b"\r\n\r\n"
        conn_hdr = (_get(headers, b"connection") or b"").lower()
        client_keeps = (b"close" not in conn_hdr if version.strip() == b"HTTP/1.1"
                        else b"keep-alive" in conn_hdr)

        ts_ns = time.time_ns()
        t0 = time.perf_counter()
        status: int | None = None
        raw = b""
        resp_body = b""
        error = None
        timed_out = False
        try:
            async with asyncio.timeout(self.timeout_s):
                status, raw, resp_body = await self._exchange(out_head, body, method)
        except TimeoutError:
            timed_out = True
            error = f"upstream {self.upstream.hostport} did not answer within {self.timeout_s:g} s"
            raw = self._error_response(504, error)
        except (OSError, _Closed, asyncio.IncompleteReadError, ValueError) as exc:
            error = f"upstream {self.upstream.hostport}: {exc or type(exc).__name__}"
            raw = self._error_response(502, error)
        latency_ms = (time.perf_counter() - t0) * 1000.0
        writer.write(raw)
        await writer.drain()
        self.forwarded += 1
        limit = self.max_record_bytes
        rid = _get(headers, b"x-request-id")
        self._exchanges.put(Exchange(
            ts_ns, method.decode("latin-1"), target.decode("latin-1"), body[:limit],
            len(body) > limit, status, resp_body[:limit], len(resp_body) > limit, latency_ms,
            error, timed_out, rid.decode("latin-1") if rid else None))
        return client_keeps and status is not None

    @staticmethod
    def _error_response(status: int, message: str) -> bytes:
        reason = {502: b"Bad Gateway", 504: b"Gateway Timeout"}[status]
        body = json.dumps({"error": message}).encode()
        return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n" % (status, reason, len(body))) + body

    async def _exchange(self, head: bytes, body: bytes, method: bytes
                        ) -> tuple[int, bytes, bytes]:
        """Send one request upstream; (status, raw response bytes, decoded body)."""
        for attempt in (0, 1):
            reused = bool(self._idle)
            if reused:
                r, w = self._idle.pop()
            else:
                r, w = await asyncio.open_connection(self.upstream.host, self.upstream.port,
                                                     ssl=self._ssl, limit=MAX_HEADER_BYTES)
            try:
                w.write(head + body if len(body) < 65536 else head)
                if len(body) >= 65536:
                    w.write(body)
                await w.drain()
                status, raw, decoded, keep = await self._response(r, method)
            except (_Closed, ConnectionError, asyncio.IncompleteReadError):
                w.close()
                # A pooled keep-alive connection the server had already closed: one fresh try.
                # Only then, because a request may not be idempotent.
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                w.close()
                raise
            if keep:
                self._idle.append((r, w))
            else:
                w.close()
            return status, raw, decoded
        raise _Closed("no answer")

    async def _response(self, r: asyncio.StreamReader, method: bytes
                        ) -> tuple[int, bytes, bytes, bool]:
        raw = bytearray()
        while True:
            try:
                head = await r.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial and not raw:
                    raise _Closed("closed before answering") from None
                raise
            raw += head
            line, headers = _headers(head[:-4])
            status = int(line.split(b" ", 2)[1])
            if status >= 200 or status == 101:
                break  # 1xx interim answers pass through to the client as they are
        conn = (_get(headers, b"connection") or b"").lower()
        keep = b"close" not in conn and line.startswith(b"HTTP/1.1")
        if method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
            return status, bytes(raw), b"", keep
        if b"chunked" in (_get(headers, b"transfer-encoding") or b"").lower():
            decoded = await _read_chunked(r, raw)
        elif (length := _get(headers, b"content-length")) is not None:
            decoded = await r.readexactly(int(length))
            raw += decoded
        else:
            decoded = await r.read()  # delimited by the server closing the connection
            raw += decoded
            keep = False
        return status, bytes(raw), decoded, keep

