"""HTTP/1.1 messages as bytes, for the tap's proxy (app/core/tap_proxy.py): a message's first
line and headers, where its body ends (found in one pass, chunked bodies de-chunked as they
come), the credential values among a request's headers, and the tap's own error answers. No
sockets, no sessions. Thread: any; a ``BodyReader`` is fed by the one client session that owns
it, everything else is a pure function.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
from dataclasses import dataclass

MAX_HEADER_BYTES = 64 * 1024


# Request headers that carry credentials. The tap forwards them untouched, but an upstream
# that writes one back into its answer (an error echoing the request) must not put it into
# the workspace: its values are masked in the bodies and the error the tap records.
_SECRET_HEADER = re.compile(rb"auth|token|key|secret|passw|cookie|session|credential",
                            re.IGNORECASE)
# Shorter values are not masked: they would match ordinary numbers and words in the bodies
# and corrupt the recorded tensors, and are too short to be secrets worth the name.
MIN_SECRET_CHARS = 8


def header_secrets(headers: list[tuple[bytes, bytes]]) -> list[str]:
    """The credential values among a request's headers: each whole value and, for
    ``Scheme credential`` values, the credential alone (Basic: also the decoded
    ``user:password`` and the password)."""
    found: list[str] = []
    for name, raw in headers:
        if not _SECRET_HEADER.search(name):
            continue
        try:
            value = raw.decode().strip()
        except UnicodeDecodeError:
            value = raw.decode("latin-1").strip()
        parts = [value]
        if name.lower() == b"cookie":
            found += [p for c in value.split(";") if len(p := c.partition("=")[2].strip())
                      >= MIN_SECRET_CHARS]
            continue
        scheme, _, credential = value.partition(" ")
        credential = credential.strip()
        if credential:
            parts.append(credential)
            if scheme.lower() == "basic":
                with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                    pair = base64.b64decode(credential, validate=True).decode()
                    parts += [pair, pair.partition(":")[2]]
        found += [p for p in parts if len(p) >= MIN_SECRET_CHARS]
    return found


class BadMessage(ValueError):
    """Bytes that are not a well-formed HTTP/1.1 message."""


class HeadTooLarge(BadMessage):
    """A message whose first line and headers are longer than ``MAX_HEADER_BYTES``."""


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


def parse_head(buf: bytearray) -> Message | None:
    """The first line and headers at the start of ``buf`` (``end`` where they stop, no body),
    or None while more bytes are needed. Raises HeadTooLarge past ``MAX_HEADER_BYTES``
    (however the head arrived: checked only while its end was missing, a head that came
    whole in one read went through at any size), BadMessage for a line that is no header."""
    head_end = buf.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES + 4)
    if head_end < 0:
        if len(buf) >= MAX_HEADER_BYTES + 4:
            raise HeadTooLarge(f"headers larger than {MAX_HEADER_BYTES // 1024} KiB")
        return None
    lines = bytes(buf[:head_end]).split(b"\r\n")
    headers = []
    for raw in lines[1:]:
        name, sep, value = raw.partition(b":")
        if not sep:
            raise BadMessage("bad header line")
        headers.append((name.strip(), value.strip()))
    return Message(lines[0], headers, head_end + 4, b"")


class BodyReader:
    """Finds where a message's body ends as its bytes arrive, looking at each byte once, so
    a body costs time linear in its size (``parse`` on the whole buffer after each read was
    quadratic for chunked bodies: 64 MB took 28 s through the tap, 0.16 s direct). Keeps
    the first ``keep`` bytes of the body, de-chunked (all of it when ``keep`` is None), and
    counts all of it in ``size``.

    ``framing``: "none" (no body), "length" (``length`` bytes), "chunked", or "eof" (until
    the connection closes: call ``end``)."""

    MAX_LINE = 64 * 1024

    def __init__(self, framing: str, length: int = 0, keep: int | None = None) -> None:
        self.framing = framing
        self.kept = bytearray()
        self.size = 0
        self.done = framing == "none" or (framing == "length" and length == 0)
        self._keep = keep
        self._left = length  # "length": body bytes to come; chunked: the chunk's, or its CRLF
        self._state = "size"  # chunked: the "size" line, chunk "data", its "crlf", "trailer"s
        self._line = bytearray()

    def feed(self, data: bytes | bytearray) -> int:
        """Take this message's bytes from the start of ``data``; returns how many were its
        (the rest is the next message's). Raises BadMessage."""
        if self.done:
            return 0
        if self.framing == "eof":
            self._take(data)
            return len(data)
        if self.framing == "length":
            n = min(len(data), self._left)
            self._take(data[:n] if n < len(data) else data)
            self._left -= n
            self.done = self._left == 0
            return n
        return self._chunked(data)

    def end(self) -> None:
        """The connection closed: that ends an "eof" body (and no other)."""
        if self.framing == "eof":
            self.done = True

    def _take(self, data: bytes | bytearray) -> None:
        self.size += len(data)
        room = len(data) if self._keep is None else self._keep - len(self.kept)
        if room > 0:
            self.kept += data[:room] if room < len(data) else data

    def _chunked(self, data: bytes | bytearray) -> int:
        pos, n = 0, len(data)
        while pos < n and not self.done:
            if self._state in ("data", "crlf"):
                k = min(self._left, n - pos)
                if self._state == "data":
                    self._take(data[pos:pos + k])
                pos += k
                self._left -= k
                if not self._left:
                    self._state, self._left = ("crlf", 2) if self._state == "data" else ("size", 0)
                continue
            eol = data.find(b"\n", pos)
            end = n if eol < 0 else eol + 1
            self._line += data[pos:end]
            pos = end
            if len(self._line) > self.MAX_LINE:
                raise BadMessage("chunk line too long")
            if eol < 0:
                break
            line = bytes(self._line)
            self._line.clear()
            if not line.endswith(b"\r\n"):
                raise BadMessage("bad chunk line")
            if self._state == "trailer":
                self.done = line == b"\r\n"
                continue
            try:
                size = int(line[:-2].split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadMessage("bad chunk size") from None
            if size < 0:
                raise BadMessage("bad chunk size")
            self._state, self._left = ("data", size) if size else ("trailer", 0)
        return pos


def answer_framing(head: Message, method: bytes, status: int) -> tuple[str, int]:
    """How an answer's body ends (``BodyReader``'s ``framing`` and ``length``), from the
    request's method and the answer's status and headers. Raises BadMessage."""
    if method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
        return "none", 0
    if b"chunked" in (head.header(b"transfer-encoding") or b"").lower():
        return "chunked", 0
    length = head.header(b"content-length")
    if length is None:
        return "eof", 0
    try:
        n = int(length)
    except ValueError:
        raise BadMessage("bad Content-Length") from None
    if n < 0:
        raise BadMessage("bad Content-Length")
    return "length", n


_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large",
            431: b"Request Header Fields Too Large", 502: b"Bad Gateway",
            504: b"Gateway Timeout"}


def error_response(status: int, message: str) -> bytes:
    """The tap's own answer, closing the connection: when the upstream gave none (502) or
    none in time (504), or to a request it will not forward (400, 408, 413, 431)."""
    reason = _REASONS[status]
    body = json.dumps({"error": message}).encode()
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (status, reason, len(body))) + body
