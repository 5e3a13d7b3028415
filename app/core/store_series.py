"""Reads of sample series (one endpoint's one metric over time): raw values, a random share
of them, SQL-downsampled history for the plots, counts, and a series' ends.

Apart from ``Store`` because these only read the ``samples`` table, one series at a time,
and are what the plots, summaries and reports draw from; the writes that fill the table stay
in store.py, in the recorder's one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.core.domain import CaptureStatus
from app.core.store_base import StoreBase, _span


def bucket_width(start_ns: int, end_ns: int, buckets: int) -> int:
    """The width ``Store.history`` bins [start, end) into ``buckets`` with. Rounded up, so
    every sample falls in one of them: rounded down, the last few ns made a sliver of a
    bucket of their own, which a rate per bucket then read as traffic all but stopping at
    the right edge."""
    return max(1, -(-(end_ns - start_ns) // max(1, buckets)))


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


class SeriesReads(StoreBase):
    """The ``samples`` reads of ``Store``."""

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

    # -- agent cursors (issue 4) ----------------------------------------------------------

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

    def failure_points(self, endpoint: str, since_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """(ts_ns, latency_ms) of an endpoint's failed captures since ``since_ns``, oldest
        first: the red dots of its live latency plot."""
        eid = self._lookup_endpoint(endpoint)
        rows = [] if eid is None else self.db.execute(
            "SELECT ts_ns, latency_ms FROM captures WHERE endpoint_id = ? AND ts_ns >= ? "
            "AND status != ? ORDER BY ts_ns", [eid, since_ns, str(CaptureStatus.OK)]).fetchall()
        return (np.array([r[0] for r in rows], dtype=np.int64),
                np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64))

    def time_range(self, endpoint: str, metric: str) -> tuple[int, int] | None:
        """(first, last) ts_ns of one series, answered from the index; None when empty."""
        eid, mid = self._lookup_endpoint(endpoint), self._lookup_metric(metric)
        if eid is None or mid is None:
            return None
        row = self.db.execute(
            "SELECT min(ts_ns), max(ts_ns) FROM samples WHERE endpoint_id = ? AND metric_id = ?",
            [eid, mid]).fetchone()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))
