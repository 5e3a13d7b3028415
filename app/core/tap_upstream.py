"""A client connection's kept-alive connection to the model server (``UpstreamConnection``):
connecting, sending a request on, reading the answer while its bytes go on to the client, and
the call's clock (``stamp``), which starts with the send that completes a request. Thread: its
client session's (tap_session.py), whose ``close`` shuts it down from any thread.

Apart from tap_session.py, which deals with the client: the two sides of a call meet only in
``read_answer``, which passes the answer on to the client as it arrives (``ClientEnd``).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from typing import Protocol

from app.core.tap_http import BadMessage, BodyReader, Message, answer_framing, parse_head
from app.core.tap_settings import ProxySettings


class UpstreamFailed(Exception):
    """The upstream gave no usable answer; ``got_bytes``: it had started one."""

    def __init__(self, reason: str, got_bytes: bool) -> None:
        super().__init__(reason)
        self.got_bytes = got_bytes


class ClientEnd(Protocol):
    """Where an answer's bytes go as they arrive: the client's session (``ClientSession``)."""

    forwarded: int  # bytes of this request's final answer already with the client

    def pass_on(self, data: bytes | memoryview) -> None: ...


class UpstreamConnection:
    """One client connection's own keep-alive connection upstream (a new one is set up when
    there is none, or the kept one was found closed), and the clock of its current call."""

    def __init__(self, settings: ProxySettings) -> None:
        self.s = settings
        self.sock: socket.socket | None = None
        # Set by the session's close before it shuts a socket: an answer lost from then on
        # was cut by the stop.
        self.closed = False
        self.ts_ns, self.t0 = 0, 0.0  # when the call's clock started (``stamp``)

    def stamp(self) -> None:
        """Start the call's clock. The recorded latency runs from just before the send that
        hands the request's last bytes to the kernel (a new upstream connection is set up
        first) to the end of the answer: the server's part of the call. Started after that
        send returned, it missed whatever the server did while this thread waited to run
        again (on a busy core, all of it: 0.05 ms recorded for a 1.7 ms call), or while a
        large send waited for the server to read."""
        self.ts_ns, self.t0 = time.time_ns(), time.perf_counter()

    def send(self, data: bytes | bytearray, *, last: bool) -> bool:
        """Send on the kept connection, or a new one; True when it was a kept one. ``last``:
        ``data`` ends the request, so the call's clock starts with this send."""
        sock = self.sock
        reused = sock is not None
        if sock is None:
            sock = self._connect_open()
        try:
            if last:
                self.stamp()
            sock.sendall(data)
        except OSError as exc:
            if not reused or self.closed:
                raise UpstreamFailed(self._lost(exc), got_bytes=False) from None
            self.drop()  # closed by the server while idle: one fresh connection
            sock = self._connect_open()
            try:
                if last:
                    self.stamp()
                sock.sendall(data)
            except OSError as exc2:
                raise UpstreamFailed(self._lost(exc2), got_bytes=False) from None
            return False
        return reused

    def send_part(self, data: bytes) -> None:
        try:
            self._open_sock().sendall(data)
        except OSError as exc:
            raise UpstreamFailed(self._lost(exc), got_bytes=False) from None

    def _open_sock(self) -> socket.socket:
        """The connection, or UpstreamFailed once the session's ``close`` (another thread,
        when the tap stops) has taken it away: the call then ends as a recorded failure, not
        an internal error."""
        sock = self.sock
        if sock is None or self.closed:
            raise UpstreamFailed(self._lost(), got_bytes=False)
        return sock

    def _connect_open(self) -> socket.socket:
        """A new connection, kept as ``sock``; closed again at once if the session was
        closed meanwhile, whose ``close`` may have looked for a socket before this one was
        set, so that it is not left open."""
        if self.closed:
            raise UpstreamFailed(self._lost(), got_bytes=False)
        sock = self._connect()
        self.sock = sock
        if self.closed:
            with contextlib.suppress(OSError):
                sock.close()
            self.sock = None
            raise UpstreamFailed(self._lost(), got_bytes=False)
        return sock

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

    def drop(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def read_answer(self, method: bytes, keep: int, client: ClientEnd
                    ) -> tuple[int, Message, BodyReader, bool, bool]:
        """The final answer: status, head, its body's reader (the first ``keep`` bytes of
        the body, de-chunked, and its size), whether the connection can carry the next
        request, and whether the answer ends its connection (the client, reading those very
        bytes, expects its own to close).

        Bytes go on to the client as they arrive once the answer's head has proved to be
        HTTP (``client.forwarded`` counts them), up to the answer's end: the client does not
        wait for the recording, and bytes a server sends after its answer do not reach it.
        Only the head and the kept prefix stay in memory. Interim (1xx) answers pass through
        the same way. Raises TimeoutError past the deadline."""
        sock = self._open_sock()
        deadline = self.t0 + self.s.timeout_s
        buf = bytearray()  # the head as it arrives, and what came with it
        eof = False
        while True:
            try:
                head = parse_head(buf)
                if head is None:
                    if eof:
                        raise UpstreamFailed(self._lost(), got_bytes=bool(buf))
                    data = self._recv(sock, deadline, bool(buf))
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
                client.pass_on(memoryview(buf)[:head.end])
                data = bytes(buf[head.end:])
                while True:
                    used = reader.feed(data)
                    if used:
                        client.pass_on(data[:used] if used < len(data) else data)
                    if reader.done:
                        break
                    if eof:
                        raise UpstreamFailed(self._lost(), got_bytes=True)
                    data = self._recv(sock, deadline, True)
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
                client.forwarded = 0  # counts the final answer's bytes only
                continue
            says_close = (eof or not head.line.startswith(b"HTTP/1.1")
                          or b"close" in (head.header(b"connection") or b"").lower())
            keep_conn = not says_close and status != 101 and not extra
            return status, head, reader, keep_conn, says_close

    def _recv(self, sock: socket.socket, deadline: float, got_bytes: bool) -> bytes:
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
