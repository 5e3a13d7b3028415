"""Incidents, their notes and per-endpoint rules, and the reads of an instant or a time range
that the incident rules and reports ask of an endpoint.

Apart from ``Store`` because incidents (app/core/incidents.py, incident_rules.py, app/report)
are a feature of their own: they own the ``incidents``, ``incident_notes`` and
``incident_rules`` tables, and the "between" and "last sample" reads here answer their
questions (how many, what kinds of failure, since when is the endpoint down) for any range.
"""

from __future__ import annotations

import json
import sqlite3
import time

from app.core.domain import CaptureStatus, Metric, StoreError
from app.core.store_base import StoreBase, StoredCapture, _span, capture_select


class IncidentTables(StoreBase):
    """The incident reads and writes of ``Store``."""

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

    def incident_note_counts(self) -> dict[int, int]:
        """How many notes each incident has (one query, for listing them all)."""
        return {int(i): int(n) for i, n in self.db.execute(
            "SELECT incident_id, count(*) FROM incident_notes GROUP BY incident_id")}

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
        sql = (capture_select(with_tensors) + " WHERE " + " AND ".join(where)
               + " ORDER BY c.ts_ns LIMIT ?")
        return [self._row_to_capture(r) for r in self.db.execute(sql, [*args, limit])]

    def capture_status_counts(self, endpoint: str, start_ns: int, end_ns: int) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT status, count(*) FROM captures WHERE endpoint_id = ? AND ts_ns >= ? "
            "AND ts_ns <= ? GROUP BY status ORDER BY count(*) DESC",
            [self._lookup_endpoint(endpoint) or -1, start_ns, end_ns]).fetchall()
        return {str(s): int(n) for s, n in rows}
