"""Which cases a replay runs: the ``Selection`` (endpoint, kinds of failure, time span, label,
model version, how many failures and controls), its cases read from the workspace, and what it
chose in words and JSON, or why it chose nothing. Apart from judging and results: choosing
cases needs neither, and what a replay was chosen by is read and written without them.
Thread: the caller's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from app.core.domain import EndpointUri, UriError, local_text
from app.core.replay_cases import Case, CaseSet, prepare_columns
from app.core.store import Store
from app.core.versions import KIND_ONNX, registered


@dataclass(frozen=True, slots=True)
class Selection:
    """Which failures to replay (empty kinds: every kind of failure) and how many controls."""

    endpoint: str | None = None
    kinds: tuple[str, ...] = ()
    start_ns: int | None = None
    end_ns: int | None = None
    label: str | None = None
    model_version: str | None = None
    limit: int = 1000
    controls: int = 200


def _filters(selection: Selection) -> dict:
    return {"endpoint": selection.endpoint, "start_ns": selection.start_ns,
            "end_ns": selection.end_ns, "label": selection.label,
            "model_version": selection.model_version}


def select_cases(store: Store, selection: Selection) -> list[Case]:
    """The selected failures (newest first), then a control set of passing captures."""
    common = _filters(selection)
    failed = store.select_captures(**common, statuses=selection.kinds or None, failed=True,
                                   limit=selection.limit)
    controls = (store.select_captures(**common, failed=False, limit=selection.controls)
                if selection.controls > 0 else [])
    return ([Case(s.id, s.capture, False) for s in failed]
            + [Case(s.id, s.capture, True) for s in controls])


def select_case_set(store: Store, selection: Selection) -> CaseSet:
    """The same cases as ``select_cases``, in the same order, read as columns (ids, kinds,
    labels, stacked inputs) straight from the workspace: what ``replay`` needs, without a
    Capture per case. Its ``cases`` are read from the workspace only when asked for."""
    common = _filters(selection)
    # Each case's endpoint is read only where cases can come from several.
    sources = [selection.endpoint] if selection.endpoint else store.endpoints_with_captures()
    several = len(sources) > 1
    failed = store.select_capture_columns(**common, statuses=selection.kinds or None,
                                          failed=True, limit=selection.limit,
                                          with_endpoint=several)
    controls = (store.select_capture_columns(**common, failed=False, limit=selection.controls,
                                             with_endpoint=several)
                if selection.controls > 0 else ((),) * len(failed))
    return prepare_columns(store.path, failed, controls,
                           store.endpoint_uris() if several else
                           {None: sources[0]} if sources else {})


def count_failures(store: Store, selection: Selection) -> int:
    """How many failures ``selection`` matches with no limit: one COUNT over the same filters
    (``select_case_set`` keeps the newest ``selection.limit`` of them)."""
    return store.count_selected_captures(**_filters(selection),
                                         statuses=selection.kinds or None, failed=True)


def resolve_model_version(store: Store, given: str,
                          endpoint: str | None = None) -> tuple[str, str | None]:
    """The model version string to select captures by, and a note when ``given`` was not one
    but a registered version's name (or its sha256's first hex digits, as ``versions list``
    shows it). Captures record the version their model reports (its metadata ``version``,
    else its file's stem), while people know versions by their registered names."""
    if store.count_selected_captures(endpoint=endpoint, model_version=given):
        return given, None  # a version string the captures carry wins over any name
    text = given.strip().lower()
    by_sha = len(text) >= 8 and all(ch in "0123456789abcdef" for ch in text)
    known = registered(store)
    matches = [v for v in known if v.name == given] or [
        v for v in known if by_sha and v.sha256 and v.sha256.startswith(text)]
    # One file registered under two names is one model: its first name stands for it.
    if len({v.sha256 or v.name for v in matches}) != 1:
        return given, None
    v = matches[0]
    candidates = [c for c in (v.version, Path(v.location).stem if v.kind == KIND_ONNX
                              else None) if c and c != given]
    for c in candidates:
        if store.count_selected_captures(endpoint=endpoint, model_version=c):
            return c, (f"--model-version {given} is registered version {v.name}: replaying "
                       f"captures made by model version {c}")
    return given, None


def _counted(values: dict[str | None, int], most: int = 12) -> str:
    shown = [f"{'(none)' if v is None else v} ({n})" for v, n in list(values.items())[:most]]
    return ", ".join(shown) + (f", … {len(values) - most} more" if len(values) > most else "")


def nothing_selected(store: Store, selection: Selection) -> str | None:
    """Why ``selection`` matches no failure, naming the filter that matches none and the
    values the workspace holds for it (kinds, labels, model versions; the time span), or
    saying that the filters match only together; None when there is no failure at all (of
    its endpoint). Called once nothing matched."""
    scope: dict = {"endpoint": selection.endpoint, "failed": True}
    where = f" of {endpoint_name(selection.endpoint)}" if selection.endpoint else ""
    if not store.count_selected_captures(**scope):
        return None
    why = []
    checks = (("--kind", ", ".join(selection.kinds), "status", "kinds",
               {"statuses": selection.kinds}),
              ("--label", selection.label, "label", "labels", {"label": selection.label}),
              ("--model-version", selection.model_version, "model_version", "model versions",
               {"model_version": selection.model_version}))
    for flag, value, column, plural, term in checks:
        if value and not store.count_selected_captures(**scope, **term):
            why.append(f"{flag} {value} matches no failure{where}; {plural} there: "
                       + _counted(store.capture_value_counts(column, **scope)))
    timed = selection.start_ns is not None or selection.end_ns is not None
    if timed and not store.count_selected_captures(**scope, start_ns=selection.start_ns,
                                                   end_ns=selection.end_ns):
        first = store.select_captures(**scope, limit=1, newest_first=False)
        last = store.select_captures(**scope, limit=1)
        span = " to ".join(local_text(c.capture.ts_ns) for c in (first[0], last[0]))
        why.append(f"no failure{where} lies in the time asked for; they span {span}")
    if why:
        return "; ".join(why)
    given = [flag for flag, value in (("--kind", selection.kinds), ("--label", selection.label),
                                      ("--model-version", selection.model_version),
                                      ("--since/--until", selection.start_ns is not None
                                       or selection.end_ns is not None)) if value]
    return (f"no failure{where} matches {', '.join(given)} together, though each alone "
            "matches some")


def endpoint_name(uri: str) -> str:
    """A short name for an endpoint in a list: a local model's file name, a server's URI
    without its parameters (a probe's URI carries its payload path, rate, thresholds...)."""
    try:
        parsed = EndpointUri.parse(uri)
    except UriError:
        return uri
    target = parsed.target.partition("?")[0]
    if parsed.scheme == "onnx":
        return Path(target).stem
    return f"{parsed.scheme}:{target}"


def selection_text(selection: Selection | None) -> str:
    """The filters a replay chose its failures by, in a few words for a list of replays:
    "wine-v1, mismatch, label 2, since 2026-11-23 11:40:00"."""
    if selection is None:
        return "hand-picked cases"
    parts = [endpoint_name(selection.endpoint) if selection.endpoint else "every endpoint",
             "+".join(selection.kinds) if selection.kinds else "every kind"]
    if selection.label is not None:
        parts.append(f"label {selection.label}")
    if selection.model_version is not None:
        parts.append(f"model version {selection.model_version}")
    if selection.start_ns is not None:
        parts.append(f"since {local_text(selection.start_ns)}")
    if selection.end_ns is not None:
        parts.append(f"until {local_text(selection.end_ns)}")
    return ", ".join(parts)


def selection_json(selection: Selection | None) -> dict | None:
    """``selection`` for a JSON reader: its fields, with its time range also in UTC ISO 8601."""
    if selection is None:
        return None
    doc = asdict(selection)
    doc["kinds"] = list(selection.kinds)
    for key, ns in (("since", selection.start_ns), ("until", selection.end_ns)):
        doc[key] = (None if ns is None else
                    datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z"))
    return doc


def selection_from_json(doc: object) -> Selection | None:
    """A Selection from its saved JSON; keys it does not know (counts saved beside it) are
    left out."""
    if not isinstance(doc, dict):
        return None
    known = {f.name for f in fields(Selection)}
    kept = {k: v for k, v in doc.items() if k in known}
    if not kept:
        return None
    return Selection(**{**kept, "kinds": tuple(kept.get("kinds") or ())})
