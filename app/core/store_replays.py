"""Model versions and saved replays, and the capture selections a replay is built from.

Apart from ``Store`` because replay (app/core/replay*.py, the versions registry) is a feature
of its own: it owns the ``versions``, ``replays``, ``replay_cases`` and ``replay_results``
tables, and its reads of the captures (filtered selections, their columns without decoding,
counts, facts by id) are shaped for it and used by little else.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import ClassVar

from app.core.domain import CaptureStatus, EndpointUri, StoreError, UriError
from app.core.store_base import StoreBase, StoredCapture, _span, capture_select


def _uri_min_confidence(uri: str) -> float | None:
    """The ``min_confidence`` an endpoint's URI gives its probe, if a valid one."""
    try:
        value = float(EndpointUri.parse(uri).param("min_confidence") or "nan")
    except (UriError, ValueError):
        return None
    return value if 0.0 <= value <= 1.0 else None


def _time_order(newest_first: bool) -> str:
    """Captures by time, ties by insertion, both the same way: an index on ts_ns (or on
    endpoint_id, ts_ns) then serves the order with no sort."""
    way = "DESC" if newest_first else "ASC"
    return f" ORDER BY c.ts_ns {way}, c.id {way}"


class ReplayTables(StoreBase):
    """The versions, replay and capture-selection reads and writes of ``Store``."""

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
        sql = (capture_select() + " WHERE " + " AND ".join(where)
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
            capture_select() + " WHERE c.id IN (SELECT value FROM json_each(?))",
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
