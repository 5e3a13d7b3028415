"""A replay's cases as columns (stacked inputs, labels, kinds, roles, capture ids), built either
from Case objects or straight from the workspace's rows without building any Capture.
Thread: the replay's; a lazily read case list reads in whichever thread first asks for it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import overload

import numpy as np

from app.core import codec
from app.core.classes import NEVER_PREDICTED, label_index
from app.core.domain import Capture, CaptureStatus, TensorBlob
from app.core.replay_targets import ReplayError
from app.core.store import Store

_NO_LABEL_MATCH = NEVER_PREDICTED  # a label that names no class never equals a prediction
_NO_LABEL = -3  # no label at all (never equals a prediction either)
_KIND_CODES = {s: k for k, s in enumerate(CaptureStatus)}  # StrEnum: keys match plain strings
_LOW, _SLOW = _KIND_CODES[CaptureStatus.LOW_CONFIDENCE], _KIND_CODES[CaptureStatus.SLOW]


@dataclass(frozen=True, slots=True)
class Case:
    capture_id: int | None
    capture: Capture
    control: bool = False


@dataclass
class Group:
    """Cases whose inputs share names, dtypes and row shapes, stacked into one array each."""

    rows: np.ndarray | None  # case indices; None when the group is every case, in order
    feeds: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.feeds.values())))


@dataclass
class CaseSet:
    """Cases as columns, prepared once and shared by every version of a replay."""

    cases: Sequence[Case]  # a list, or a LazyCases when read straight from the workspace
    groups: list[Group]
    singles: list[int]  # cases that are not one row each: run alone
    labels: np.ndarray  # int64 class index, _NO_LABEL_MATCH when not an index
    has_label: np.ndarray
    low_confidence: np.ndarray  # captured as LOW_CONFIDENCE
    slow: np.ndarray  # captured as SLOW
    control: np.ndarray
    capture_ids: list[int | None]
    label_texts: list[str | None]  # the captured labels as recorded
    kinds: list[str] = field(default_factory=list)  # the captured statuses (mismatch, slow...)
    # Each case's endpoint, as a key per case (its URI, or its id in the workspace) and the
    # keys' URIs; no keys: every case is the one endpoint in ``endpoint_of``. Mapped to a
    # URI per case only when a judgement needs it.
    endpoint_keys: Sequence[object] = ()
    endpoint_of: dict[object, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.capture_ids)

    @functools.cached_property
    def judged_on_confidence(self) -> np.ndarray:
        """Cases whose confidence decides too: low-confidence captures, unlabelled controls."""
        return self.low_confidence | (self.control & ~self.has_label)

    @functools.cached_property
    def every_labelled(self) -> bool:
        return bool(self.has_label.all())

    @functools.cached_property
    def confidence_rows(self) -> np.ndarray:
        return np.flatnonzero(self.judged_on_confidence)

    @functools.cached_property
    def slow_rows(self) -> np.ndarray:
        return np.flatnonzero(self.slow)

    @functools.cached_property
    def slow_facts(self) -> list[Facts]:
        """``facts_of(slow_rows)``, read once: the SLO, the recording version and the notes
        about unjudged cases all need them, and for lazily read cases each read is a query."""
        return self.facts_of(self.slow_rows) if self.slow_rows.size else []

    def confidence_limits(self, by_endpoint: dict[str, float]) -> np.ndarray | None:
        """Per case, the minimum confidence its endpoint's probe held answers to (NaN where
        it held none); None when no endpoint of these cases held one."""
        table = {k: by_endpoint.get(uri, np.nan) for k, uri in self.endpoint_of.items()}
        if all(np.isnan(v) for v in table.values()):
            return None
        keys = self.endpoint_keys
        if not keys:
            return np.full(len(self), next(iter(table.values())))
        return np.fromiter(map(table.__getitem__, keys), dtype=np.float64, count=len(keys))

    def facts_of(self, rows: np.ndarray) -> list[Facts]:
        """Endpoint, recorded latency and model version of these cases; from the workspace
        for lazily read cases, so a few rows do not make every capture load."""
        if isinstance(self.cases, LazyCases):
            return self.cases.facts_of(rows)
        return [_facts(self.cases[i].capture) for i in rows.tolist()]

    def inputs(self, i: int) -> tuple[TensorBlob, ...]:
        """Case ``i``'s captured inputs (used for the few cases that run alone)."""
        return self.cases[i].capture.inputs

    def labels_for(self, names: Sequence[str]) -> np.ndarray:
        """The label codes for a version whose model names its classes ``names`` (its
        ``classes`` metadata): a label given by name becomes that class's index. Without
        names, ``labels``."""
        if not names:
            return self.labels
        key = tuple(names)
        cached = self._named_labels.get(key)
        if cached is None:
            codes = {lab: _NO_LABEL if lab is None else label_index(lab, key)
                     for lab in set(self.label_texts)}
            cached = self._named_labels[key] = np.fromiter(
                map(codes.__getitem__, self.label_texts), dtype=np.int64,
                count=len(self.label_texts))
        return cached

    @functools.cached_property
    def _named_labels(self) -> dict[tuple[str, ...], np.ndarray]:
        return {}

    def unmatched_labels(self, names: Sequence[str]) -> int:
        """How many labelled cases name no class of such a version: compared with its
        predictions they can never match."""
        return int(np.count_nonzero(self.labels_for(names) == _NO_LABEL_MATCH))


Facts = tuple[str | None, float | None, str | None]  # endpoint, latency ms, model version


def _facts(capture: Capture) -> Facts:
    return capture.endpoint, capture.latency_ms, capture.model_version


def _label_code(label: str | None) -> int:
    return _NO_LABEL if label is None else label_index(label, ())


def _columns(labels: list, statuses: list
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Label codes, has-label, low-confidence and slow flags. Few distinct labels and kinds:
    each is coded once, then mapped over every case at C level."""
    n = len(labels)
    codes = {lab: _label_code(lab) for lab in set(labels)}
    coded = np.fromiter(map(codes.__getitem__, labels), dtype=np.int64, count=n)
    kind_of = {s: _KIND_CODES.get(s, -1) for s in set(statuses)}
    kinds = np.fromiter(map(kind_of.__getitem__, statuses), dtype=np.int8, count=n)
    return coded, coded != _NO_LABEL, kinds == _LOW, kinds == _SLOW


def prepare(cases: Sequence[Case]) -> CaseSet:
    """Group and stack the cases' input bytes; label and kind columns. Column-wise with
    C-level iteration (map, attrgetter): this runs over every case of a replay."""
    cases = list(cases)
    n = len(cases)
    caps = list(map(attrgetter("capture"), cases))
    raw_labels = list(map(attrgetter("label"), caps))
    control = np.fromiter(map(attrgetter("control"), cases), dtype=bool, count=n)
    statuses = list(map(attrgetter("status"), caps))
    labels, has_label, low, slow = _columns(raw_labels, statuses)
    uris = list(map(attrgetter("endpoint"), caps))
    inputs = list(map(attrgetter("inputs"), caps))
    groups: list[Group] = []
    singles: list[int] = []
    if n and set(map(len, inputs)) == {1}:
        firsts = list(map(itemgetter(0), inputs))
        keys = set(map(attrgetter("name", "dtype", "shape"), firsts))
        if len(keys) == 1:
            name, dtype, shape = next(iter(keys))
            if shape and shape[0] == 1:
                data = b"".join(map(attrgetter("data"), firsts))
                groups = [Group(None, {name: np.frombuffer(data, dtype=np.dtype(dtype))
                                       .reshape((n, *shape[1:]))})]
    if n and not groups:
        groups, singles = _grouped(inputs)
    return CaseSet(cases, groups, singles, labels, has_label, low, slow, control,
                   list(map(attrgetter("capture_id"), cases)), raw_labels,
                   list(map(str, statuses)), uris, {u: u for u in set(uris)})


def prepare_columns(path: str | Path, failed: tuple, controls: tuple,
                    endpoint_of: dict[object, str] | None = None) -> CaseSet:
    """A case set from ``Store.select_capture_columns`` results (the failures, then the
    controls), without building a Capture: the inputs are stacked from the encoded blobs in
    one pass when they share one tensor header (a probe's captures do). The Case objects
    are read from the workspace at ``path`` only if someone asks for them.
    ``endpoint_of``: the workspace's endpoint ids to URIs (``Store.endpoint_uris``) for
    results read with their endpoint ids; else the one endpoint every case comes from."""
    ids = [*failed[0], *controls[0]]
    n = len(ids)
    control = np.zeros(n, dtype=bool)
    control[len(failed[0]):] = True
    raw_labels = [*failed[2], *controls[2]]
    statuses = [*failed[1], *controls[1]]
    labels, has_label, low, slow = _columns(raw_labels, statuses)
    blobs = [*failed[3], *controls[3]]
    group = _stack_encoded(blobs) if n else None
    if group is not None:
        groups, singles = [group], []
    elif n:
        groups, singles = _grouped(list(map(codec.decode, blobs)))
    else:
        groups, singles = [], []
    return CaseSet(LazyCases(path, ids, control), groups, singles, labels, has_label, low,
                   slow, control, ids, raw_labels, statuses,
                   (*failed[4], *controls[4]) if len(failed) > 4 else (), endpoint_of or {})


def _stack_encoded(blobs: list[bytes]) -> Group | None:
    """Every blob the same single tensor header followed by one row's bytes: the rows as one
    array, with one join, one header comparison and one copy. None when they differ."""
    try:
        lengths = set(map(len, blobs))
    except TypeError:  # a capture stored without inputs (NULL)
        return None
    first = blobs[0]
    size = len(first)
    if size < 4 or lengths != {size}:
        return None
    try:
        tensors = codec.decode(first)
    except codec.CodecError:
        return None
    head = size - sum(len(t.data) for t in tensors)
    if len(tensors) != 1 or not tensors[0].shape or tensors[0].shape[0] != 1:
        return None
    t = tensors[0]
    raw = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), size)
    # Equal headers mean equal names, dtypes, shapes and byte counts: checked for every row.
    if not (raw[:, :head] == raw[0, :head]).all():
        return None
    rows = np.ascontiguousarray(raw[:, head:]).view(np.dtype(t.dtype))
    return Group(None, {t.name: rows.reshape((len(blobs), *t.shape[1:]))})


def _grouped(inputs: list[tuple]) -> tuple[list[Group], list[int]]:
    """The general case: several input signatures, several inputs, or odd shapes."""
    keyed: dict[tuple, tuple[list[int], list[list[bytes]]]] = {}
    singles: list[int] = []
    for i, blobs in enumerate(inputs):
        if not blobs or any(not b.shape or b.shape[0] != 1 for b in blobs):
            singles.append(i)
            continue
        key = tuple((b.name, b.dtype, b.shape) for b in blobs)
        entry = keyed.get(key)
        if entry is None:
            entry = keyed[key] = ([], [[] for _ in blobs])
        entry[0].append(i)
        for k, b in enumerate(blobs):
            entry[1][k].append(b.data)
    groups = []
    every = len(keyed) == 1 and not singles
    for key, (rows, datas) in keyed.items():
        feeds = {name: np.frombuffer(b"".join(datas[k]), dtype=np.dtype(dtype)).reshape(
            (len(rows), *shape[1:])) for k, (name, dtype, shape) in enumerate(key)}
        groups.append(Group(None if every else np.asarray(rows, dtype=np.int64), feeds))
    return groups, singles


class LazyCases(Sequence[Case]):
    """A replay's cases, read from the workspace (one query, its own read-only connection,
    in the asking thread) the first time any is asked for. A replay itself needs only the
    columns; the case list is for people looking at single cases."""

    def __init__(self, path: str | Path, capture_ids: list[int], control: np.ndarray) -> None:
        self.path = Path(path)
        self._ids = capture_ids
        self._control = control
        self._cases: list[Case] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, i: int) -> Case: ...
    @overload
    def __getitem__(self, i: slice) -> list[Case]: ...

    def __getitem__(self, i: int | slice) -> Case | list[Case]:
        return self.materialise()[i]

    def __iter__(self) -> Iterator[Case]:
        return iter(self.materialise())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and (not self._ids or list(self) == list(other))

    __hash__ = None  # type: ignore[assignment]  (mutable-like, as a list)

    def __repr__(self) -> str:
        return f"LazyCases({len(self)} cases from {self.path})"

    def facts_of(self, rows: np.ndarray) -> list[Facts]:
        with self._lock:
            if self._cases is not None:
                return [_facts(self._cases[i].capture) for i in rows.tolist()]
        ids = [self._ids[i] for i in rows.tolist()]
        store = Store(self.path, readonly=True)
        try:
            found = store.capture_facts(ids)
        finally:
            store.close()
        return [found.get(i, (None, None, None)) for i in ids]

    def materialise(self) -> list[Case]:
        """Every case with its full capture (read once, then kept)."""
        with self._lock:
            if self._cases is None:
                found = {}
                if self._ids:
                    store = Store(self.path, readonly=True)
                    try:
                        found = store.captures_by_id(self._ids)
                    finally:
                        store.close()
                missing = [i for i in self._ids if i not in found]
                if missing:
                    raise ReplayError(f"capture {missing[0]} is no longer in {self.path}")
                self._cases = [Case(i, found[i].capture, c) for i, c in
                               zip(self._ids, self._control.tolist(), strict=True)]
            return self._cases
