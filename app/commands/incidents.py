"""``probescope incidents``: list incidents, judge stored history, acknowledge, resolve, add
notes, and set an endpoint's incident rules.

    probescope incidents --db WS.db [list] [--status open] [--json]
    probescope incidents --db WS.db show ID [--json]
    probescope incidents --db WS.db evaluate [--step 5]
    probescope incidents --db WS.db ack|resolve ID [--note TEXT] [--json]
    probescope incidents --db WS.db note ID TEXT [--json]
    probescope incidents --db WS.db rules ENDPOINT [KEY=VALUE ...] [--json]
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from app.commands import COMMANDS, _args
from app.core.incident_rules import RULE_TITLES, IncidentError, RuleConfig
from app.core.incidents import (
    Status,
    change_status,
    evaluate_range,
    find_incident,
    status_text,
)
from app.core.store import Store


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("incidents", help=COMMANDS["incidents"])
    p.add_argument("--db", type=Path, help="workspace SQLite file (before or after ACTION)")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    ls = actions.add_parser("list", help="list incidents, newest first (the default)")
    for q in (p, ls):
        # After the action they must not reset what was given before it (argparse's
        # sub-parser defaults would), so there they default to "not given".
        unset = argparse.SUPPRESS if q is ls else None
        q.add_argument("--status", choices=Status.ALL, default=unset,
                       help="only incidents with this status")
        q.add_argument("--json", action="store_true", default=unset or False,
                       help="one JSON object per line")
    sh = actions.add_parser("show", help="one incident: its fields and its notes")
    sh.add_argument("id", help="incident id or 'latest'")
    ev = actions.add_parser("evaluate", help="run the incident rules over the stored history")
    ev.add_argument("--step", type=_args.seconds, default=5.0, help="seconds between evaluations")
    for name, text in (("ack", "acknowledge an incident"),
                       ("resolve", "resolve an incident, also one the rule cleared")):
        a = actions.add_parser(name, help=text)
        a.add_argument("id", help="incident id or 'latest'")
        a.add_argument("--note", help="a note to add with the change (always saved)")
    n = actions.add_parser("note", help="add a note to an incident")
    n.add_argument("id", help="incident id or 'latest'")
    n.add_argument("text", help="the note")
    changes = [actions.choices[name] for name in ("ack", "resolve", "note")]
    for q in (sh, *changes):
        q.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print the incident (after the change) as one JSON object, "
                            "with its notes")
    r = actions.add_parser("rules", help="show or set an endpoint's incident rules")
    r.add_argument("endpoint",
                   help="endpoint URI, or a part of it that names one endpoint (e.g. wine-v1)")
    # default=[]: without it argparse counts a "*" positional as required, and names it
    # among the missing arguments when only the endpoint is.
    r.add_argument("settings", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides, e.g. error_rate=0.2 window_s=60 disabled=memory,down "
                        "(error_rate and drift_share are shares, below 1)")
    r.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print one JSON object: endpoint, rules (slo_ms null: the endpoint's "
                        "own SLO applies), set (the keys overridden) and endpoint_slo_ms")
    # `incidents ack --db W latest` as well as `incidents --db W ack latest`, as the other
    # commands take it after theirs; not given there, it must not reset the one before.
    for action in (ls, sh, ev, *changes, r):
        action.add_argument("--db", type=Path, default=argparse.SUPPRESS,
                            help="workspace SQLite file")


def _utc(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "-"
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def run(args: argparse.Namespace) -> int:
    action = args.action or "list"
    if args.db is None:
        print("probescope: incidents needs --db PATH (the workspace)", file=sys.stderr)
        return 2
    if not args.db.exists():  # every action reads a workspace first; none should start one
        print(f"probescope: no workspace at {args.db}", file=sys.stderr)
        return 2
    store = Store(args.db, readonly=action in ("list", "show"))
    try:
        return {"list": _list, "show": _show, "evaluate": _evaluate, "ack": _set_status,
                "resolve": _set_status, "note": _note, "rules": _rules}[action](store, args)
    except IncidentError as exc:
        print(f"probescope: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()


def _list(store: Store, args: argparse.Namespace) -> int:
    rows = store.incidents(status=getattr(args, "status", None))
    if getattr(args, "json", False):
        # A count, not the notes: one query for the whole list, and a line per incident
        # stays short however much was written (`show ID --json` gives the notes).
        counts = store.incident_note_counts()
        for row in rows:
            print(json.dumps({**row, "state": status_text(row),
                              "note_count": counts.get(row["id"], 0)}))
        return 0
    if not rows:
        print("no incidents")
        return 0
    print(f"{'id':>4}  {'status':<12} {'severity':<8} {'opened (UTC)':<19}  {'cleared (UTC)':<19}"
          f"  {'trigger':<16} endpoint")
    for r in rows:
        print(f"{r['id']:>4}  {status_text(r):<12} {r['severity']:<8} {_utc(r['opened_ns']):<19}  "
              f"{_utc(r['cleared_ns']):<19}  {RULE_TITLES.get(r['rule'], r['rule']):<16} "
              f"{r['endpoint']}")
    return 0


def _history_span(store: Store, uri: str) -> tuple[int, int] | None:
    span = (store.time_range(uri, "latency_ms") or store.time_range(uri, "rss_mb")
            or store.capture_span(uri))  # a log imported without latencies
    if span is None:
        return None
    # A probe that lost its server writes only ``up`` 0 samples: the outage after the last
    # latency is history to judge too (it ended the range, so a dead server opened nothing).
    return span[0], max(span[1], store.last_sample_ns(uri) or span[1])


def _evaluate(store: Store, args: argparse.Namespace) -> int:
    spans = [s for s in (_history_span(store, e["uri"]) for e in store.endpoints()) if s]
    if not spans:
        print("no samples to judge")
        return 0
    events = evaluate_range(store, min(s[0] for s in spans), max(s[1] for s in spans),
                            step_s=args.step)
    for e in events:
        # The times the incident records (the rule's first trip, the clearing's start), as
        # `incidents` lists them; the engine confirms each a little later.
        at = e.at_ns
        when = (f"{_utc(at)} (confirmed {_utc(e.ts_ns)[-8:]})" if at and at != e.ts_ns
                else _utc(e.ts_ns))
        print(f"{when}  #{e.incident_id} {e.kind}: {e.endpoint}: {e.detail}")
    print(f"{sum(e.kind == 'opened' for e in events)} incident(s) opened")
    return 0


def _show(store: Store, args: argparse.Namespace) -> int:
    row = find_incident(store, args.id)
    notes = store.incident_notes(row["id"])
    if getattr(args, "json", False):
        print(json.dumps(_incident_json(row, notes)))
        return 0
    unit = row["details"].get("unit") or ""
    cleared = (f"{_utc(row['cleared_ns'])} UTC (by the rule)" if row["cleared_ns"]
               else "not cleared")
    resolved = (f"{_utc(row['resolved_ns'])} UTC (by a person)" if row["resolved_ns"]
                else "by a person (the workspace does not say when)"
                if status_text(row) == Status.RESOLVED else "-")
    print(f"incident #{row['id']}: {RULE_TITLES.get(row['rule'], row['rule'])}")
    for key, value in (("status", f"{status_text(row)} · {row['severity']}"),
                       ("endpoint", row["endpoint"]),
                       ("opened", f"{_utc(row['opened_ns'])} UTC"),
                       ("confirmed", f"{_utc(row['trigger_ns'])} UTC"),
                       ("cleared", cleared), ("resolved", resolved),
                       ("peak", f"{row['value']:.4g}{unit and ' ' + unit} against a "
                                f"threshold of {row['threshold']:.4g}{unit and ' ' + unit}"),
                       ("summary", row["summary"])):
        print(f"{key:<10} {value}")
    print(f"notes ({len(notes)}, times in UTC)")
    for n in notes:
        # A note of several lines stays one block under its header, indented.
        text = str(n["text"]).replace("\n", "\n" + " " * 4)
        print(f"  {_utc(n['ts_ns'])}  {n['author'] or '(no author)'}: {text}")
    return 0


def _incident_json(row: dict, notes: list[dict]) -> dict:
    """An incident for scripts: its stored fields, ``state`` as the list shows it (cleared
    or resolved) and its notes, oldest first, each with its time in ns and in UTC."""
    return {**row, "state": status_text(row),
            "notes": [{**n, "utc": f"{_utc(n['ts_ns'])} UTC"} for n in notes]}


def _print_after(store: Store, args: argparse.Namespace, incident: dict, message: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(_incident_json(incident, store.incident_notes(incident["id"]))))
    else:
        print(message)


def _set_status(store: Store, args: argparse.Namespace) -> int:
    status = Status.ACKNOWLEDGED if args.action == "ack" else Status.RESOLVED
    done = change_status(store, args.id, status, note=args.note, author=_author())
    _print_after(store, args, done.incident, done.message)
    return 0


def _note(store: Store, args: argparse.Namespace) -> int:
    row = find_incident(store, args.id)
    text = args.text.strip()
    if not text:  # as the window refuses one: a header with nothing under it in the report
        raise IncidentError("a note needs some text; nothing was added")
    store.add_incident_note(row["id"], text, author=_author())
    _print_after(store, args, store.incident(row["id"]) or row,
                 f"note added to incident #{row['id']}")
    return 0


def _rules(store: Store, args: argparse.Namespace) -> int:
    # The lookup replay, drift and label use: the URI or a part only one URI has; a name
    # that matches none (or several) is an error, when reading as when writing.
    endpoint = store.resolve_endpoint(args.endpoint)
    given: dict[str, object] = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise IncidentError(f"'{item}' is not KEY=VALUE")
        given[key] = [v for v in value.split(",") if v] if key == "disabled" else value
    overrides = {**(store.incident_rules(endpoint) or {}), **given}
    try:
        config = RuleConfig().merged(overrides)  # refuses bad settings before any is stored
    except IncidentError as exc:
        RuleConfig().merged(given)  # one given here is bad: say so as it is
        # One stored by an older version (error_rate=2) that it no longer takes; the engine
        # judges this endpoint by the defaults until it is set again.
        raise IncidentError(f"{endpoint} has a stored setting that is refused ({exc}); the "
                            "defaults apply to it until that setting is given again") from None
    if given:
        store.set_incident_rules(endpoint, overrides)
    slo_ms = next((e.get("slo_ms") for e in store.endpoints() if e["uri"] == endpoint), None)
    if getattr(args, "json", False):
        print(json.dumps({"endpoint": endpoint, "rules": config.to_json(),
                          "set": sorted(overrides), "endpoint_slo_ms": slo_ms}))
        return 0
    print(f"incident rules of {endpoint}")
    for key, value in config.to_json().items():
        mark = " (set)" if key in overrides else ""
        if key == "slo_ms" and value is None:
            # None here is not "no SLO": the latency rule then uses the endpoint's own.
            value = (f"(the endpoint's SLO: {slo_ms:g} ms)" if slo_ms is not None else
                     "(none: the endpoint has no SLO, so the latency rule does not run)")
        print(f"{key} = {value}{mark}")
    return 0


def _author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
