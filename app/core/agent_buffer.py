"""The agent's bounded on-disk buffer: samples and captures numbered by sequence. Thread: one
writer (the agent's recorder thread) and any number of readers, each with its own connection.

Every item gets a sequence number from SQLite's AUTOINCREMENT, so numbers only grow, even
after the oldest rows are trimmed to keep the buffer bounded. The dashboard asks for "all items
after N", and the agent never has to know what the dashboard committed. Items trimmed before a
dashboard pulled them are counted (``dropped``) and reported with every page, so a gap is never
silent. The buffer duck-types ``Store.write_batch``/``close`` so the core ``Recorder`` drives it.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.core import codec
from app.core.domain import Capture, CaptureStatus, Sample, StoreError, not_sqlite
from app.core.log_throttle import LogThrottle

log = logging.getLogger(__name__)

DEFAULT_MAX_ITEMS = 1_000_000
MAX_PAGE_BYTES = 8 << 20  # captures per page, so a page of big tensors stays small
# Once full, the buffer trims at every write: the steady state of a ring, not news each time.
# Said when it starts, then once in this long with a count (a line a write was ~10 a second).
TRIM_LOG_EVERY_S = 600.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,          -- 's' sample, 'c' capture
    ts_ns INTEGER NOT NULL,
    metric TEXT,
    value REAL,
    capture TEXT                 -- JSON (tensors as base64 codec blobs) for kind 'c'
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class BufferError(Exception):
    """The agent's buffer file cannot be opened or written; the message says why."""


@dataclass(frozen=True, slots=True)
class Page:
    """Items after a sequence number: samples as (seq, ts_ns, metric, value), captures as
    (seq, json dict). ``first_seq``/``last_seq`` describe the whole buffer."""

    samples: list[tuple[int, int, str, float]]
    captures: list[tuple[int, dict]]
    next_seq: int  # the highest sequence in this page (or the ``after`` asked for, if empty)
    first_seq: int
    last_seq: int
    agent_id: str
    trimmed: int  # items ever trimmed from the buffer before anyone pulled them (upper bound)

    def to_json(self) -> dict:
        return {"agent_id": self.agent_id, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "next_seq": self.next_seq, "trimmed": self.trimmed,
                "samples": self.samples,
                "captures": [{"seq": s, **c} for s, c in self.captures]}


def capture_to_json(c: Capture) -> dict:
    return {
        "ts_ns": c.ts_ns, "latency_ms": c.latency_ms, "status": str(c.status),
        "inputs": base64.b64encode(codec.encode(c.inputs)).decode(),
        "outputs": base64.b64encode(codec.encode(c.outputs)).decode(),
        "request_id": c.request_id, "error": c.error, "label": c.label,
        "prediction": c.prediction, "confidence": c.confidence,
        "model_version": c.model_version, "truncated": c.truncated, "sampled": c.sampled,
    }


def capture_from_json(endpoint: str, d: dict) -> Capture:
    """Rebuild a capture sent by an agent; raises ValueError (or CodecError) on bad input."""
    def opt_str(key: str) -> str | None:
        v = d.get(key)
        return None if v is None else str(v)

    conf = d.get("confidence")
    return Capture(
        endpoint=endpoint, ts_ns=int(d["ts_ns"]), latency_ms=float(d["latency_ms"]),
        status=CaptureStatus(d["status"]),
        inputs=codec.decode(base64.b64decode(d.get("inputs") or "", validate=True)),
        outputs=codec.decode(base64.b64decode(d.get("outputs") or "", validate=True)),
        request_id=opt_str("request_id"), error=opt_str("error"), label=opt_str("label"),
        prediction=opt_str("prediction"), confidence=None if conf is None else float(conf),
        model_version=opt_str("model_version"), truncated=bool(d.get("truncated", False)),
        sampled=bool(d.get("sampled", True)),
    )


class AgentBuffer:
    def __init__(self, path: str | Path, *, max_items: int = DEFAULT_MAX_ITEMS,
                 readonly: bool = False) -> None:
        if max_items <= 0:
            raise BufferError("the buffer must hold at least one item")
        self.path = Path(path)
        self.max_items = max_items
        self._trim_told = LogThrottle(log, every_s=TRIM_LOG_EVERY_S)
        if not_sqlite(self.path):
            raise BufferError(f"{self.path} is not an agent buffer (not an SQLite file); give a "
                              "new file name with --buffer")
        try:
            if readonly:
                self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                            check_same_thread=False)
            else:
                self.conn = sqlite3.connect(self.path, check_same_thread=False)
                tables = {r[0] for r in self.conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                if tables and "meta" not in tables:  # someone else's database: leave it be
                    self.conn.close()
                    raise BufferError(f"{self.path} is an SQLite file but not an agent buffer; "
                                      "give a new file name with --buffer")
                # WAL: the HTTP threads read while the recorder writes. NORMAL sync keeps every
                # committed item across a kill -9 of the agent.
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                with self.conn:
                    self.conn.executescript(_SCHEMA)
                    self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('agent_id', ?)",
                                      [uuid.uuid4().hex])
                    self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('trimmed', '0')")
            self.conn.execute("PRAGMA busy_timeout=5000")
            self.agent_id = self._meta("agent_id")
        except sqlite3.Error as exc:
            raise BufferError(f"cannot open agent buffer {self.path}: {exc}") from exc

    def _meta(self, key: str) -> str:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        if row is None:
            raise BufferError(f"{self.path} is not an agent buffer (no {key})")
        return str(row[0])

    # -- writer side (duck-types Store for the Recorder) ----------------------------------

    def write_batch(self, samples: Sequence[Sample], captures: Sequence[Capture]) -> None:
        """Append in one transaction, then trim the oldest beyond ``max_items``."""
        try:
            with self.conn:
                self.conn.executemany(
                    "INSERT INTO items (kind, ts_ns, metric, value) VALUES ('s', ?, ?, ?)",
                    [(s.ts_ns, s.metric, s.value) for s in samples])
                self.conn.executemany(
                    "INSERT INTO items (kind, ts_ns, capture) VALUES ('c', ?, ?)",
                    [(c.ts_ns, _dumps(capture_to_json(c))) for c in captures])
                self._trim()
        except sqlite3.Error as exc:
            # StoreError, because the Recorder keeps the batch and retries on it.
            raise StoreError(f"cannot write agent buffer {self.path}: {exc}") from exc

    def _trim(self) -> None:
        first, last = self.bounds()
        excess = (last - first + 1) - self.max_items if last else 0
        if excess > 0:
            cut = first + excess - 1
            n = self.conn.execute("DELETE FROM items WHERE seq <= ?", [cut]).rowcount
            self.conn.execute(
                "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT) "
                "WHERE key = 'trimmed'", [n])
            self._trim_told("agent buffer full (--max-items %d): the oldest items are trimmed "
                            "as new ones come; a dashboard that has not pulled them loses "
                            "them, and says how many", self.max_items)

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a write waits for another writer's lock before it fails."""
        self.conn.execute(f"PRAGMA busy_timeout={max(0, int(seconds * 1000))}")

    def close(self) -> None:
        self._trim_told.flush()  # how many trims went unsaid since the last line
        self.conn.close()

    # -- reader side ----------------------------------------------------------------------

    def bounds(self) -> tuple[int, int]:
        """(first, last) sequence held; (0, 0) when empty."""
        first, last = self.conn.execute("SELECT min(seq), max(seq) FROM items").fetchone()
        return (int(first or 0), int(last or 0))

    def page(self, after: int, limit: int = 5000, max_bytes: int = MAX_PAGE_BYTES) -> Page:
        """Items after ``after``, oldest first: at most ``limit`` of them, and no more captures
        than fit in about ``max_bytes`` (at least one item, so a page always moves on)."""
        cursor = self.conn.execute(
            "SELECT seq, kind, ts_ns, metric, value, capture FROM items WHERE seq > ? "
            "ORDER BY seq LIMIT ?", [after, limit])
        samples: list[tuple[int, int, str, float]] = []
        captures: list[tuple[int, dict]] = []
        size, next_seq = 0, after
        for seq, kind, ts, metric, value, cap in cursor:
            if kind == "s":
                samples.append((seq, ts, metric, value))
            else:
                if size and size + len(cap) > max_bytes:
                    break  # big tensors: the rest waits for the next page
                size += len(cap)
                captures.append((seq, json.loads(cap)))
            next_seq = seq
        first, last = self.bounds()
        return Page(samples, captures, next_seq, first, last, self.agent_id,
                    int(self._meta("trimmed")))


def _dumps(d: dict) -> str:
    return json.dumps(d, separators=(",", ":"))
