"""An endpoint's drift reference, kept in the workspace: a data file, a time range of its own
captures, or the demo's reference; and loading it as a data frame. Thread: the caller's Store.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from app.core.demo import demo_path
from app.core.domain import EndpointUri, TensorBlob, UriError, not_a_file
from app.core.drift import (
    BOOKKEEPING_COLUMNS,
    PREDICTION_COLUMN,
    DriftError,
    capture_frame,
    tensor_rows,
)
from app.core.store import Store, StoreError
from probes.payload import payload_columns

# Columns of a data file that are not model inputs: the same set probes/payload.py skips when it
# turns rows into tensors, so capture tensors line up with the remaining columns in order.
NON_INPUT_COLUMNS = BOOKKEEPING_COLUMNS | {"label", PREDICTION_COLUMN}
# Endpoints whose probes read metrics and capture no request: no inputs to drift.
METRICS_ONLY_SCHEMES = frozenset({"system", "prom+http", "prom+https"})
DEMO_REFERENCE = "reference.csv"


class ReferenceKind(enum.StrEnum):
    FILE = "file"
    CAPTURES = "captures"
    DEMO = "demo"


@dataclass(frozen=True, slots=True)
class Reference:
    """Where a reference comes from; ``columns`` names the input tensor's features in order."""

    kind: ReferenceKind
    path: Path | None = None
    source_endpoint: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    columns: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind is ReferenceKind.CAPTURES:
            return (f"captures of {self.source_endpoint} from "
                    f"{_iso(self.start_ns, 'the first capture')} "
                    f"to {_iso(self.end_ns, 'the last capture')}")
        if self.kind is ReferenceKind.DEMO:
            return f"the demo reference ({DEMO_REFERENCE})"
        return f"file {self.path}"


def _iso(ts_ns: int | None, open_end: str) -> str:
    if ts_ns is None:
        return open_end
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).isoformat(timespec="seconds")


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV, Parquet, JSON-lines or .npy file as a data frame, or a DriftError saying why
    not. A .npy file's columns are x0, x1, ...: the names captures without names get."""
    path = Path(path)
    if problem := not_a_file(path, "data file"):
        raise DriftError(problem)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True)
        if suffix == ".npy":  # rows of features, as `watch --payload` sends them
            rows = np.load(path, allow_pickle=False)
            rows = rows.reshape(len(rows), -1) if rows.ndim else rows.reshape(1, 1)
            return pd.DataFrame(rows, columns=[f"x{i}" for i in range(rows.shape[1])])
    except Exception as exc:
        raise DriftError(f"cannot read {path}: {str(exc).strip().splitlines()[0]}") from exc
    raise DriftError(f"{path}: unsupported format '{suffix}'; use .csv, .parquet, .jsonl or "
                     ".npy")


def input_columns(frame: pd.DataFrame) -> tuple[str, ...]:
    """The columns of a data file that a probe sends as the input tensor, in order."""
    return tuple(str(c) for c in frame.columns if str(c).lower() not in NON_INPUT_COLUMNS)


def file_reference(path: str | Path) -> Reference:
    path = Path(path).resolve()
    frame = read_table(path)
    if frame.empty:
        raise DriftError(f"{path} holds no rows to take as a reference")
    return Reference(ReferenceKind.FILE, path=path, columns=input_columns(frame))


def check_width(store: Store, endpoint: str, columns: Sequence[str]) -> None:
    """``refuse_width`` against the endpoint's latest capture (none yet: nothing to check)."""
    refuse_width(endpoint, columns, row_width(store.capture_inputs(endpoint, limit=1)))


def row_width(rows: Sequence[tuple[int, Sequence[TensorBlob], str | None]]) -> int | None:
    """Values per request row of the first capture among ``rows`` that holds inputs."""
    for _, inputs, _ in rows:
        if inputs:
            try:
                return int(tensor_rows(inputs[0]).shape[1])
            except (ValueError, TypeError):
                return None
    return None


def refuse_width(endpoint: str, columns: Sequence[str], width: int | None) -> None:
    """Refuse a reference whose input columns cannot be the endpoint's captured rows: the
    captures carry values by position only, so a reference of another width would compare
    alcohol with whatever came first, and leave the rest untested without a word."""
    if not columns or width is None or width == len(columns):
        return
    shown = ", ".join(columns[:4]) + (", ..." if len(columns) > 4 else "")
    raise DriftError(f"the reference has {len(columns)} input columns ({shown}); "
                     f"{endpoint}'s captures hold {width} values per row: give one with "
                     "the model's inputs, in the model's order")


def demo_reference() -> Reference:
    return Reference(ReferenceKind.DEMO,
                     columns=input_columns(read_table(demo_path(DEMO_REFERENCE))))


def captures_reference(endpoint: str, start_ns: int | None, end_ns: int | None,
                       columns: Sequence[str] = ()) -> Reference:
    return Reference(ReferenceKind.CAPTURES, source_endpoint=endpoint, start_ns=start_ns,
                     end_ns=end_ns, columns=tuple(columns))


def payload_names(endpoint: str) -> tuple[str, ...]:
    """The names of an endpoint's input values, in the order its probe sends them, when its
    URI names a payload file with named columns; () otherwise (a server's clients' traffic,
    a .npy payload)."""
    try:
        payload = EndpointUri.parse(endpoint).param("payload")
    except UriError:
        return ()
    return payload_columns(payload) if payload else ()


def input_names(store: Store, endpoint: str) -> tuple[str, ...]:
    """The names of an endpoint's captured input values, in tensor order: its drift
    reference's columns (what drift calls them), else its probe's (``sent_names``); () when
    neither is known."""
    reference = get_reference(store, endpoint)
    if reference is not None and reference.columns:
        return reference.columns
    return sent_names(store, endpoint)


def sent_names(store: Store, endpoint: str) -> tuple[str, ...]:
    """The names of the values an endpoint's probe sends, in order: as the probe recorded
    them when attached (``watch --payload``, the window), else its URI's payload file's."""
    return store.endpoint_input_names(endpoint) or payload_names(endpoint)


def input_names_of(store: Store, endpoints: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``input_names`` of each endpoint (a replay's cases, to label their inputs)."""
    return {e: input_names(store, e) for e in endpoints}


def in_capture_order(store: Store, endpoint: str, columns: Sequence[str]) -> tuple[str, ...]:
    """``columns`` (a reference's inputs) in the order the endpoint's probe sends them, when
    it sends the same columns in another order. Captures carry values by position and are
    named by the reference's columns, so a reference file written in another order would
    compare alcohol with whatever the probe sends first."""
    names = sent_names(store, endpoint)
    if names and names != tuple(columns) and sorted(names) == sorted(columns):
        return names
    return tuple(columns)


def set_reference(store: Store, endpoint: str, reference: Reference) -> Reference:
    """Keep ``reference`` as the endpoint's, its columns in the endpoint's order
    (``in_capture_order``), and return what was kept; DriftError if its width cannot be the
    endpoint's captured rows (``check_width``)."""
    scheme = endpoint.partition(":")[0]
    if scheme in METRICS_ONLY_SCHEMES:
        raise DriftError(f"{endpoint} records metrics, not model inputs: drift needs an "
                         "endpoint whose requests are captured (onnx:, v2+http://, a tap...)")
    check_width(store, endpoint, reference.columns)
    reference = replace(reference, columns=in_capture_order(store, endpoint, reference.columns))
    store.set_drift_reference(
        endpoint, kind=str(reference.kind),
        path=str(reference.path) if reference.path else None,
        source_endpoint=reference.source_endpoint, start_ns=reference.start_ns,
        end_ns=reference.end_ns, columns=reference.columns)
    return reference


def set_reference_if_missing(store: Store, endpoint: str, reference: Reference) -> bool:
    """Give an endpoint this reference unless it has one (the demo's endpoints at start-up);
    returns whether it was set."""
    if store.drift_reference(endpoint) is not None:
        return False
    set_reference(store, endpoint, reference)
    return True


def get_reference(store: Store, endpoint: str) -> Reference | None:
    row = store.drift_reference(endpoint)
    if row is None:
        return None
    return Reference(ReferenceKind(row["kind"]), Path(row["path"]) if row["path"] else None,
                     row["source_endpoint"], row["start_ns"], row["end_ns"],
                     tuple(row["columns"]))


def load_reference(store: Store, reference: Reference) -> pd.DataFrame:
    """The reference rows. For a captures reference: features of the first input tensor
    (named by ``columns``, or x0, x1, ... when none are known) plus the prediction."""
    if reference.kind is ReferenceKind.FILE:
        assert reference.path is not None
        return read_table(reference.path)
    if reference.kind is ReferenceKind.DEMO:
        return read_table(demo_path(DEMO_REFERENCE))
    rows = store.capture_inputs(reference.source_endpoint or "", reference.start_ns,
                                reference.end_ns, sampled_only=True)
    if not rows:
        raise DriftError(f"the reference ({reference.describe()}) holds no captures")
    names = reference.columns
    if not names:
        first = next((r[1][0] for r in rows if r[1]), None)
        width = int(np.prod(first.shape)) if first is not None else 0
        names = tuple(f"x{i}" for i in range(width))
    return capture_frame(rows, names)


def resolve_endpoint(store: Store, name: str) -> str:
    """``Store.resolve_endpoint``, failing as a DriftError for the drift paths' callers."""
    try:
        return store.resolve_endpoint(name)
    except StoreError as exc:
        raise DriftError(str(exc)) from None
