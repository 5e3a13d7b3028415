"""What importing production logs (app/core/importer.py) needs of the captures beyond
``write_batch``: which request ids are captured already, and late labels set on the captures
they name, with the failure samples that labelling adds or undoes.

Apart from ``Store`` because these find captures by request id, not by endpoint and time as
every other read does, and only the importer uses them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from app.core.domain import Sample, StoreError
from app.core.store_base import StoreBase


class ProductionLogs(StoreBase):
    """The request-id reads and label writes of ``Store``."""

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
