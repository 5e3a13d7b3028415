"""``probescope drift``: per-column drift of a data file, or of an endpoint's recent captures,
against a reference; ``--evidently`` runs Evidently's full report instead of the fast path.

    probescope drift --reference REF.csv --current CUR.csv [--json] [--evidently]
    probescope drift --db WS.db --endpoint NAME [--window 10m] [--json] [--evidently]
    probescope drift --db WS.db --endpoint NAME --set-reference FILE|demo|captures:FROM..TO
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from app.commands import COMMANDS, _args
from app.core.domain import NEWEST_NS, OLDEST_NS
from app.core.drift import DriftError, DriftResult, drift
from app.core.drift_report import evidently_report
from app.core.drift_window import (
    NoReferenceError,
    endpoint_drift,
    endpoint_report,
    open_workspace,
)
from app.core.references import (
    Reference,
    captures_reference,
    demo_reference,
    file_reference,
    get_reference,
    load_reference,
    read_table,
    resolve_endpoint,
    sent_names,
    set_reference,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("drift", help=COMMANDS["drift"],
                       description="Per-column drift (method, score, threshold, verdict) and the "
                                   "share of drifted columns, with Evidently's methods and "
                                   "thresholds.")
    p.add_argument("--reference", type=Path, metavar="FILE",
                   help="reference data (.csv, .parquet, .jsonl); with --db it overrides the "
                        "endpoint's stored reference")
    p.add_argument("--current", type=Path, metavar="FILE", help="current data to compare")
    p.add_argument("--db", type=Path, help="workspace SQLite file (with --endpoint)")
    p.add_argument("--endpoint", metavar="NAME", help="endpoint URI, or a part of it")
    p.add_argument("--window", default="10m",
                   help="with --db: how much of the endpoint's latest captures to compare, "
                        "ending at its last capture (e.g. 90s, 10m, 2h; default 10m)")
    p.add_argument("--set-reference", metavar="SPEC",
                   help="with --db: store the endpoint's reference: a data file, 'demo', or "
                        "captures:FROM..TO (ISO times, UTC unless they name a zone; "
                        "either may be empty)")
    p.add_argument("--evidently", action="store_true",
                   help="run Evidently's full data-drift report instead of the fast path")
    p.add_argument("--html", type=Path, metavar="PATH",
                   help="with --evidently: where to save the report's HTML (with --db it goes "
                        "beside the workspace by default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except DriftError as exc:
        print(f"probescope: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.html is not None and not args.evidently:
        raise DriftError("--html saves Evidently's report: add --evidently")
    if args.db is not None:
        if not args.endpoint:
            raise DriftError("--db needs --endpoint NAME (which endpoint's captures to compare)")
        if args.current is not None:
            raise DriftError("give either --current FILE or --db with --endpoint, not both")
        if args.set_reference:
            return _set_reference(args)
        return _endpoint_drift(args)
    if args.reference is None or args.current is None:
        raise DriftError("give --reference FILE and --current FILE, "
                         "or --db PATH and --endpoint NAME")
    reference, current = read_table(args.reference), read_table(args.current)
    if args.evidently:
        result = evidently_report(reference, current, html_path=args.html)
    else:
        result = drift(reference, current)
    _print(result, args.json, {})
    return 0


def parse_duration_s(text: str) -> float:
    try:
        return _args.duration_s(text)
    except ValueError as exc:
        raise DriftError(str(exc)) from None


def _parse_time_ns(text: str) -> int | None:
    if not text.strip():
        return None
    try:
        stamp = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise DriftError(f"'{text}' is not an ISO time such as 2026-11-23T10:00:00") from exc
    if stamp.tzinfo is None:
        # UTC, as `import` reads a log's times without a zone: the same text names the same
        # captures on any machine.
        stamp = stamp.replace(tzinfo=UTC)
    # Whole microseconds, exactly: float seconds would lose the last digits of a ns stamp.
    ns = (stamp - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
    if not OLDEST_NS <= ns <= NEWEST_NS:
        raise DriftError(f"'{text}' is outside the times a workspace holds "
                         "(1677-09-21 to 2262-04-11)")
    return ns


def _set_reference(args: argparse.Namespace) -> int:
    store = open_workspace(args.db)
    try:
        endpoint = resolve_endpoint(store, args.endpoint)
        spec = args.set_reference
        reference: Reference
        if spec == "demo":
            reference = demo_reference()
        elif spec.startswith("captures:"):
            start, sep, end = spec.removeprefix("captures:").partition("..")
            if not sep:
                raise DriftError("write a captures reference as captures:FROM..TO")
            previous = get_reference(store, endpoint)
            start_ns, end_ns = _parse_time_ns(start), _parse_time_ns(end)
            if start_ns is not None and end_ns is not None and start_ns > end_ns:
                raise DriftError(f"captures:{spec.removeprefix('captures:')}: FROM is after TO")
            reference = captures_reference(endpoint, start_ns, end_ns,
                                           previous.columns if previous
                                           else sent_names(store, endpoint))
            load_reference(store, reference)  # refuse a range with no captures now, not later
        else:
            reference = file_reference(spec)
        given = reference.columns
        reference = set_reference(store, endpoint, reference)
    finally:
        store.close()
    print(f"drift reference of {endpoint}: {reference.describe()}")
    if reference.columns != given:
        print("its columns are matched by name to the order the probe's payload sends them: "
              + ", ".join(reference.columns))
    return 0


def _endpoint_drift(args: argparse.Namespace) -> int:
    window_s = parse_duration_s(args.window)
    try:
        if args.evidently:
            done = endpoint_report(args.db, args.endpoint, window_s,
                                   reference_file=args.reference, html_path=args.html)
        else:
            done = endpoint_drift(args.db, args.endpoint, window_s,
                                  reference_file=args.reference)
    except NoReferenceError as exc:
        raise DriftError(f"{exc}: --set-reference FILE|demo|captures:FROM..TO, or pass "
                         "--reference FILE") from exc
    window = done.window
    extra: dict = {"endpoint": window.endpoint,
                   "window": {"start_ns": window.start_ns, "end_ns": window.end_ns}}
    if done.html_path is not None:
        extra["html"] = str(done.html_path)
    _print(done.result, args.json, extra)
    return 0


def _print(result: DriftResult, as_json: bool, extra: dict) -> None:
    if as_json:
        print(json.dumps({**result.to_json(), **extra}))
        return
    rows = [[c.name, c.method or "-", "-" if c.score is None else f"{c.score:.4g}",
             "-" if c.threshold is None else f"{c.threshold:g}",
             "DRIFT" if c.drifted else ("no" if c.tested else "-"), c.note or ""]
            for c in result.columns]
    table = pd.DataFrame(rows, columns=["column", "method", "score", "threshold", "drifted",
                                        "note"])
    print(table.to_string(index=False))
    tested = len(result.tested)
    print(f"share drifted: {result.share_drifted:.3f} "
          f"({sum(c.drifted for c in result.columns)} of {tested} tested columns; "
          f"{result.rows_current} current rows vs {result.rows_reference} reference rows)")
    if result.note:
        print(result.note)
    for key in ("endpoint", "html"):
        if key in extra:
            print(f"{key}: {extra[key]}")
