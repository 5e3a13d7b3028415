"""HTTP plumbing the remote probes share: a pooled httpx client with timeouts, a response-size
cap, retries with backoff for idempotent reads, and errors that say what went wrong.

Errors (all carry a one-line message meant for a person)::

    RemoteError
     ├── Unreachable   no connection, or the connection died before the answer: server down
     ├── TimedOut      connected, but no full answer within the timeout
     └── BadResponse   an answer we cannot use: HTTP error status, not JSON, too large

Thread: one HttpClient per probe, used from one thread at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.core.domain import EndpointUri
from probes.base import ProbeError, float_param, int_param
from probes.http_deadline import deadline, deadline_transport

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_CONNECT_TIMEOUT_S = 2.0
DEFAULT_MAX_MB = 16.0
DEFAULT_RETRIES = 2
ATTACH_TIMEOUT_S = 2.0  # per request while attaching, so a hung server cannot stall the caller
_SNIPPET = 60


class RemoteError(Exception):
    """A request to a remote endpoint that did not give a usable answer."""


class Unreachable(RemoteError):
    """The server could not be reached, or dropped the connection: treat it as down."""


class TimedOut(RemoteError):
    """The server accepted the connection but did not answer in time."""


class BadResponse(RemoteError):
    """The server answered, but not with something we can use."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class CredentialsRefused(BadResponse):
    """HTTP 401 or 403: no retry will help until the user gives the right token."""


HTTP_PARAMS = frozenset({"timeout_s", "connect_timeout_s", "max_mb", "retries", "token_env"})


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Per-endpoint HTTP settings, read from the URI (``?timeout_s=&connect_timeout_s=&max_mb=
    &retries=&token_env=``). The token itself never appears in the URI: only the name of the
    environment variable that holds it."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    max_bytes: int = int(DEFAULT_MAX_MB * 2**20)
    retries: int = DEFAULT_RETRIES
    token_env: str | None = None

    @classmethod
    def from_uri(cls, uri: EndpointUri) -> HttpSettings:
        token_env = uri.param("token_env")
        if token_env is not None and not os.environ.get(token_env):
            raise ProbeError(f"environment variable {token_env} (named by ?token_env=) is not "
                             "set; export the bearer token there")
        return cls(
            timeout_s=float_param(uri, "timeout_s", DEFAULT_TIMEOUT_S, positive=True),
            connect_timeout_s=float_param(uri, "connect_timeout_s", DEFAULT_CONNECT_TIMEOUT_S,
                                          positive=True),
            max_bytes=int(float_param(uri, "max_mb", DEFAULT_MAX_MB, positive=True) * 2**20),
            retries=int_param(uri, "retries", DEFAULT_RETRIES, minimum=0) or 0,
            token_env=token_env,
        )


def split_http_target(uri: EndpointUri, example: str) -> tuple[str, str]:
    """``v2+http://host:8000/models/m`` -> (``http://host:8000``, ``/models/m``)."""
    transport = uri.scheme.rpartition("+")[2]
    if transport not in ("http", "https") or not uri.target.startswith("//"):
        raise ProbeError(f"'{uri}' is not a valid endpoint; expected {example}")
    try:
        parts = urlsplit(f"{transport}:{uri.target}")
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise ProbeError(f"'{uri}' is not a valid URL ({exc}); expected {example}") from None
    if not parts.hostname:
        raise ProbeError(f"'{uri}' names no host; expected {example}")
    if parts.username or parts.password:
        raise ProbeError("credentials do not belong in a URI; put a bearer token in an "
                         "environment variable and name it with ?token_env=VAR")
    try:
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        raise ProbeError(f"'{uri}' has an invalid port; expected {example}") from None
    return f"{transport}://{parts.netloc}", parts.path.rstrip("/")


def _hex(code: int, width: int) -> str:
    """Hex digits matching either case: servers differ (``\\u003d``, ``\\u003D``)."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{code:0{width}x}")


def _spellings(char: str) -> str:
    """A regex for one character of a secret as a server may write it back: itself, a JSON
    escape (``\\u003d``, ``\\/``) or a URL escape (``%3D``)."""
    units = char.encode("utf-16-be")  # JSON escapes a character beyond U+FFFF as two
    ways = [re.escape(char),
            "".join(r"\\u" + _hex(int.from_bytes(units[i:i + 2]), 4)
                    for i in range(0, len(units), 2)),
            "".join("%" + _hex(b, 2) for b in char.encode())]
    if char in '"\\/':
        ways.append(re.escape("\\" + char))
    return f"(?:{'|'.join(ways)})"


class Redactor:
    """Masks secrets in what a server sent back. A server that echoes a request's headers
    may escape them (Gson writes ``=`` as ``\\u003d``), and decoding the JSON would then
    rebuild the secret, so the bytes are searched for every spelling, and decoded text is
    masked again as well."""

    def __init__(self, secrets: Iterable[str], mask: str = "[token]") -> None:
        # Longest first: one secret may contain another (a header value and its credential).
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.mask = mask
        self._raw = [s.encode() for s in self.secrets]
        pattern = "|".join("".join(_spellings(c) for c in s) for s in self.secrets)
        self._bytes_re = re.compile(pattern.encode()) if pattern else None
        self._text_re = re.compile(pattern) if pattern else None

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def bytes(self, data: bytes) -> bytes:
        if self._bytes_re is None:
            return data
        for raw in self._raw:
            if raw in data:
                data = data.replace(raw, self.mask.encode())
        if b"\\" in data or b"%" in data:  # only then can an escaped spelling be there
            data = self._bytes_re.sub(self.mask.encode(), data)
        return data

    def text(self, text: str) -> str:
        if self._text_re is None:
            return text
        for secret in self.secrets:
            text = text.replace(secret, self.mask)
        if "\\" in text or "%" in text:
            text = self._text_re.sub(self.mask, text)
        return text


NO_SECRETS = Redactor(())


class TooDeep(ValueError):
    """JSON nested deeper than the parser can follow."""


def loads(body: bytes | str) -> Any:
    """JSON from a server; ValueError for anything that is not. The parser reports deep
    nesting (``[[[[…]]]]``) as RecursionError, which no caller would expect."""
    try:
        return json.loads(body)
    except RecursionError:
        raise TooDeep("nested too deeply to read") from None


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int
    body: bytes
    elapsed_ms: float  # wall time from sending the request to the last byte of the answer
    content_type: str
    # Masks the client's token in text taken from the body (see Redactor).
    redact: Redactor = NO_SECRETS

    def json(self) -> Any:
        try:
            return loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            what = ("JSON nested too deeply to read" if isinstance(exc, TooDeep)
                    else "something that is not JSON")
            raise BadResponse(f"answered with {what}: {self.redact.text(snippet(self.body))!r}",
                              self.status_code) from None

    def error_text(self) -> str:
        """The server's own words for an error status, in one line."""
        try:
            doc = loads(self.body)
        except (ValueError, UnicodeDecodeError):
            doc = None
        if isinstance(doc, dict):
            for field in ("error", "message", "detail"):
                if doc.get(field):
                    return self.redact.text(one_line(str(doc[field])))
        return self.redact.text(snippet(self.body)) or "(empty body)"


def one_line(text: str, limit: int = 300) -> str:
    """A server's words for a message: one line, cut at ``limit``, and characters that are
    not printable escaped (a terminal escape sequence in garbage must not reach a terminal
    or the window as itself)."""
    text = " ".join(text.split())
    if not text.isprintable():
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def snippet(body: bytes) -> str:
    return one_line(body[:_SNIPPET * 4].decode("utf-8", "replace"), _SNIPPET)


class Backoff:
    """Exponential delays between reconnection attempts: 0.25 s, 0.5 s ... capped."""

    def __init__(self, first_s: float = 0.25, max_s: float = 5.0, factor: float = 2.0) -> None:
        self.first_s, self.max_s, self.factor = first_s, max_s, factor
        self._next_s = first_s

    def next(self) -> float:
        delay = self._next_s
        self._next_s = min(self.max_s, self._next_s * self.factor)
        return delay

    def reset(self) -> None:
        self._next_s = self.first_s


class HttpClient:
    """Keeps connections to one server open between requests (a probe sends many)."""

    def __init__(self, base_url: str, settings: HttpSettings) -> None:
        self.base_url = base_url
        self.settings = settings
        headers = {"user-agent": "probescope"}
        token = ""
        if settings.token_env:
            token = os.environ.get(settings.token_env, "")
            headers["authorization"] = f"Bearer {token}"
        # A server that echoes the request's headers (in an error, say) must not put our
        # token into a message, a log, the store or a report.
        self.redactor = Redactor([token])
        self._client = httpx.Client(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
            transport=deadline_transport(httpx.Limits(max_connections=4,
                                                      max_keepalive_connections=2)),
            follow_redirects=False,
        )
        self._timeout_s = settings.timeout_s

    @contextlib.contextmanager
    def quick(self, timeout_s: float = ATTACH_TIMEOUT_S) -> Iterator[None]:
        """Within the block, no request waits longer than ``timeout_s`` (attach-time checks)."""
        previous = self._timeout_s
        self._timeout_s = min(previous, timeout_s)
        try:
            yield
        finally:
            self._timeout_s = previous

    def redact(self, text: str) -> str:
        """``text`` (built from an answer) with our token masked."""
        return self.redactor.text(text)

    def request(self, method: str, path: str, *, content: bytes | None = None,
                content_type: str = "application/json") -> Answer:
        """One request; the body is read in chunks and refused past the size cap.

        ``timeout_s`` is a deadline for the whole exchange, connect to last byte: httpx's
        timeouts are per read, so a server that trickles its answer, head or body, a byte
        at a time would otherwise hold the probe forever (``http_deadline``)."""
        headers = {"content-type": content_type} if content is not None else None
        url = f"{self.base_url}{path}"
        limit = self.settings.max_bytes
        timeout_s = self._timeout_s
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s,
                                                       self.settings.connect_timeout_s))
        t0 = time.perf_counter_ns()
        try:
            with deadline(timeout_s), self._client.stream(
                    method, path, content=content, headers=headers, timeout=timeout) as r:
                declared = r.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise _too_large(url, limit)
                chunks: list[bytes] = []
                size = 0
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(url, limit)
                    chunks.append(chunk)
                elapsed_ms = (time.perf_counter_ns() - t0) / 1e6
                answer = Answer(r.status_code, self.redactor.bytes(b"".join(chunks)),
                                elapsed_ms, r.headers.get("content-type", ""), self.redactor)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Unreachable(f"cannot connect to {self.base_url}: {_reason(exc)}") from None
        except httpx.TimeoutException:
            raise TimedOut(f"{method} {url}: no answer within {timeout_s:g} s "
                           "(raise ?timeout_s= if the model is slow)") from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise Unreachable(f"{method} {url}: connection lost: {_reason(exc)}") from None
        except httpx.HTTPError as exc:
            raise BadResponse(f"{method} {url}: {_reason(exc)}") from None
        if answer.status_code in (401, 403):
            raise CredentialsRefused(
                f"server at {self.base_url} refused our credentials: HTTP {answer.status_code}: "
                f"{answer.error_text()}; " + (
                    f"check the token in ${self.settings.token_env}" if self.settings.token_env
                    else "give its token with ?token_env=NAME (the token in that environment "
                         "variable)"), answer.status_code)
        return answer

    def get(self, path: str, *, retries: int | None = None,
            stop: threading.Event | None = None) -> Answer:
        """GET (idempotent, so safe to repeat): retried with backoff while the server is
        unreachable or slow, up to ``retries`` more times (default: the URI's ``retries``)."""
        attempts = 1 + (self.settings.retries if retries is None else retries)
        backoff = Backoff(first_s=0.1, max_s=1.0)
        pause = stop if stop is not None else threading.Event()
        for attempt in range(attempts):
            try:
                return self.request("GET", path)
            except (Unreachable, TimedOut):
                if attempt + 1 >= attempts or pause.is_set():
                    raise
                pause.wait(backoff.next())
        raise AssertionError("unreachable")  # the loop returns or raises

    def get_json(self, path: str, *, retries: int | None = None,
                 stop: threading.Event | None = None) -> Any:
        """GET a JSON document (retried as ``get``); BadResponse for an error status."""
        answer = self.get(path, retries=retries, stop=stop)
        if answer.status_code >= 400:
            raise BadResponse(f"GET {self.base_url}{path}: HTTP {answer.status_code}: "
                              f"{answer.error_text()}", answer.status_code)
        return answer.json()

    def close(self) -> None:
        self._client.close()


def _too_large(url: str, limit: int) -> BadResponse:
    return BadResponse(f"answer from {url} is larger than the {limit / 2**20:g} MiB cap; "
                       "raise ?max_mb= if that is expected")


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    if "[Errno 111]" in text or "Connection refused" in text:
        return "connection refused (is the server running?)"
    return one_line(text) if text else type(exc).__name__
