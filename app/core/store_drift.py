"""The drift tables: each endpoint's reference, and the evaluations with their per-feature
points; also the capture reads a drift window is built from.

Apart from ``Store`` because drift is a feature of its own (app/core/drift*.py) with its own
tables, which nothing else writes. The capture reads beside them (input tensors in a time
range, the span of an endpoint's captures) were written for drift's windows.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence

from app.core import codec
from app.core.domain import StoreError
from app.core.store_base import StoreBase, _span


class DriftTables(StoreBase):
    """The drift reads and writes of ``Store``."""

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
