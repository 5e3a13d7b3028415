"""The workspace's SQLite file: opening it, its schema steps, ids, batched writes, and the
reads of endpoints and captures.

This module and its parts (``store_*.py``) are the only ones that write SQL. One ``Store`` is
one connection and belongs to one thread: the recorder owns a writer, and each reader (the
GUI's history worker, the CLI) opens its own. WAL lets those readers run while the recorder
writes.

``Store`` is one class put together from a part per concern, each in its own module:
``store_schema`` (the schema steps), ``store_series`` (reads of sample series),
``store_drift``, ``store_replays`` (model versions, replays and their capture selections),
``store_incidents`` and ``store_logs`` (production logs and late labels); ``store_base``
holds what they share. Import everything from here: this module is the public face.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import sqlite_utils

from app.core import codec
from app.core.domain import Capture, CaptureStatus, Sample, StoreError, not_sqlite
from app.core.store_base import StoredCapture, capture_select
from app.core.store_drift import DriftTables
from app.core.store_incidents import IncidentTables
from app.core.store_logs import ProductionLogs
from app.core.store_replays import ReplayTables

# Store reads MIGRATIONS through this module's own name, so a test can patch
# ``app.core.store.MIGRATIONS`` to add a step.
from app.core.store_schema import MIGRATIONS, SCHEMA_VERSION
from app.core.store_series import History, SeriesReads, bucket_width

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "History", "Store", "StoreError", "StoredCapture",
           "bucket_width"]

log = logging.getLogger(__name__)


def _read_only_hint(path: Path) -> str:
    """Why SQLite could not open a workspace for writing, when the cause is permissions:
    its own words ("unable to open database file") do not say."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.exists() and not os.access(path, os.W_OK):
        return " (the file is read-only: ProbeScope writes to its workspace)"
    if not os.access(folder, os.W_OK):
        return (f" (its folder {folder} is read-only: the workspace's journal files go beside "
                "it)")
    return ""


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection. A workspace in WAL mode needs its ``-shm`` file beside it
    even to be read, which a read-only folder (a mounted snapshot, a backup share) cannot
    hold: there, with no ``-wal`` left either, nothing can be writing it, and it is opened
    as immutable (no locks, no shared memory)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the file
        return conn
    except sqlite3.OperationalError:
        conn.close()
        folder = path.parent if str(path.parent) else Path(".")
        if os.access(folder, os.W_OK) or Path(f"{path}-wal").exists():
            raise
    return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True,
                           check_same_thread=False)


class Store(SeriesReads, DriftTables, ReplayTables, IncidentTables, ProductionLogs):
    """One connection to a workspace file. Here: opening it, its schema, ids, the writes and
    the endpoint and capture reads; the other reads and writes come from the parts it is
    made of (see the module docstring)."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder; give a workspace file such as "
                             f"{self.path / 'workspace.db'}")
        if not_sqlite(self.path):
            raise StoreError(f"{self.path} is not a ProbeScope workspace (not an SQLite file); "
                             "give a new file name to start one")
        try:
            if readonly:
                if not self.path.exists():
                    raise StoreError(f"no workspace at {self.path}")
                conn = _connect_read_only(self.path)
            else:
                if self.path.parent and not self.path.parent.exists():
                    raise StoreError(f"cannot create workspace {self.path}: "
                                     f"folder {self.path.parent} does not exist")
                conn = sqlite3.connect(self.path, check_same_thread=False)
            self.db = sqlite_utils.Database(conn)
            self._refuse_foreign()
            if not readonly:
                # WAL lets readers run while the recorder writes; NORMAL sync in WAL mode keeps
                # every committed transaction across a crash of this process (kill -9).
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            if not readonly:
                self._migrate()
            else:
                self._check_version()
        except (sqlite3.DatabaseError, StoreError) as exc:
            if "conn" in locals():  # opened, then refused: let go of the file
                conn.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open workspace {self.path}: {exc}"
                             + ("" if readonly else _read_only_hint(self.path))) from exc
        self._endpoint_ids: dict[str, int] = {}
        self._metric_ids: dict[str, int] = {}
        self._columns: dict[str, set[str]] = {}  # per table, read once (``_has_column``)

    # -- schema ---------------------------------------------------------------------------

    def applied_migrations(self) -> list[str]:
        if "migrations" not in self.db.table_names():
            return []
        return [r[0] for r in self.db.execute("SELECT name FROM migrations ORDER BY step")]

    def schema_version(self) -> int:
        return len(self.applied_migrations())

    def _refuse_foreign(self) -> None:
        """Someone else's database must not get our tables (or WAL mode) added to it."""
        tables = self.db.table_names()
        if tables and "migrations" not in tables:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise StoreError(f"{self.path} is an SQLite file but not a ProbeScope workspace (its "
                             f"tables: {shown}); give a new file name to start one")

    def _check_version(self) -> None:
        known = {name for name, _ in MIGRATIONS}
        unknown = [n for n in self.applied_migrations() if n not in known]
        if unknown:
            raise StoreError(
                f"{self.path} was written by a newer ProbeScope (it has schema steps "
                f"{', '.join(unknown)} that this one does not know); upgrade ProbeScope to open it"
            )

    def _missing_steps(self) -> list[tuple[int, str, Callable[[sqlite_utils.Database], None]]]:
        applied = set(self.applied_migrations())
        return [(i, n, f) for i, (n, f) in enumerate(MIGRATIONS) if n not in applied]

    def _migrate(self) -> None:
        """Apply the missing schema steps in one transaction: all of them or none.

        Python's sqlite3 commits before each CREATE on its own, so the transaction is opened
        by hand (IMMEDIATE: a second process migrating the same file waits, then finds the
        steps done). The steps' own writes are raw SQL: sqlite-utils' insert would commit."""
        self._check_version()
        if not self._missing_steps():
            return
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if "migrations" not in self.db.table_names():
                conn.execute("CREATE TABLE migrations (step INTEGER, name TEXT PRIMARY KEY, "
                             "applied_ns INTEGER)")
            for step, name, migrate in self._missing_steps():
                migrate(self.db)
                conn.execute("INSERT INTO migrations (step, name, applied_ns) VALUES (?, ?, ?)",
                             [step, name, time.time_ns()])
                log.info("workspace %s: applied schema step %s", self.path, name)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.conn.close()

    # -- ids ------------------------------------------------------------------------------

    def endpoint_id(self, uri: str, kind: str | None = None) -> int:
        cached = self._endpoint_ids.get(uri)
        if cached is not None:
            return cached
        row = self.db.execute("SELECT id FROM endpoints WHERE uri = ?", [uri]).fetchone()
        if row is None:
            kind = kind or uri.partition(":")[0]
            # OR IGNORE, then read back: another connection (the recorder's, committing a
            # probe's first samples) may insert the same endpoint between SELECT and INSERT.
            self.db.execute(
                "INSERT OR IGNORE INTO endpoints (uri, kind, created_ns) VALUES (?, ?, ?)",
                [uri, kind, time.time_ns()],
            )
            row = self.db.execute("SELECT id FROM endpoints WHERE uri = ?", [uri]).fetchone()
        self._endpoint_ids[uri] = int(row[0])
        return int(row[0])

    def metric_id(self, name: str) -> int:
        cached = self._metric_ids.get(name)
        if cached is not None:
            return cached
        row = self.db.execute("SELECT id FROM metrics WHERE name = ?", [name]).fetchone()
        if row is None:
            row = (self.db.execute("INSERT INTO metrics (name) VALUES (?)", [name]).lastrowid,)
        self._metric_ids[name] = int(row[0])
        return int(row[0])

    def _lookup_endpoint(self, uri: str) -> int | None:
        row = self.db.execute("SELECT id FROM endpoints WHERE uri = ?", [uri]).fetchone()
        return None if row is None else int(row[0])

    def _lookup_metric(self, name: str) -> int | None:
        row = self.db.execute("SELECT id FROM metrics WHERE name = ?", [name]).fetchone()
        return None if row is None else int(row[0])

    # -- writes ---------------------------------------------------------------------------

    def write_batch(self, samples: Sequence[Sample], captures: Sequence[Capture]) -> None:
        """Write everything in one transaction: all of it is committed, or none of it."""
        conn = self.db.conn
        try:
            with conn:
                if samples:
                    eid, mid = self.endpoint_id, self.metric_id
                    conn.executemany(
                        "INSERT INTO samples (endpoint_id, metric_id, ts_ns, value) "
                        "VALUES (?, ?, ?, ?)",
                        [(eid(s.endpoint), mid(s.metric), s.ts_ns, s.value) for s in samples],
                    )
                if captures:
                    conn.executemany(
                        "INSERT INTO captures (endpoint_id, ts_ns, request_id, latency_ms, "
                        "status, error, label, prediction, confidence, model_version, "
                        "truncated, inputs, outputs, sampled) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        [self._capture_row(c) for c in captures],
                    )
        except sqlite3.Error as exc:
            # The ids cached inside the rolled-back transaction no longer exist.
            self._endpoint_ids.clear()
            self._metric_ids.clear()
            raise StoreError(f"cannot write to {self.path}: {exc}") from exc

    def _capture_row(self, c: Capture) -> tuple:
        return (
            self.endpoint_id(c.endpoint), c.ts_ns, c.request_id, c.latency_ms, str(c.status),
            c.error, c.label, c.prediction, c.confidence, c.model_version, int(c.truncated),
            codec.encode(c.inputs), codec.encode(c.outputs), int(c.sampled),
        )

    def set_endpoint_info(self, uri: str, *, slo_ms: float | None = None,
                          model_version: str | None = None,
                          min_confidence: float | None = None,
                          input_names: Sequence[str] | None = None) -> None:
        eid = self.endpoint_id(uri)
        names = json.dumps(list(input_names)) if input_names else None
        with self.db.conn:
            self.db.execute(
                "UPDATE endpoints SET slo_ms = coalesce(?, slo_ms), "
                "model_version = coalesce(?, model_version), "
                "min_confidence = coalesce(?, min_confidence), "
                "input_names = coalesce(?, input_names) WHERE id = ?",
                [slo_ms, model_version, min_confidence, names, eid],
            )

    def endpoint_input_names(self, uri: str) -> tuple[str, ...]:
        """The names of the values the endpoint's probe sent, in order, as it recorded them
        when attached; () when unnamed or unknown."""
        eid = self._lookup_endpoint(uri)
        if eid is None:
            return ()
        row = self.db.execute("SELECT input_names FROM endpoints WHERE id = ?", [eid]).fetchone()
        try:
            names = json.loads(row[0]) if row and row[0] else []
        except ValueError:
            return ()
        return tuple(str(n) for n in names) if isinstance(names, list) else ()

    # -- reads ----------------------------------------------------------------------------

    def endpoints(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM endpoints ORDER BY id"))

    def resolve_endpoint(self, name: str) -> str:
        """The endpoint URI that ``name`` names: the URI itself, or a part only one URI has."""
        uris = [e["uri"] for e in self.endpoints()]
        if name in uris:
            return name
        matches = [u for u in uris if name in u]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise StoreError(f"no endpoint matching '{name}' in {self.path}; known: "
                             f"{', '.join(uris) or 'none'}")
        raise StoreError(f"'{name}' matches {len(matches)} endpoints ({', '.join(matches)}); "
                         "give more of the URI")

    def count_captures(self, endpoint: str | None = None, *, failed: bool | None = None,
                       since_ns: int | None = None) -> int:
        where, args = [], []
        if since_ns is not None:
            where.append("ts_ns >= ?")
            args.append(since_ns)
        if endpoint is not None:
            where.append("endpoint_id = ?")
            args.append(self._lookup_endpoint(endpoint) or -1)
        if failed is not None:
            where.append("status != ?" if failed else "status = ?")
            args.append(str(CaptureStatus.OK))
        sql = "SELECT count(*) FROM captures" + (" WHERE " + " AND ".join(where) if where else "")
        return int(self.db.execute(sql, args).fetchone()[0])

    def captures(self, endpoint: str | None = None, *, failed: bool | None = None,
                 limit: int = 1000, with_tensors: bool = True) -> list[StoredCapture]:
        where, args = [], []
        if endpoint is not None:
            where.append("c.endpoint_id = ?")
            args.append(self._lookup_endpoint(endpoint) or -1)
        if failed is not None:
            where.append("c.status != ?" if failed else "c.status = ?")
            args.append(str(CaptureStatus.OK))
        sql = (capture_select(with_tensors)
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY c.ts_ns LIMIT ?")
        args.append(limit)
        return [self._row_to_capture(r) for r in self.db.execute(sql, args).fetchall()]

    def capture(self, capture_id: int) -> StoredCapture | None:
        row = self.db.execute(
            capture_select() + " WHERE c.id = ?", [capture_id]).fetchone()
        return None if row is None else self._row_to_capture(row)

    @staticmethod
    def _row_to_capture(r: Iterable) -> StoredCapture:
        (cid, uri, ts, lat, status, inputs, outputs, rid, err, label, pred, conf, ver,
         trunc) = r
        try:
            return StoredCapture(int(cid), Capture(
                endpoint=uri, ts_ns=int(ts), latency_ms=float(lat),
                status=CaptureStatus(status), inputs=codec.decode(inputs),
                outputs=codec.decode(outputs), request_id=rid, error=err, label=label,
                prediction=pred, confidence=conf, model_version=ver, truncated=bool(trunc),
            ))
        except (ValueError, TypeError) as exc:  # bytes or fields no writer of ours left
            raise StoreError(f"capture {cid} in the workspace is damaged: {exc}") from None

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a write waits for another writer's lock before it fails."""
        self.db.execute(f"PRAGMA busy_timeout={max(0, int(seconds * 1000))}")

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            p = Path(f"{self.path}{suffix}")
            if p.exists():
                total += p.stat().st_size
        return total

    # -- live dashboard reads (issue 3) ---------------------------------------------------

    def capture_near(self, endpoint: str, ts_ns: int, *, failed: bool | None = None,
                     within_ns: int = 2_000_000_000) -> StoredCapture | None:
        """The capture of an endpoint closest in time to ``ts_ns`` (a clicked plot point)."""
        eid = self._lookup_endpoint(endpoint)
        if eid is None:
            return None
        status = ""
        args: list = [eid, ts_ns - within_ns, ts_ns + within_ns]
        if failed is not None:
            status = " AND status != ?" if failed else " AND status = ?"
            args.append(str(CaptureStatus.OK))
        row = self.db.execute(
            "SELECT id FROM captures WHERE endpoint_id = ? AND ts_ns >= ? AND ts_ns <= ?"
            + status + " ORDER BY abs(ts_ns - ?) LIMIT 1", [*args, ts_ns]).fetchone()
        return None if row is None else self.capture(int(row[0]))

    def backup_to(self, dest: str | Path) -> None:
        """Copy the whole workspace, consistent even while the recorder writes (File > Save as)."""
        dest = Path(dest)
        try:
            target = sqlite3.connect(dest)
            try:
                self.db.conn.backup(target)
            finally:
                target.close()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot save the workspace to {dest}: {exc}") from exc
