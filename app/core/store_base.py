"""What the parts of the workspace store share: the ``StoredCapture`` row, the open-ended
time range, and ``StoreBase``, which declares what every part relies on.

``Store`` (store.py) is one class put together from a part per concern (store_series.py,
store_drift.py, store_replays.py, store_incidents.py, store_logs.py). Each part queries
through the ``Store``'s connection and its id lookups; they are declared here, once, so a part
reads (and type-checks) on its own and never imports store.py, which imports the parts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlite_utils

from app.core.domain import NEWEST_NS, OLDEST_NS, Capture


@dataclass(frozen=True, slots=True)
class StoredCapture:
    id: int
    capture: Capture


def _span(start_ns: int | None, end_ns: int | None) -> tuple[int, int]:
    """A time range for ``ts_ns >= ? AND ts_ns <= ?``; an open end means all of time."""
    return (OLDEST_NS if start_ns is None else start_ns,
            NEWEST_NS if end_ns is None else end_ns)


def capture_select(with_tensors: bool = True) -> str:
    """``SELECT`` of the capture columns ``Store._row_to_capture`` reads, in its order, from
    ``captures c`` joined with ``endpoints e``; a query adds its WHERE. Without tensors their
    columns read NULL (a list that shows no inputs need not read their blobs)."""
    tensors = "c.inputs, c.outputs" if with_tensors else "NULL, NULL"
    return ("SELECT c.id, e.uri, c.ts_ns, c.latency_ms, c.status, " + tensors + ", "
            "c.request_id, c.error, c.label, c.prediction, c.confidence, c.model_version, "
            "c.truncated FROM captures c JOIN endpoints e ON e.id = c.endpoint_id")


class StoreBase:
    """The attributes and lookups every part of the store uses; ``Store.__init__`` sets the
    attributes and ``Store`` defines the methods. A part only reads and calls them."""

    path: Path
    db: sqlite_utils.Database  # the one connection, owned by one thread
    # uri -> endpoints.id and name -> metrics.id, filled as rows are written; a failed
    # transaction clears them, since the ids it inserted were rolled back with it.
    _endpoint_ids: dict[str, int]
    _metric_ids: dict[str, int]
    _columns: dict[str, set[str]]  # per table, read once (``_has_column``)

    # Declared for readers and type checkers only: at run time ``Store``'s own methods are
    # the only ones, so a part calling one that Store lost fails loudly instead of getting None.
    if TYPE_CHECKING:
        def endpoint_id(self, uri: str, kind: str | None = None) -> int: ...
        def metric_id(self, name: str) -> int: ...
        def endpoints(self) -> list[dict]: ...
        def _lookup_endpoint(self, uri: str) -> int | None: ...
        def _lookup_metric(self, name: str) -> int | None: ...

        @staticmethod
        def _row_to_capture(r: Iterable) -> StoredCapture: ...
