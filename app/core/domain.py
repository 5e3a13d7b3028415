"""The nouns every layer shares: endpoint URIs, samples and captures. Immutable; any thread."""

from __future__ import annotations

import enum
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import numpy as np

# Query keys that would put a secret into a URI, the store or a log. Refused at parse time,
# compared with '-' read as '_' ("x-api-key"). Besides these names, any key that ends in
# "_token" or holds "password", "secret" or "api_key" (our own token_env and token_file name
# where a token is, never the token itself).
_SECRET_KEYS = frozenset({
    "token", "password", "passwd", "pwd", "secret", "api_key", "apikey", "x_api_key", "key",
    "auth", "authorization", "bearer", "jwt", "sig", "credentials", "session", "sessionid"})
_SECRET_PARTS = ("password", "secret", "api_key", "apikey")


def _is_secret_key(key: str) -> bool:
    k = key.lower().replace("-", "_")
    return k in _SECRET_KEYS or k.endswith("_token") or any(p in k for p in _SECRET_PARTS)


class UriError(ValueError):
    """An endpoint URI that cannot be understood; the message says what a valid one looks like."""


class StoreError(Exception):
    """The workspace file cannot be opened, read or written; the message says why. Defined
    here, not in ``store``, so the edge agent's buffer can raise it without importing
    sqlite-utils (which imports pandas: 0.3 s and 60 MB on an edge box)."""


# Nanosecond times as SQLite keeps them: 64-bit integers (1677-09-21 to 2262-04-11).
OLDEST_NS, NEWEST_NS = -(2**63), 2**63 - 1
_SQLITE_NOTADB = 26  # SQLite's result code for "file is not a database"
_SQLITE_MIN_BYTES = 512  # the smallest page: a database file is at least one


def utc_text(ts_ns: int) -> str:
    """A time as incident write-ups give it: to the second, in UTC, saying so."""
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def local_text(ts_ns: int) -> str:
    """A time as the person at this machine reads it: to the second, in local time."""
    return datetime.fromtimestamp(ts_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def figure_text(value: float, significant: int = 3) -> str:
    """``value`` to ``significant`` figures without an exponent: a per-row latency of
    71 ns reads 0.0000712 ms, not 0.0001 (four decimals) or 7.12e-05."""
    if abs(value) >= 10 ** significant:
        return f"{value:.0f}"
    return np.format_float_positional(value, precision=significant, unique=False,
                                      fractional=False, trim="-")


def not_a_file(path: Path, what: str) -> str | None:
    """Why ``path`` cannot be read as ``what`` (e.g. "model file"), or None when it can."""
    if path.is_dir():
        return f"{path} is a folder, not a {what}; give the file inside it"
    if not path.is_file():
        return f"{what} {path} does not exist"
    return None


def not_sqlite(path: Path) -> bool:
    """Whether ``path`` holds bytes that are not an SQLite database. Asked of SQLite itself,
    read-only: opening and closing the file with plain ``open()`` would drop every POSIX lock
    this process holds on it (a live workspace's recorder, say), and another process closing
    its connection would then take itself for the last one and delete the live WAL. SQLite's
    own connections share their file handles and do not drop each other's locks."""
    try:
        if not path.is_file():
            return False  # SQLite's own error says it better
        size = path.stat().st_size
        if size == 0:
            return False  # a new database
        if size < _SQLITE_MIN_BYTES:
            return True  # no database is smaller than a page (SQLite takes 1 byte as empty)
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except (OSError, sqlite3.Error):
        return False
    try:
        conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        return getattr(exc, "sqlite_errorcode", None) == _SQLITE_NOTADB
    finally:
        conn.close()
    return False


@dataclass(frozen=True, slots=True)
class EndpointUri:
    """One string that names any endpoint: ``scheme:target?key=value``.

    ``onnx:assets/demo/m.onnx?provider=cpu``, ``v2+http://host:8000/models/m``, ``system:``.
    """

    scheme: str
    target: str
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> EndpointUri:
        text = text.strip()
        scheme, sep, rest = text.partition(":")
        if not sep or not scheme or not scheme.replace("+", "").replace("-", "").isalnum():
            raise UriError(
                f"'{text}' is not an endpoint URI; expected SCHEME:TARGET, "
                "for example onnx:model.onnx?provider=cpu or system:"
            )
        target, _, query = rest.partition("?")
        params = tuple(parse_qsl(query, keep_blank_values=True))
        secret = sorted({k for k, _ in params if _is_secret_key(k)})
        if secret:
            raise UriError(
                f"secrets do not belong in a URI (found {', '.join(secret)}); "
                "pass them with an environment variable or a token file"
            )
        return cls(scheme.lower(), target, params)

    def param(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.params:
            if k == key:
                return v
        return default

    def __str__(self) -> str:
        # Paths stay readable ("payload=assets/demo/x.csv"): this string is the endpoint's name
        # in the store, the window and reports, not only something to send over the wire.
        query = f"?{urlencode(self.params, safe='/:,')}" if self.params else ""
        return f"{self.scheme}:{self.target}{query}"


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured value of one metric of one endpoint at one instant."""

    endpoint: str
    ts_ns: int
    metric: str
    value: float


class CaptureStatus(enum.StrEnum):
    """Why a capture is (or is not) a failure. Anything but OK is a failure worth replaying."""

    OK = "ok"
    ERROR = "error"  # the runtime or the server raised
    TIMEOUT = "timeout"
    NON_FINITE = "non_finite"  # NaN or inf in the output
    SLOW = "slow"  # latency above the endpoint's SLO
    MISMATCH = "mismatch"  # prediction disagrees with the ground-truth label
    LOW_CONFIDENCE = "low_confidence"


_DTYPE_CODES: dict[np.dtype, str] = {}


@dataclass(frozen=True, slots=True)
class TensorBlob:
    """A tensor kept as exact bytes so a replay is bit-for-bit."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: bytes

    @classmethod
    def from_array(cls, name: str, array: np.ndarray) -> TensorBlob:
        dtype = array.dtype
        # dtype.str builds a new string on every call; on a probe's hot path that adds up.
        code = _DTYPE_CODES.get(dtype)
        if code is None:
            code = _DTYPE_CODES.setdefault(dtype, dtype.str)
        return cls(name, code, array.shape, array.tobytes())

    def to_array(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype=np.dtype(self.dtype)).reshape(self.shape)


@dataclass(frozen=True, slots=True)
class Capture:
    """One recorded request: what went in, what came out, how long it took, how it ended."""

    endpoint: str
    ts_ns: int
    latency_ms: float
    status: CaptureStatus
    inputs: tuple[TensorBlob, ...] = ()
    outputs: tuple[TensorBlob, ...] = ()
    request_id: str | None = None
    error: str | None = None
    label: str | None = None
    prediction: str | None = None
    confidence: float | None = None
    model_version: str | None = None
    truncated: bool = False
    # Part of the random sample of requests (``capture=``), as opposed to a failure kept only
    # because it failed: drift compares only these, or failures would tilt the sample.
    sampled: bool = True

    @property
    def failed(self) -> bool:
        return self.status is not CaptureStatus.OK


@dataclass(frozen=True, slots=True)
class Batch:
    """What the recorder committed in one transaction; handed to listeners after the commit."""

    samples: tuple[Sample, ...] = ()
    captures: tuple[Capture, ...] = ()
    dropped: dict[str, int] = field(default_factory=dict)


class Metric:
    """Names of the series every probe of a kind emits; plots and summaries read these."""

    LATENCY_MS = "latency_ms"  # one per request, failed ones included
    FAILURE = "failure"  # 1.0 per failed request (any CaptureStatus but OK)
    RSS_MB = "rss_mb"
    DROPPED = "probescope.dropped"  # items refused by a full bus or an overflowing backlog
    UP = "up"  # remote endpoints: 1 while the server answers, 0 while down (Prometheus's name)
