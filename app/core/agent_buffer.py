"""The agent's bounded on-disk buffer: samples and captures numbered by sequence. Thread: one
writer (the agent's recorder thread) and any number of readers, each with its own connection.

Every item gets a sequence number from SQLite's AUTOINCREMENT, so numbers only grow, even
after the oldest rows are trimmed to keep the buffer bounded. The dashboard asks for "all items
after N", and the agent never has to know what the dashboard committed. Items trimmed before a
dashboard pulled them are counted (``dropped``) and reported with every page, so a gap is never
silent. The buffer duck-types ``Store.write_batch``/``close`` so the core ``Recorder`` drives it.

A buffer file deleted or moved away under a running agent would take with it, at the agent's
stop, everything written after: the writer looks every ``PATH_CHECK_EVERY_S`` whether the file
at its path is still the one it has open, and if not starts a new buffer there (readers follow
with ``moved``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import sqlite3
import stat
import tempfile
import time
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
# How often the writer (and each reader) looks whether the file at its path is still the one it
# has open: a stat, cheap, but not for every write of a hot recorder. What is written to a
# deleted file before the next look goes with it.
PATH_CHECK_EVERY_S = 2.0
_SIDE_FILES = ("-wal", "-shm")  # SQLite's own, named after the buffer's path
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


def _file_id(path: str | Path) -> tuple[int, int] | None:
    """(device, inode): which file a path names now; None if none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def not_ours(path: Path) -> str | None:
    """What keeps a file put at the buffer's path under a running agent from being taken as
    its buffer (None: nothing): the agent writes production captures there and its dashboards
    read what is in it, so it must be a plain file of this user that others cannot write, not
    something another user of a shared folder slipped in when the old one went."""
    try:
        st = os.lstat(path)
    except OSError:
        return "nothing"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return "something that is not a file"
    if st.st_uid != os.geteuid():
        return f"a file of another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        return "a file others can write"
    return None


def why_not_writable(path: Path) -> str | None:
    """Why no buffer can be made or written at ``path``, in words; None when no reason is
    seen (SQLite's own error then has to do). Asked after a failure: SQLite says only
    "unable to open database file" for a missing folder and a read-only one alike."""
    if path.is_dir():
        return "it is a folder, not a file"
    folder = path.parent
    nearest = next((p for p in (folder, *folder.parents) if os.path.lexists(p)), folder)
    if not nearest.is_dir():
        return f"{nearest} is a file, not a folder"
    if nearest != folder:
        if not os.access(nearest, os.X_OK):  # what is inside cannot even be looked at
            return f"the folder {nearest} cannot be entered by this user"
        return f"there is no folder {folder}"
    if not os.access(folder, os.W_OK | os.X_OK):
        # SQLite makes its -wal and -shm files beside the buffer, so the folder must be
        # writable even for a buffer file that is.
        with contextlib.suppress(OSError):
            if os.statvfs(folder).f_flag & os.ST_RDONLY:
                return f"the folder {folder} is on a read-only file system"
        return f"the folder {folder} is not writable by this user"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return "the file is not writable by this user"
    return None


def _create_schema(conn: sqlite3.Connection) -> None:
    with conn:
        conn.executescript(_SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('agent_id', ?)", [uuid.uuid4().hex])
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('trimmed', '0')")


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
                 readonly: bool = False, check_every_s: float = PATH_CHECK_EVERY_S) -> None:
        if max_items <= 0:
            raise BufferError("the buffer must hold at least one item")
        self.path = Path(path)
        self.max_items = max_items
        self.readonly = readonly
        self.check_every_s = check_every_s
        self._trim_told = LogThrottle(log, every_s=TRIM_LOG_EVERY_S)
        self._next_check_s = time.monotonic() + check_every_s
        self._moved = False
        self._told_stuck: str | None = None  # why no new buffer can be made, as last said
        self.conn: sqlite3.Connection | None = None
        self._open()

    def _open(self) -> None:
        """Connect to the buffer at ``path`` (made there if missing, unless read-only) and
        note which files it is."""
        if not_sqlite(self.path):
            raise BufferError(f"{self.path} is not an agent buffer (not an SQLite file); give a "
                              "new file name with --buffer")
        existed = self.path.exists()
        conn = None
        try:
            if not existed and not self.readonly:
                # Made by us, for this user alone: it holds production inputs and outputs
                # (SQLite gives its -wal and -shm files the same mode).
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            if self.readonly:
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                       check_same_thread=False)
            else:
                conn = sqlite3.connect(self.path, check_same_thread=False)
                tables = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                if tables and "meta" not in tables:  # someone else's database: leave it be
                    raise BufferError(f"{self.path} is an SQLite file but not an agent buffer; "
                                      "give a new file name with --buffer")
            # Set first: a new buffer put in place of a deleted one may be read by the HTTP
            # threads while it switches to WAL, and the switch must wait for them.
            conn.execute("PRAGMA busy_timeout=5000")
            if not self.readonly:
                # WAL: the HTTP threads read while the recorder writes. NORMAL sync keeps every
                # committed item across a kill -9 of the agent.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                _create_schema(conn)
            self.conn = conn
            self.agent_id = self._meta("agent_id")
        except (sqlite3.Error, BufferError, OSError) as exc:
            if conn is not None:
                conn.close()
            self.conn = None
            if isinstance(exc, BufferError):
                raise
            reason = None if self.readonly else why_not_writable(self.path)
            if reason is not None:
                verb = "open" if existed else "create"
                raise BufferError(f"cannot {verb} the agent buffer {self.path}: {reason}; give "
                                  "--buffer a file in a folder this user can write") from None
            raise BufferError(f"cannot open agent buffer {self.path}: {exc}") from exc
        # Which files these are (SQLite has them open now), to notice when one is deleted,
        # moved away or replaced under us.
        self._ids = {suffix: _file_id(f"{self.path}{suffix}") for suffix in ("", *_SIDE_FILES)}

    def _meta(self, key: str) -> str:
        row = self._db().execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        if row is None:
            raise BufferError(f"{self.path} is not an agent buffer (no {key})")
        return str(row[0])

    # -- writer side (duck-types Store for the Recorder) ----------------------------------

    def _db(self) -> sqlite3.Connection:
        if self.conn is None:  # a replaced file let go, and the one now there unusable
            raise BufferError("no buffer is open: the file now at that path cannot be used")
        return self.conn

    def write_batch(self, samples: Sequence[Sample], captures: Sequence[Capture]) -> None:
        """Append in one transaction, then trim the oldest beyond ``max_items``."""
        if self._due() and _file_id(self.path) != self._ids[""]:
            self._start_again()
        try:
            conn = self._db()
            with conn:
                conn.executemany(
                    "INSERT INTO items (kind, ts_ns, metric, value) VALUES ('s', ?, ?, ?)",
                    [(s.ts_ns, s.metric, s.value) for s in samples])
                conn.executemany(
                    "INSERT INTO items (kind, ts_ns, capture) VALUES ('c', ?, ?)",
                    [(c.ts_ns, _dumps(capture_to_json(c))) for c in captures])
                self._trim()
        except (sqlite3.Error, BufferError) as exc:
            # StoreError, because the Recorder keeps the batch and retries on it.
            raise StoreError(f"cannot write agent buffer {self.path}: {exc}") from exc

    # -- a file deleted or replaced under the agent ---------------------------------------

    def _due(self) -> bool:
        now = time.monotonic()
        if now < self._next_check_s:
            return False
        self._next_check_s = now + self.check_every_s
        return True

    def moved(self) -> bool:
        """Whether the file at ``path`` is no longer the one open here: deleted, moved away,
        or another put in its place. Looked at once in ``check_every_s``."""
        if self._due():
            self._moved = _file_id(self.path) != self._ids[""]
        return self._moved

    def _start_again(self) -> None:
        """The writer's file is no longer at ``path``: go on in a new buffer there (or in
        the buffer now there), so that what is recorded from now on is not lost with the old
        file at the agent's stop. While no new one can be made, go on in the old file, which
        still serves the dashboards, and try again at the next look."""
        gone = not os.path.lexists(self.path)
        what = "was deleted or moved away" if gone else "was replaced by another file"
        if not gone and (problem := not_ours(self.path)) is not None:
            self._stuck(f"agent buffer {self.path} was replaced by {problem}; the agent does "
                        "not write production captures into it and goes on in the deleted "
                        "file, whose items are lost when it stops: move that file away and "
                        "the agent starts a new buffer there")
            return
        try:
            fresh = self._make_fresh() if gone else None
        except BufferError as exc:
            self._stuck(f"agent buffer {self.path} {what}, and a new one cannot be made there: "
                        f"{exc}; going on in the deleted file, whose items are lost when the "
                        f"agent stops, and trying again every {self.check_every_s:g} s")
            return
        self._let_go()
        try:
            if fresh is not None:
                os.replace(fresh, self.path)
            self._open()
        except (OSError, BufferError) as exc:
            # The old file is let go: the recorder keeps what comes in memory until a buffer
            # opens (it says so once, and counts what its backlog cannot hold).
            with contextlib.suppress(OSError):
                if fresh is not None:
                    fresh.unlink(missing_ok=True)
            self._stuck(f"agent buffer {self.path} {what}, and the agent cannot go on "
                        f"there: {exc}; trying again every {self.check_every_s:g} s")
            return
        self._told_stuck = None
        self._moved = False
        if gone:
            log.warning("agent buffer %s was deleted or moved away; started a new one there "
                        "(a dashboard pulls it from its start)", self.path)
        else:
            log.warning("agent buffer %s was replaced by another file; going on in that one",
                        self.path)

    def _stuck(self, message: str) -> None:
        """Say why no buffer can be used once, not at every try (a try every few seconds)."""
        if message != self._told_stuck:
            log.error("%s", message)
        self._told_stuck = message

    def _make_fresh(self) -> Path:
        """A new buffer beside ``path``, made whole under a temporary name, so that nothing
        reading ``path`` sees it half made; BufferError says why it cannot be made."""
        try:
            fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".new",
                                        dir=self.path.parent)
        except OSError as exc:
            raise BufferError(why_not_writable(self.path) or exc.strerror or str(exc)) from None
        os.close(fd)  # a file of its own: no SQLite lock of this process is on it
        fresh = Path(name)
        try:
            conn = sqlite3.connect(fresh)
            try:
                _create_schema(conn)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            fresh.unlink(missing_ok=True)
            raise BufferError(why_not_writable(self.path) or str(exc)) from None
        return fresh

    def _let_go(self) -> None:
        """Close the old file, what is in its WAL copied in first (so a file moved away holds
        its items), and remove its WAL and shared-memory files if they are still at ``path``:
        SQLite would read a new file there with them."""
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
            self.conn = None
        for suffix in _SIDE_FILES:
            side = Path(f"{self.path}{suffix}")
            if self._ids.get(suffix) is not None and _file_id(side) == self._ids[suffix]:
                with contextlib.suppress(OSError):
                    side.unlink()

    def _trim(self) -> None:
        first, last = self.bounds()
        excess = (last - first + 1) - self.max_items if last else 0
        if excess > 0:
            cut = first + excess - 1
            n = self._db().execute("DELETE FROM items WHERE seq <= ?", [cut]).rowcount
            self._db().execute(
                "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT) "
                "WHERE key = 'trimmed'", [n])
            self._trim_told("agent buffer full (--max-items %d): the oldest items are trimmed "
                            "as new ones come; a dashboard that has not pulled them loses "
                            "them, and says how many", self.max_items)

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a write waits for another writer's lock before it fails."""
        if self.conn is not None:
            self.conn.execute(f"PRAGMA busy_timeout={max(0, int(seconds * 1000))}")

    def close(self) -> None:
        self._trim_told.flush()  # how many trims went unsaid since the last line
        if self.conn is not None:
            self.conn.close()

    # -- reader side ----------------------------------------------------------------------

    def bounds(self) -> tuple[int, int]:
        """(first, last) sequence held; (0, 0) when empty."""
        first, last = self._db().execute("SELECT min(seq), max(seq) FROM items").fetchone()
        return (int(first or 0), int(last or 0))

    def page(self, after: int, limit: int = 5000, max_bytes: int = MAX_PAGE_BYTES) -> Page:
        """Items after ``after``, oldest first: at most ``limit`` of them, and no more captures
        than fit in about ``max_bytes`` (at least one item, so a page always moves on)."""
        cursor = self._db().execute(
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
