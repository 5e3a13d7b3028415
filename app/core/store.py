"""The workspace's SQLite file: schema, migrations, batched writes, downsampled reads.

This is the only module that writes SQL. One ``Store`` is one connection and belongs to one
thread: the recorder owns a writer, and each reader (the GUI's history worker, the CLI) opens
its own. WAL lets those readers run while the recorder writes.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import ClassVar

import numpy as np
import sqlite_utils

from app.core import codec
from app.core.domain import (
    NEWEST_NS,
    OLDEST_NS,
    Capture,
    CaptureStatus,
    EndpointUri,
    Metric,
    Sample,
    StoreError,
    UriError,
    not_sqlite,
)

log = logging.getLogger(__name__)

def _migrate_core(db: sqlite_utils.Database) -> None:
    db["endpoints"].create(
        {"id": int, "uri": str, "kind": str, "created_ns": int, "slo_ms": float,
         "model_version": str},
        pk="id", not_null={"uri"},
    )
    db["endpoints"].create_index(["uri"], unique=True)
    db["metrics"].create({"id": int, "name": str}, pk="id", not_null={"name"})
    db["metrics"].create_index(["name"], unique=True)
    db["samples"].create({"endpoint_id": int, "metric_id": int, "ts_ns": int, "value": float})
    db["samples"].create_index(["endpoint_id", "metric_id", "ts_ns"])
    db["captures"].create(
        {"id": int, "endpoint_id": int, "ts_ns": int, "request_id": str, "latency_ms": float,
         "status": str, "error": str, "label": str, "prediction": str, "confidence": float,
         "model_version": str, "truncated": int, "inputs": bytes, "outputs": bytes},
        pk="id",
    )
    db["captures"].create_index(["endpoint_id", "ts_ns"])
    db["captures"].create_index(["status"])
    db["captures"].create_index(["request_id"])


def _migrate_drift(db: sqlite_utils.Database) -> None:
    # One reference per endpoint; drift points are narrow rows (one per feature per evaluation)
    # and each evaluation keeps its share of drifted features for the share-over-time series.
    db["drift_references"].create(
        {"endpoint_id": int, "kind": str, "path": str, "source_endpoint": str, "start_ns": int,
         "end_ns": int, "columns": str, "set_ns": int}, pk="endpoint_id")
    db["drift_evaluations"].create(
        {"id": int, "endpoint_id": int, "ts_ns": int, "source": str, "rows_reference": int,
         "rows_current": int, "share_drifted": float, "report_path": str}, pk="id")
    db["drift_evaluations"].create_index(["endpoint_id", "source", "ts_ns"])
    db["drift_points"].create(
        {"evaluation_id": int, "endpoint_id": int, "ts_ns": int, "feature": str, "method": str,
         "score": float, "threshold": float, "drifted": int, "source": str})
    db["drift_points"].create_index(["endpoint_id", "source", "ts_ns"])


def _migrate_versions_replay(db: sqlite_utils.Database) -> None:
    # Model versions in registration order (the order bisect walks); replays keep their cases
    # (by capture id) and one narrow row per case x version, so a replay reopens as it was.
    db["versions"].create(
        {"id": int, "name": str, "kind": str, "location": str, "version": str, "sha256": str,
         "parameters": int, "opset": int, "producer": str, "inputs": str, "outputs": str,
         "size_bytes": int, "registered_ns": int}, pk="id", not_null={"name", "location"})
    db["versions"].create_index(["name"], unique=True)
    db["replays"].create(
        {"id": int, "created_ns": int, "title": str, "selection": str, "versions": str,
         "criteria": str, "cancelled": int, "cases": int}, pk="id")
    db["replay_cases"].create(
        {"replay_id": int, "idx": int, "capture_id": int, "control": int,
         "first_failing": str}, pk=("replay_id", "idx"))
    db["replay_results"].create(
        {"replay_id": int, "case_idx": int, "version_idx": int, "prediction": str,
         "confidence": float, "latency_ms": float, "error": str, "failing": int,
         "outputs": bytes}, pk=("replay_id", "version_idx", "case_idx"))


def _migrate_incidents(db: sqlite_utils.Database) -> None:
    # An incident is one row that the rules keep up to date (peak value, severity, when it
    # cleared); people add notes and move its status (open, acknowledged, resolved).
    db["incidents"].create(
        {"id": int, "endpoint_id": int, "rule": str, "severity": str, "status": str,
         "opened_ns": int, "trigger_ns": int, "cleared_ns": int, "updated_ns": int,
         "value": float, "threshold": float, "summary": str, "details": str}, pk="id")
    db["incidents"].create_index(["endpoint_id", "rule", "opened_ns"])
    db["incidents"].create_index(["opened_ns"])
    db["incident_notes"].create(
        {"id": int, "incident_id": int, "ts_ns": int, "author": str, "text": str}, pk="id")
    db["incident_notes"].create_index(["incident_id", "ts_ns"])
    db["incident_rules"].create({"endpoint_id": int, "rules": str, "set_ns": int},
                                pk="endpoint_id")


def _migrate_captures_by_time(db: sqlite_utils.Database) -> None:
    # Selections of captures across endpoints, newest first (replay, the failure list) walk
    # this index backwards instead of sorting every matching row with its blobs.
    db["captures"].create_index(["ts_ns"], if_not_exists=True)


def _migrate_captures_sampled(db: sqlite_utils.Database) -> None:
    # NULL in older rows: captures taken before the flag existed count as sampled.
    db["captures"].add_column("sampled", int)


def _migrate_incidents_resolved(db: sqlite_utils.Database) -> None:
    # When a person resolved the incident (NULL while it is not resolved). Before this, the
    # only record was a note, and a later note reading "Resolved ..." could pass for it.
    db["incidents"].add_column("resolved_ns", int)


def _migrate_endpoints_min_confidence(db: sqlite_utils.Database) -> None:
    # The confidence below which the endpoint's probe flags an answer LOW_CONFIDENCE (NULL:
    # none given, or an older workspace, where the URI's own min_confidence still says it).
    # A replay holds a version to it: an answer production would flag is not a fix.
    db["endpoints"].add_column("min_confidence", float)


def _migrate_replays_slow_limits(db: sqlite_utils.Database) -> None:
    # Each SLOW case's SLO and this machine's scale for it, as the replay judged them (JSON):
    # a reopened replay then says which SLOW failures were judged on outputs alone, and why
    # a case is slow, as the replay did when it ran (NULL: saved before this).
    db["replays"].add_column("slow_limits", str)


def _migrate_endpoints_input_names(db: sqlite_utils.Database) -> None:
    # The names of the values the endpoint's probe sends, in order (a JSON list: its payload
    # file's columns; NULL when unnamed or unknown). Captures keep values by position, so a
    # drift reference written in another column order is matched to these by name.
    db["endpoints"].add_column("input_names", str)


# Named, ordered migrations. Append new ones at the end; never edit or reorder a shipped one.
# Each feature that needs tables appends its own step (e.g. "drift_points"), so work on
# different features does not fight over one version number.
MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("core", _migrate_core),
    ("drift", _migrate_drift),
    ("versions_replay", _migrate_versions_replay),
    ("incidents", _migrate_incidents),
    ("captures_by_time", _migrate_captures_by_time),
    ("captures_sampled", _migrate_captures_sampled),
    ("incidents_resolved", _migrate_incidents_resolved),
    ("endpoints_min_confidence", _migrate_endpoints_min_confidence),
    ("replays_slow_limits", _migrate_replays_slow_limits),
    ("endpoints_input_names", _migrate_endpoints_input_names),
]
SCHEMA_VERSION = len(MIGRATIONS)




def _uri_min_confidence(uri: str) -> float | None:
    """The ``min_confidence`` an endpoint's URI gives its probe, if a valid one."""
    try:
        value = float(EndpointUri.parse(uri).param("min_confidence") or "nan")
    except (UriError, ValueError):
        return None
    return value if 0.0 <= value <= 1.0 else None


def bucket_width(start_ns: int, end_ns: int, buckets: int) -> int:
    """The width ``Store.history`` bins [start, end) into ``buckets`` with. Rounded up, so
    every sample falls in one of them: rounded down, the last few ns made a sliver of a
    bucket of their own, which a rate per bucket then read as traffic all but stopping at
    the right edge."""
    return max(1, -(-(end_ns - start_ns) // max(1, buckets)))


def _time_order(newest_first: bool) -> str:
    """Captures by time, ties by insertion, both the same way: an index on ts_ns (or on
    endpoint_id, ts_ns) then serves the order with no sort."""
    way = "DESC" if newest_first else "ASC"
    return f" ORDER BY c.ts_ns {way}, c.id {way}"


def _span(start_ns: int | None, end_ns: int | None) -> tuple[int, int]:
    """A time range for ``ts_ns >= ? AND ts_ns <= ?``; an open end means all of time."""
    return (OLDEST_NS if start_ns is None else start_ns,
            NEWEST_NS if end_ns is None else end_ns)


@dataclass(frozen=True, slots=True)
class History:
    """One downsampled series: per time bucket its start, min, max, mean and count. Only
    buckets holding a sample are listed, so ``width_ns`` says how wide each one is."""

    ts_ns: np.ndarray
    vmin: np.ndarray
    vmax: np.ndarray
    mean: np.ndarray
    count: np.ndarray
    width_ns: int = 1

    def __len__(self) -> int:
        return len(self.ts_ns)


@dataclass(frozen=True, slots=True)
class StoredCapture:
    id: int
    capture: Capture


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


class Store:
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

    def metric_names(self, endpoint: str) -> list[str]:
        eid = self._lookup_endpoint(endpoint)
        if eid is None:
            return []
        rows = self.db.execute(
            "SELECT DISTINCT m.name FROM samples s JOIN metrics m ON m.id = s.metric_id "
            "WHERE s.endpoint_id = ? ORDER BY m.name", [eid]).fetchall()
        return [r[0] for r in rows]

    def values(self, endpoint: str, metric: str, start_ns: int | None = None,
               end_ns: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw (ts_ns, value) of one series, oldest first."""
        eid, mid = self._lookup_endpoint(endpoint), self._lookup_metric(metric)
        if eid is None or mid is None:
            return np.empty(0, np.int64), np.empty(0)
        rows = self.db.execute(
            "SELECT ts_ns, value FROM samples WHERE endpoint_id = ? AND metric_id = ? "
            "AND ts_ns >= ? AND ts_ns <= ? ORDER BY ts_ns",
            [eid, mid, *_span(start_ns, end_ns)],
        ).fetchall()
        if not rows:
            return np.empty(0, np.int64), np.empty(0)
        arr = np.array(rows, dtype=np.float64)
        return np.array([r[0] for r in rows], dtype=np.int64), arr[:, 1]

    def sampled_values(self, endpoint: str, metric: str, start_ns: int, end_ns: int,
                       at_most: int = 50_000) -> np.ndarray:
        """One series' values in a time range, unordered; past ``at_most`` of them, a
        pseudo-random share of about ``at_most`` (for quantiles of a long incident: a day at
        1,000 requests/s is 86 million rows, and a 50,000-row sample puts p99 within a
        fraction of a percent). Rows are picked by a multiplicative hash of their rowid, so
        the pick does not fall in step with the order the series were written in."""
        eid, mid = self._lookup_endpoint(endpoint), self._lookup_metric(metric)
        if eid is None or mid is None:
            return np.empty(0)
        where = "endpoint_id = ? AND metric_id = ? AND ts_ns >= ? AND ts_ns <= ?"
        args: list = [eid, mid, start_ns, end_ns]
        total = self.db.execute(f"SELECT count(*) FROM samples WHERE {where}", args).fetchone()[0]
        if total > at_most:
            where += " AND (rowid * 2654435761) % 1000003 < ?"
            args.append(int(1000003 * at_most / total) + 1)
        rows = self.db.execute(f"SELECT value FROM samples WHERE {where}", args).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.float64, count=len(rows))

    def history(self, endpoint: str, metric: str, start_ns: int, end_ns: int,
                buckets: int = 1000) -> History:
        """Min/max/mean per time bucket, computed in SQL so a week returns in milliseconds."""
        eid, mid = self._lookup_endpoint(endpoint), self._lookup_metric(metric)
        empty = History(*(np.empty(0) for _ in range(5)))
        if eid is None or mid is None or end_ns <= start_ns:
            return empty
        width = bucket_width(start_ns, end_ns, buckets)
        rows = self.db.execute(
            "SELECT (ts_ns - ?) / ? AS b, min(value), max(value), avg(value), count(*) "
            "FROM samples WHERE endpoint_id = ? AND metric_id = ? AND ts_ns >= ? AND ts_ns < ? "
            "GROUP BY b ORDER BY b",
            [start_ns, width, eid, mid, start_ns, end_ns],
        ).fetchall()
        if not rows:
            return empty
        a = np.array(rows, dtype=np.float64)
        ts = (start_ns + a[:, 0].astype(np.int64) * width).astype(np.int64)
        return History(ts, a[:, 1], a[:, 2], a[:, 3], a[:, 4].astype(np.int64), int(width))

    def count_samples(self, endpoint: str | None = None, metric: str | None = None) -> int:
        where, args = [], []
        if endpoint is not None:
            where.append("endpoint_id = ?")
            args.append(self._lookup_endpoint(endpoint) or -1)
        if metric is not None:
            where.append("metric_id = ?")
            args.append(self._lookup_metric(metric) or -1)
        sql = "SELECT count(*) FROM samples" + (" WHERE " + " AND ".join(where) if where else "")
        return int(self.db.execute(sql, args).fetchone()[0])

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
        tensors = "c.inputs, c.outputs" if with_tensors else "NULL, NULL"
        sql = (f"SELECT c.id, e.uri, c.ts_ns, c.latency_ms, c.status, {tensors}, c.request_id, "
               "c.error, c.label, c.prediction, c.confidence, c.model_version, c.truncated "
               "FROM captures c JOIN endpoints e ON e.id = c.endpoint_id"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY c.ts_ns LIMIT ?")
        args.append(limit)
        return [self._row_to_capture(r) for r in self.db.execute(sql, args).fetchall()]

    def capture(self, capture_id: int) -> StoredCapture | None:
        row = self.db.execute(
            "SELECT c.id, e.uri, c.ts_ns, c.latency_ms, c.status, c.inputs, c.outputs, "
            "c.request_id, c.error, c.label, c.prediction, c.confidence, c.model_version, "
            "c.truncated FROM captures c JOIN endpoints e ON e.id = c.endpoint_id "
            "WHERE c.id = ?", [capture_id]).fetchone()
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

    # -- agent cursors and late labels (issue 4) ------------------------------------------

    def last_value(self, endpoint: str, metric: str) -> float | None:
        """The most recently *written* value of one series (insertion order, not timestamp).

        The agent+http probe commits a ``probescope.agent_seq`` marker in the same transaction
        as the samples it covers, so the last marker written is the high-water mark to resume
        from; insertion order survives wall-clock jumps on either machine.
        """
        eid, mid = self._lookup_endpoint(endpoint), self._lookup_metric(metric)
        if eid is None or mid is None:
            return None
        row = self.db.execute(
            "SELECT value FROM samples WHERE endpoint_id = ? AND metric_id = ? "
            "ORDER BY rowid DESC LIMIT 1", [eid, mid]).fetchone()
        return None if row is None else float(row[0])

    # -- live dashboard reads (issue 3) ---------------------------------------------------

    def time_range(self, endpoint: str, metric: str) -> tuple[int, int] | None:
        """(first, last) ts_ns of one series, answered from the index; None when empty."""
        eid, mid = self._lookup_endpoint(endpoint), self._lookup_metric(metric)
        if eid is None or mid is None:
            return None
        row = self.db.execute(
            "SELECT min(ts_ns), max(ts_ns) FROM samples WHERE endpoint_id = ? AND metric_id = ?",
            [eid, mid]).fetchone()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

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

    # -- drift (issue 5) ------------------------------------------------------------------

    def set_drift_reference(self, endpoint: str, *, kind: str, path: str | None = None,
                            source_endpoint: str | None = None, start_ns: int | None = None,
                            end_ns: int | None = None, columns: Sequence[str] = ()) -> None:
        eid = self.endpoint_id(endpoint)
        with self.db.conn:
            self.db.execute(
                "INSERT OR REPLACE INTO drift_references (endpoint_id, kind, path, "
                "source_endpoint, start_ns, end_ns, columns, set_ns) VALUES (?,?,?,?,?,?,?,?)",
                [eid, kind, path, source_endpoint, start_ns, end_ns, json.dumps(list(columns)),
                 time.time_ns()])

    def drift_reference(self, endpoint: str) -> dict | None:
        eid = self._lookup_endpoint(endpoint)
        if eid is None:
            return None
        rows = list(self.db.query(
            "SELECT kind, path, source_endpoint, start_ns, end_ns, columns, set_ns "
            "FROM drift_references WHERE endpoint_id = ?", [eid]))
        if not rows:
            return None
        row = rows[0]
        row["columns"] = json.loads(row["columns"] or "[]")
        return row

    def write_drift_evaluation(self, endpoint: str, ts_ns: int, *, source: str,
                               rows_reference: int, rows_current: int, share_drifted: float,
                               points: Sequence[tuple[str, str | None, float | None,
                                                      float | None, bool]],
                               report_path: str | None = None) -> int:
        """One evaluation and its per-feature points (feature, method, score, threshold,
        drifted), in one transaction; returns the evaluation's id."""
        try:
            with self.db.conn:
                eid = self.endpoint_id(endpoint)
                cur = self.db.execute(
                    "INSERT INTO drift_evaluations (endpoint_id, ts_ns, source, rows_reference, "
                    "rows_current, share_drifted, report_path) VALUES (?,?,?,?,?,?,?)",
                    [eid, ts_ns, source, rows_reference, rows_current, share_drifted,
                     report_path])
                ev_id = int(cur.lastrowid)
                self.db.conn.executemany(
                    "INSERT INTO drift_points (evaluation_id, endpoint_id, ts_ns, feature, "
                    "method, score, threshold, drifted, source) VALUES (?,?,?,?,?,?,?,?,?)",
                    [(ev_id, eid, ts_ns, f, m, s, t, int(d), source)
                     for f, m, s, t, d in points])
        except sqlite3.Error as exc:
            self._endpoint_ids.clear()
            raise StoreError(f"cannot write drift results to {self.path}: {exc}") from exc
        return ev_id

    def drift_points(self, endpoint: str, start_ns: int | None = None,
                     end_ns: int | None = None, *, source: str = "fast") -> list[dict]:
        """Per-feature drift points, oldest first: evaluation_id, ts_ns, feature, method, score,
        threshold, drifted."""
        eid = self._lookup_endpoint(endpoint)
        if eid is None:
            return []
        return list(self.db.query(
            "SELECT evaluation_id, ts_ns, feature, method, score, threshold, drifted "
            "FROM drift_points "
            "WHERE endpoint_id = ? AND source = ? AND ts_ns >= ? AND ts_ns <= ? "
            "ORDER BY ts_ns, rowid",
            [eid, source, *_span(start_ns, end_ns)]))

    def drift_evaluations(self, endpoint: str, start_ns: int | None = None,
                          end_ns: int | None = None, *, source: str = "fast") -> list[dict]:
        eid = self._lookup_endpoint(endpoint)
        if eid is None:
            return []
        return list(self.db.query(
            "SELECT id, ts_ns, rows_reference, rows_current, share_drifted, report_path "
            "FROM drift_evaluations WHERE endpoint_id = ? AND source = ? AND ts_ns >= ? "
            "AND ts_ns <= ? ORDER BY ts_ns, id",
            [eid, source, *_span(start_ns, end_ns)]))

    def capture_inputs(self, endpoint: str, start_ns: int | None = None,
                       end_ns: int | None = None, *, limit: int | None = None,
                       sampled_only: bool = False, earliest: bool = False
                       ) -> list[tuple[int, tuple, str | None]]:
        """(ts_ns, input tensors, prediction) of captures in a time range, oldest first; with
        ``limit``, the latest ones (the earliest with ``earliest``); with ``sampled_only``,
        only the random sample's."""
        eid = self._lookup_endpoint(endpoint)
        if eid is None:
            return []
        # A workspace from before the flag, opened read-only (not migrated), has no column:
        # all its captures count as sampled, as they were taken.
        sampled = (" AND coalesce(sampled, 1) = 1"
                   if sampled_only and self._has_column("captures", "sampled") else "")
        rows = self.db.execute(
            "SELECT ts_ns, inputs, prediction FROM captures WHERE endpoint_id = ? "
            f"AND ts_ns >= ? AND ts_ns <= ?{sampled} ORDER BY ts_ns "
            f"{'ASC' if earliest else 'DESC'} LIMIT ?",
            [eid, *_span(start_ns, end_ns),
             limit if limit is not None else -1]).fetchall()
        return [(int(ts), codec.decode(blob), pred)
                for ts, blob, pred in (rows if earliest else reversed(rows))]

    def _has_column(self, table: str, column: str) -> bool:
        known = self._columns.get(table)
        if known is None:
            known = self._columns[table] = {
                r[1] for r in self.db.execute(f"PRAGMA table_info({table})").fetchall()}
        return column in known

    def capture_span(self, endpoint: str) -> tuple[int, int] | None:
        """(first, last) ts_ns of an endpoint's captures; None when it has none."""
        eid = self._lookup_endpoint(endpoint)
        if eid is None:
            return None
        row = self.db.execute("SELECT min(ts_ns), max(ts_ns) FROM captures WHERE endpoint_id = ?",
                              [eid]).fetchone()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    # -- production logs and late labels (issue 4) ----------------------------------------

    def existing_request_ids(self, endpoint: str, request_ids: Sequence[str]) -> set[str]:
        """Which of these request ids already have a capture on this endpoint."""
        eid = self._lookup_endpoint(endpoint)
        if eid is None:
            return set()
        found: set[str] = set()
        for i in range(0, len(request_ids), 500):
            chunk = list(request_ids[i:i + 500])
            marks = ",".join("?" * len(chunk))
            # "+endpoint_id" keeps SQLite off the (endpoint, time) index, which walked every
            # capture of the endpoint per chunk (an import slowed as the endpoint grew), and
            # on the request_id index: a few rows per id.
            found.update(r[0] for r in self.db.execute(
                f"SELECT request_id FROM captures WHERE request_id IN ({marks}) "
                "AND +endpoint_id = ?", [*chunk, eid]))
        return found

    def captures_for_labels(self, request_ids: Sequence[str], endpoint: str | None = None
                            ) -> list[tuple[int, str, int, str, str | None, str]]:
        """(capture id, endpoint uri, ts_ns, request id, prediction, status) per matching id."""
        out: list[tuple[int, str, int, str, str | None, str]] = []
        eid = None if endpoint is None else (self._lookup_endpoint(endpoint) or -1)
        for i in range(0, len(request_ids), 500):
            chunk = list(request_ids[i:i + 500])
            marks = ",".join("?" * len(chunk))
            where = "" if eid is None else " AND +c.endpoint_id = ?"  # by request_id
            out += [(int(a), b, int(c), d, e, f) for a, b, c, d, e, f in self.db.execute(
                "SELECT c.id, e.uri, c.ts_ns, c.request_id, c.prediction, c.status "
                "FROM captures c JOIN endpoints e ON e.id = c.endpoint_id "
                f"WHERE c.request_id IN ({marks}){where}",
                [*chunk, *([] if eid is None else [eid])])]
        return out

    def label_captures(self, updates: Sequence[tuple[int, str, str]],
                       samples: Sequence[Sample] = (),
                       cleared: Sequence[Sample] = ()) -> None:
        """Set (capture id, label, status), add samples (new failures) and remove one stored
        sample like each of ``cleared`` (failures a corrected label undid), in one
        transaction."""
        conn = self.db.conn
        try:
            with conn:
                conn.executemany("UPDATE captures SET label = ?, status = ? WHERE id = ?",
                                 [(label, status, cid) for cid, label, status in updates])
                conn.executemany(
                    "INSERT INTO samples (endpoint_id, metric_id, ts_ns, value) "
                    "VALUES (?, ?, ?, ?)",
                    [(self.endpoint_id(s.endpoint), self.metric_id(s.metric), s.ts_ns, s.value)
                     for s in samples])
                conn.executemany(
                    "DELETE FROM samples WHERE rowid = (SELECT rowid FROM samples WHERE "
                    "endpoint_id = ? AND metric_id = ? AND ts_ns = ? LIMIT 1)",
                    [(self.endpoint_id(s.endpoint), self.metric_id(s.metric), s.ts_ns)
                     for s in cleared])
        except sqlite3.Error as exc:
            self._endpoint_ids.clear()
            self._metric_ids.clear()
            raise StoreError(f"cannot write to {self.path}: {exc}") from exc

    # -- model versions and replays (issue 6) ---------------------------------------------

    def upsert_version(self, row: dict) -> int:
        """Register a model version by name; registering the name again updates it in place
        (its id, hence its place in registry order, stays)."""
        cols = ["name", "kind", "location", "version", "sha256", "parameters", "opset",
                "producer", "inputs", "outputs", "size_bytes", "registered_ns"]
        values = [row.get(c) for c in cols]
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
        try:
            with self.db.conn:
                self.db.execute(
                    f"INSERT INTO versions ({', '.join(cols)}) VALUES "
                    f"({', '.join('?' for _ in cols)}) ON CONFLICT(name) DO UPDATE SET {updates}",
                    values)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot register a version in {self.path}: {exc}") from exc
        return int(self.db.execute("SELECT id FROM versions WHERE name = ?",
                                   [row["name"]]).fetchone()[0])

    def remove_version(self, name: str) -> bool:
        """Unregister a version; saved replays keep its name and results. False if unknown."""
        try:
            with self.db.conn:
                gone = self.db.execute("DELETE FROM versions WHERE name = ?", [name]).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"cannot remove version {name} from {self.path}: {exc}") from exc
        return gone > 0

    def versions(self) -> list[dict]:
        """Registered versions in registry (registration) order."""
        return list(self.db.query("SELECT * FROM versions ORDER BY id"))

    def _capture_filter(self, endpoint: str | None, statuses: Sequence[str] | None,
                        failed: bool | None, start_ns: int | None, end_ns: int | None,
                        label: str | None, model_version: str | None
                        ) -> tuple[list[str], list]:
        """WHERE terms and their parameters shared by the replay's capture selections."""
        where, args = ["c.ts_ns >= ?", "c.ts_ns <= ?"], [*_span(start_ns, end_ns)]
        if endpoint is not None:
            where.append("c.endpoint_id = ?")
            args.append(self._lookup_endpoint(endpoint) or -1)
        if statuses:
            where.append(f"c.status IN ({', '.join('?' for _ in statuses)})")
            args.extend(str(s) for s in statuses)
        if failed is not None:
            where.append("c.status != ?" if failed else "c.status = ?")
            args.append(str(CaptureStatus.OK))
        if label is not None:
            where.append("c.label = ?")
            args.append(label)
        if model_version is not None:
            where.append("c.model_version = ?")
            args.append(model_version)
        return where, args

    def select_captures(self, *, endpoint: str | None = None,
                        statuses: Sequence[str] | None = None, failed: bool | None = None,
                        start_ns: int | None = None, end_ns: int | None = None,
                        label: str | None = None, model_version: str | None = None,
                        limit: int = 1000, newest_first: bool = True) -> list[StoredCapture]:
        """Captures matching every filter given (statuses: CaptureStatus values)."""
        where, args = self._capture_filter(endpoint, statuses, failed, start_ns, end_ns, label,
                                           model_version)
        sql = ("SELECT c.id, e.uri, c.ts_ns, c.latency_ms, c.status, c.inputs, c.outputs, "
               "c.request_id, c.error, c.label, c.prediction, c.confidence, c.model_version, "
               "c.truncated FROM captures c JOIN endpoints e ON e.id = c.endpoint_id WHERE "
               + " AND ".join(where)
               + _time_order(newest_first) + " LIMIT ?")
        args.append(limit)
        return [self._row_to_capture(r) for r in self.db.execute(sql, args).fetchall()]

    def select_capture_columns(self, *, endpoint: str | None = None,
                               statuses: Sequence[str] | None = None,
                               failed: bool | None = None, start_ns: int | None = None,
                               end_ns: int | None = None, label: str | None = None,
                               model_version: str | None = None, limit: int = 1000,
                               newest_first: bool = True, with_endpoint: bool = True
                               ) -> tuple[tuple, ...]:
        """What a replay reads of the captures ``select_captures`` returns (same filters, same
        order), as columns: ids, statuses, labels, encoded input blobs and, ``with_endpoint``,
        endpoint ids (``endpoint_uris`` names them; an int column costs 7% of this read, so
        it is left out where every case comes from one endpoint). No tensors are decoded and
        no Capture is built, so reading 10,000 cases costs the query alone."""
        where, args = self._capture_filter(endpoint, statuses, failed, start_ns, end_ns, label,
                                           model_version)
        sql = ("SELECT c.id, c.status, c.label, c.inputs"
               + (", c.endpoint_id" if with_endpoint else "") + " FROM captures c WHERE "
               + " AND ".join(where)
               + _time_order(newest_first) + " LIMIT ?")
        args.append(limit)
        rows = self.db.execute(sql, args).fetchall()
        # Transposed at C level: zip(*rows) over thousands of rows costs ~10x more.
        return tuple(tuple(map(itemgetter(k), rows)) for k in range(5 if with_endpoint else 4))

    def endpoints_with_captures(self) -> list[str]:
        """The URIs of the endpoints that have captures (one index probe each)."""
        return [r[0] for r in self.db.execute(
            "SELECT e.uri FROM endpoints e WHERE EXISTS "
            "(SELECT 1 FROM captures c WHERE c.endpoint_id = e.id) ORDER BY e.id")]

    def capture_facts(self, ids: Sequence[int]
                      ) -> dict[int, tuple[str, float | None, str | None]]:
        """Endpoint URI, recorded latency (ms) and model version of each of these captures
        (those still in the workspace), without their tensors."""
        if not ids:
            return {}
        rows = self.db.execute(
            "SELECT c.id, e.uri, c.latency_ms, c.model_version FROM captures c "
            "JOIN endpoints e ON e.id = c.endpoint_id "
            "WHERE c.id IN (SELECT value FROM json_each(?))", [json.dumps(list(ids))])
        return {r[0]: (r[1], r[2], r[3]) for r in rows.fetchall()}

    def slo_by_endpoint(self) -> dict[str, float]:
        """Each endpoint's SLO as its probe had it, where it had one."""
        return {r["uri"]: float(r["slo_ms"]) for r in self.endpoints()
                if r["slo_ms"] is not None}

    def min_confidence_by_endpoint(self) -> dict[str, float]:
        """Each endpoint's minimum confidence as its probe had it (below it, an answer was
        flagged LOW_CONFIDENCE), where it had one: as recorded, else its URI's
        ``min_confidence`` (endpoints recorded before the column existed)."""
        out = {}
        for r in self.endpoints():
            value = r.get("min_confidence")
            if value is None:
                value = _uri_min_confidence(r["uri"])
            if value is not None:
                out[r["uri"]] = float(value)
        return out

    def endpoint_uris(self) -> dict[int, str]:
        return {int(r["id"]): r["uri"] for r in self.endpoints()}

    def captures_by_id(self, ids: Sequence[int]) -> dict[int, StoredCapture]:
        """The captures with these ids (those still in the workspace), in one query."""
        if not ids:
            return {}
        rows = self.db.execute(
            "SELECT c.id, e.uri, c.ts_ns, c.latency_ms, c.status, c.inputs, c.outputs, "
            "c.request_id, c.error, c.label, c.prediction, c.confidence, c.model_version, "
            "c.truncated FROM captures c JOIN endpoints e ON e.id = c.endpoint_id "
            "WHERE c.id IN (SELECT value FROM json_each(?))",
            [json.dumps([int(i) for i in ids])]).fetchall()
        return {int(r[0]): self._row_to_capture(r) for r in rows}

    def save_replay(self, meta: dict, cases: Sequence[tuple[int, int, bool, str | None]],
                    results: Iterable[tuple]) -> int:
        """One replay in one transaction. ``cases``: (idx, capture_id, control, first_failing);
        ``results``: (case_idx, version_idx, prediction, confidence, latency_ms, error, failing,
        outputs blob). Returns the replay's id."""
        try:
            with self.db.conn:
                cur = self.db.execute(
                    "INSERT INTO replays (created_ns, title, selection, versions, criteria, "
                    "cancelled, cases, slow_limits) VALUES (?,?,?,?,?,?,?,?)",
                    [meta["created_ns"], meta.get("title"), meta["selection"], meta["versions"],
                     meta["criteria"], int(meta.get("cancelled", False)), len(cases),
                     meta.get("slow_limits")])
                rid = int(cur.lastrowid)
                self.db.conn.executemany(
                    "INSERT INTO replay_cases (replay_id, idx, capture_id, control, "
                    "first_failing) VALUES (?,?,?,?,?)",
                    [(rid, i, cid, int(ctl), ff) for i, cid, ctl, ff in cases])
                self.db.conn.executemany(
                    "INSERT INTO replay_results (replay_id, case_idx, version_idx, prediction, "
                    "confidence, latency_ms, error, failing, outputs) VALUES (?,?,?,?,?,?,?,?,?)",
                    ((rid, *r) for r in results))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot save the replay to {self.path}: {exc}") from exc
        return rid

    def replays(self) -> list[dict]:
        """Saved replays, newest first (no cases or results)."""
        return list(self.db.query("SELECT * FROM replays ORDER BY id DESC"))

    def replay_rows(self, replay_id: int) -> tuple[dict, list[tuple], list[tuple]] | None:
        """(meta, cases, results) of a saved replay, in the shapes ``save_replay`` took."""
        metas = list(self.db.query("SELECT * FROM replays WHERE id = ?", [replay_id]))
        if not metas:
            return None
        cases = self.db.execute(
            "SELECT idx, capture_id, control, first_failing FROM replay_cases "
            "WHERE replay_id = ? ORDER BY idx", [replay_id]).fetchall()
        results = self.db.execute(
            "SELECT case_idx, version_idx, prediction, confidence, latency_ms, error, failing, "
            "outputs FROM replay_results WHERE replay_id = ? ORDER BY version_idx, case_idx",
            [replay_id]).fetchall()
        return metas[0], cases, results

    def count_selected_captures(self, *, endpoint: str | None = None,
                                statuses: Sequence[str] | None = None,
                                failed: bool | None = None, start_ns: int | None = None,
                                end_ns: int | None = None, label: str | None = None,
                                model_version: str | None = None) -> int:
        """How many captures ``select_captures`` would return with no limit: one COUNT over
        the same filters, reading no blob (a replay says how many its --limit left out)."""
        where, args = self._capture_filter(endpoint, statuses, failed, start_ns, end_ns, label,
                                           model_version)
        return int(self.db.execute("SELECT count(*) FROM captures c WHERE "
                                   + " AND ".join(where), args).fetchone()[0])

    # The columns whose values a refused selection lists; a fixed map, so no caller's text
    # ever becomes SQL.
    _VALUE_COLUMNS: ClassVar[dict[str, str]] = {
        "status": "c.status", "label": "c.label", "model_version": "c.model_version"}

    def capture_value_counts(self, column: str, *, endpoint: str | None = None,
                             statuses: Sequence[str] | None = None,
                             failed: bool | None = None, start_ns: int | None = None,
                             end_ns: int | None = None, label: str | None = None,
                             model_version: str | None = None) -> dict[str | None, int]:
        """The values ``column`` (status, label or model_version) takes among the captures
        these filters select, with how many have each, most common first."""
        col = self._VALUE_COLUMNS[column]
        where, args = self._capture_filter(endpoint, statuses, failed, start_ns, end_ns, label,
                                           model_version)
        rows = self.db.execute(f"SELECT {col}, count(*) FROM captures c WHERE "
                               + " AND ".join(where)
                               + f" GROUP BY {col} ORDER BY count(*) DESC, {col}", args)
        return {r[0]: int(r[1]) for r in rows.fetchall()}

    def replay_case_counts(self, replay_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """(failures, controls) of each of these saved replays, from their case rows."""
        if not replay_ids:
            return {}
        rows = self.db.execute(
            "SELECT replay_id, count(*) - coalesce(sum(control), 0), coalesce(sum(control), 0) "
            "FROM replay_cases WHERE replay_id IN (SELECT value FROM json_each(?)) "
            "GROUP BY replay_id", [json.dumps([int(i) for i in replay_ids])])
        return {int(r[0]): (int(r[1]), int(r[2])) for r in rows.fetchall()}

    def delete_replay(self, replay_id: int) -> bool:
        """Remove a saved replay with its cases and results, all in one transaction (the
        captures stay); False when there is no such replay."""
        try:
            with self.db.conn:
                self.db.execute("DELETE FROM replay_results WHERE replay_id = ?", [replay_id])
                self.db.execute("DELETE FROM replay_cases WHERE replay_id = ?", [replay_id])
                gone = self.db.execute("DELETE FROM replays WHERE id = ?", [replay_id]).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"cannot delete replay {replay_id} from {self.path}: {exc}") \
                from exc
        return gone > 0

    def capture_records(self, ids: Sequence[int]
                        ) -> dict[int, tuple[str, int, str | None, str | None, float | None]]:
        """Endpoint URI, time (ns), request id, recorded prediction and confidence of each of
        these captures (those still in the workspace), without their tensors."""
        if not ids:
            return {}
        rows = self.db.execute(
            "SELECT c.id, e.uri, c.ts_ns, c.request_id, c.prediction, c.confidence "
            "FROM captures c JOIN endpoints e ON e.id = c.endpoint_id "
            "WHERE c.id IN (SELECT value FROM json_each(?))", [json.dumps([int(i) for i in ids])])
        return {int(r[0]): (r[1], int(r[2]), r[3], r[4], r[5]) for r in rows.fetchall()}

    # -- incidents and reports (issue 7) --------------------------------------------------

    _INCIDENT_COLUMNS = ("severity", "status", "trigger_ns", "cleared_ns", "updated_ns",
                         "value", "threshold", "summary", "details", "resolved_ns")

    def insert_incident(self, endpoint: str, *, rule: str, severity: str, status: str,
                        opened_ns: int, trigger_ns: int, value: float, threshold: float,
                        summary: str, details: dict | None = None, note: str | None = None,
                        ) -> int:
        """A new incident (and its first note, in the same transaction); returns its id."""
        try:
            with self.db.conn:
                eid = self.endpoint_id(endpoint)
                cur = self.db.execute(
                    "INSERT INTO incidents (endpoint_id, rule, severity, status, opened_ns, "
                    "trigger_ns, cleared_ns, updated_ns, value, threshold, summary, details) "
                    "VALUES (?,?,?,?,?,?,NULL,?,?,?,?,?)",
                    [eid, rule, severity, status, opened_ns, trigger_ns, trigger_ns, value,
                     threshold, summary, json.dumps(details or {})])
                incident_id = int(cur.lastrowid)
                if note:
                    self._insert_note(incident_id, note, "probescope", trigger_ns)
        except sqlite3.Error as exc:
            self._endpoint_ids.clear()
            raise StoreError(f"cannot write an incident to {self.path}: {exc}") from exc
        return incident_id

    def update_incident(self, incident_id: int, *, note: str | None = None,
                        note_author: str = "probescope", note_ts_ns: int | None = None,
                        **changes: object) -> None:
        """Change some of an incident's columns (and add a note) in one transaction."""
        bad = sorted(set(changes) - set(self._INCIDENT_COLUMNS))
        if bad:
            raise ValueError(f"not incident columns: {', '.join(bad)}")
        if "details" in changes:
            changes["details"] = json.dumps(changes["details"] or {})
        if note_ts_ns is None:
            note_ts_ns = time.time_ns()  # one instant for the note and the status change
        if "status" in changes and "resolved_ns" not in changes:
            # Resolving records when; any other status (reopened, acknowledged) is not resolved.
            changes["resolved_ns"] = note_ts_ns if changes["status"] == "resolved" else None
        try:
            with self.db.conn:
                if changes:
                    # Column names come from the fixed list above, values are parameters.
                    sets = ", ".join(f"{k} = ?" for k in changes)
                    self.db.execute(f"UPDATE incidents SET {sets} WHERE id = ?",
                                    [*changes.values(), incident_id])
                if note:
                    self._insert_note(incident_id, note, note_author, note_ts_ns)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot update incident {incident_id} in {self.path}: "
                             f"{exc}") from exc

    def _insert_note(self, incident_id: int, text: str, author: str,
                     ts_ns: int | None) -> int:
        cur = self.db.execute(
            "INSERT INTO incident_notes (incident_id, ts_ns, author, text) VALUES (?,?,?,?)",
            [incident_id, ts_ns if ts_ns is not None else time.time_ns(), author, text])
        return int(cur.lastrowid)

    def add_incident_note(self, incident_id: int, text: str, *, author: str = "",
                          ts_ns: int | None = None) -> int:
        try:
            with self.db.conn:
                return self._insert_note(incident_id, text, author, ts_ns)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot add a note to {self.path}: {exc}") from exc

    def incidents(self, *, endpoint: str | None = None, rule: str | None = None,
                  status: str | None = None, limit: int = 1000) -> list[dict]:
        """Incidents, newest first, with the endpoint's URI and details decoded."""
        where, args = [], []
        if endpoint is not None:
            where.append("i.endpoint_id = ?")
            args.append(self._lookup_endpoint(endpoint) or -1)
        if rule is not None:
            where.append("i.rule = ?")
            args.append(rule)
        if status is not None:
            where.append("i.status = ?")
            args.append(status)
        sql = ("SELECT i.*, e.uri AS endpoint FROM incidents i "
               "JOIN endpoints e ON e.id = i.endpoint_id"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY i.opened_ns DESC, i.id DESC LIMIT ?")
        rows = list(self.db.query(sql, [*args, limit]))
        for row in rows:
            row["details"] = json.loads(row["details"] or "{}")
        return rows

    def incident(self, incident_id: int) -> dict | None:
        rows = list(self.db.query(
            "SELECT i.*, e.uri AS endpoint FROM incidents i "
            "JOIN endpoints e ON e.id = i.endpoint_id WHERE i.id = ?", [incident_id]))
        if not rows:
            return None
        rows[0]["details"] = json.loads(rows[0]["details"] or "{}")
        return rows[0]

    def incident_notes(self, incident_id: int) -> list[dict]:
        return list(self.db.query(
            "SELECT id, ts_ns, author, text FROM incident_notes WHERE incident_id = ? "
            "ORDER BY ts_ns, id", [incident_id]))

    def set_incident_rules(self, endpoint: str, rules: dict) -> None:
        """Per-endpoint overrides of the incident rules' defaults (a JSON object)."""
        with self.db.conn:
            self.db.execute(
                "INSERT OR REPLACE INTO incident_rules (endpoint_id, rules, set_ns) "
                "VALUES (?,?,?)", [self.endpoint_id(endpoint), json.dumps(rules),
                                   time.time_ns()])

    def incident_rules(self, endpoint: str) -> dict | None:
        eid = self._lookup_endpoint(endpoint)
        if eid is None:
            return None
        row = self.db.execute("SELECT rules FROM incident_rules WHERE endpoint_id = ?",
                              [eid]).fetchone()
        return None if row is None else json.loads(row[0])

    def count_between(self, endpoint: str, metric: str, start_ns: int, end_ns: int) -> int:
        """Samples of one series with start_ns <= ts_ns <= end_ns, counted in the index."""
        eid, mid = self._lookup_endpoint(endpoint), self._lookup_metric(metric)
        if eid is None or mid is None:
            return 0
        return int(self.db.execute(
            "SELECT count(*) FROM samples WHERE endpoint_id = ? AND metric_id = ? "
            "AND ts_ns >= ? AND ts_ns <= ?", [eid, mid, start_ns, end_ns]).fetchone()[0])

    def count_captures_between(self, endpoint: str, start_ns: int, end_ns: int) -> int:
        """Captures of an endpoint with start_ns <= ts_ns <= end_ns (an imported log keeps
        one per request, so these are its requests when it has no latency column)."""
        eid = self._lookup_endpoint(endpoint)
        if eid is None:
            return 0
        return int(self.db.execute(
            "SELECT count(*) FROM captures WHERE endpoint_id = ? AND ts_ns >= ? AND ts_ns <= ?",
            [eid, start_ns, end_ns]).fetchone()[0])

    def last_sample_ns(self, endpoint: str, before_ns: int | None = None, *,
                       alive: bool = False) -> int | None:
        """The newest ts_ns of any series of an endpoint (at or before ``before_ns``);
        ``alive``: leaving out the probe's ``up`` 0 samples, which say it could not reach
        the endpoint."""
        eid = self._lookup_endpoint(endpoint)
        if eid is None:
            return None
        up = self._lookup_metric(Metric.UP) if alive else None
        # One max() per metric lets SQLite answer each from the index's end.
        best = None
        for (mid,) in self.db.execute("SELECT id FROM metrics").fetchall():
            row = self.db.execute(
                "SELECT max(ts_ns) FROM samples WHERE endpoint_id = ? AND metric_id = ? "
                "AND ts_ns <= ?" + (" AND value != 0" if mid == up else ""),
                [eid, mid, _span(None, before_ns)[1]]
            ).fetchone()
            if row[0] is not None and (best is None or row[0] > best):
                best = int(row[0])
        return best

    def down_since_ns(self, endpoint: str, before_ns: int) -> int | None:
        """When the endpoint's probe began saying it is down (``up`` 0), if its newest ``up``
        sample at or before ``before_ns`` says so; else None. A probe writes ``up`` 0 at
        each failed attempt to reach its server and ``up`` 1 once it answers again."""
        eid, mid = self._lookup_endpoint(endpoint), self._lookup_metric(Metric.UP)
        if eid is None or mid is None:
            return None
        newest = self.db.execute(
            "SELECT value FROM samples WHERE endpoint_id = ? AND metric_id = ? AND ts_ns <= ? "
            "ORDER BY ts_ns DESC LIMIT 1", [eid, mid, before_ns]).fetchone()
        if newest is None or newest[0] != 0:
            return None
        (back,) = self.db.execute(
            "SELECT max(ts_ns) FROM samples WHERE endpoint_id = ? AND metric_id = ? "
            "AND ts_ns <= ? AND value != 0", [eid, mid, before_ns]).fetchone()
        (since,) = self.db.execute(
            "SELECT min(ts_ns) FROM samples WHERE endpoint_id = ? AND metric_id = ? "
            "AND ts_ns > ? AND ts_ns <= ? AND value = 0",
            [eid, mid, -1 if back is None else back, before_ns]).fetchone()
        return int(since)

    def captures_between(self, endpoint: str, start_ns: int, end_ns: int, *,
                         failed: bool | None = None, limit: int = 1000,
                         with_tensors: bool = True) -> list[StoredCapture]:
        """An endpoint's captures in a time range, oldest first."""
        where = ["c.endpoint_id = ?", "c.ts_ns >= ?", "c.ts_ns <= ?"]
        args: list = [self._lookup_endpoint(endpoint) or -1, start_ns, end_ns]
        if failed is not None:
            where.append("c.status != ?" if failed else "c.status = ?")
            args.append(str(CaptureStatus.OK))
        tensors = "c.inputs, c.outputs" if with_tensors else "NULL, NULL"
        sql = (f"SELECT c.id, e.uri, c.ts_ns, c.latency_ms, c.status, {tensors}, c.request_id, "
               "c.error, c.label, c.prediction, c.confidence, c.model_version, c.truncated "
               "FROM captures c JOIN endpoints e ON e.id = c.endpoint_id WHERE "
               + " AND ".join(where) + " ORDER BY c.ts_ns LIMIT ?")
        return [self._row_to_capture(r) for r in self.db.execute(sql, [*args, limit])]

    def capture_status_counts(self, endpoint: str, start_ns: int, end_ns: int) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT status, count(*) FROM captures WHERE endpoint_id = ? AND ts_ns >= ? "
            "AND ts_ns <= ? GROUP BY status ORDER BY count(*) DESC",
            [self._lookup_endpoint(endpoint) or -1, start_ns, end_ns]).fetchall()
        return {str(s): int(n) for s, n in rows}
