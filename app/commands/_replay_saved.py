"""``replay --list``, ``--show`` and ``--delete``: the replays saved in a workspace, listed, read
back (and exported) or deleted, without running anything. Apart from the command's run, which
makes replays; these only read and remove them.
"""

from __future__ import annotations

import argparse
import json
import sys

from app.commands._replay_text import result_text
from app.core.domain import local_text
from app.core.replay import selection_json, selection_text
from app.core.replay_export import write_cases_csv
from app.core.replay_store import (
    STOPPED_NOTE,
    load_replay,
    saved_counts,
    saved_selection,
    saved_title,
)
from app.core.replay_targets import ReplayError
from app.core.store import Store
from app.core.summary import fit


def _listed(row: dict, cases: tuple[int, int] | None) -> dict:
    """One saved replay as --list shows it: when, its title, endpoint and filters, how many
    failures (of how many matched) and controls, versions, and what it was judged with."""
    counts = saved_counts(row)
    selection = saved_selection(row)
    failures = counts.get("failures", cases[0] if cases else None)
    controls = counts.get("controls", cases[1] if cases else None)
    return {"id": row["id"], "created": local_text(row["created_ns"]), "title": saved_title(row),
            "versions": [v["name"] for v in json.loads(row["versions"])],
            "cancelled": bool(row["cancelled"]),
            "criteria": json.loads(row["criteria"] or "{}"),
            "endpoint": selection.endpoint if selection else None,
            "selection": selection_json(selection), "selected": selection_text(selection),
            "cases": row["cases"], "failures": failures, "controls": controls,
            "failures_matched": counts.get("failures_matched")}


def _list_text(listed: list[dict]) -> str:
    def failures(r: dict) -> str:
        matched = r["failures_matched"]
        return (f"{r['failures']} of {matched}" if matched and matched > (r["failures"] or 0)
                else "?" if r["failures"] is None else str(r["failures"]))

    selected = [fit(r["selected"], 48) for r in listed]
    width = max(len("selected"), *map(len, selected))
    wide = max(len("failures"), *(len(failures(r)) for r in listed))
    lines = [f"{'id':>4}  {'created':<19}  {'failures':>{wide}}  {'controls':>8}  "
             f"{'selected':<{width}}  versions"]
    for r, chosen in zip(listed, selected, strict=True):
        # A replay held to the person's minimum, not the endpoints': said, or it reads like
        # the others while its counts differ.
        given = r["criteria"].get("min_confidence") \
            if r["criteria"].get("min_confidence_for_all") else None
        controls = "?" if r["controls"] is None else r["controls"]
        lines.append(f"{r['id']:>4}  {r['created']:<19}  {failures(r):>{wide}}  "
                     f"{controls:>8}  {chosen:<{width}}  {', '.join(r['versions'])}"
                     + (f'  "{r["title"]}"' if r["title"] else "")
                     + ("  (cancelled)" if r["cancelled"] else "")
                     + (f"  (every case held to confidence {given:g})"
                        if given is not None else ""))
    return "\n".join(lines)


def run_saved(args: argparse.Namespace) -> int:
    """``--list``, ``--show`` and ``--delete``: what earlier replays found, read from the
    workspace; or one of them gone."""
    if args.delete is not None:
        return _delete(args)
    store = Store(args.db, readonly=True)
    try:
        rows = store.replays()
        if args.list:
            # Replays saved before their counts were kept: counted from their case rows.
            older = [r["id"] for r in rows if "failures" not in saved_counts(r)]
            cases = store.replay_case_counts(older)
            listed = [_listed(r, cases.get(r["id"])) for r in rows]
            if args.json:
                print(json.dumps({"replays": listed}))
            elif not listed:
                print("no saved replays; run one with `probescope replay --db PATH`")
            else:
                print(_list_text(listed))
            return 0
        if args.show == "latest":
            if not rows:
                raise ReplayError(f"no saved replays in {args.db}")
            wanted = int(rows[0]["id"])
        else:
            try:
                wanted = int(args.show)
            except ValueError:
                raise ReplayError(f"--show takes a replay id or 'latest', not '{args.show}'; "
                                  "see --list") from None
            if not 0 < wanted < 2**63:  # SQLite's integers
                raise ReplayError(f"no saved replay {args.show}; see --list")
        result = load_replay(store, wanted)
        title = next((r["title"] for r in rows if r["id"] == wanted), None)
        if args.export:
            write_cases_csv(result, args.export, inputs=args.export_inputs,
                            workspace=args.db)
    finally:
        store.close()
    stop_note = title if title and STOPPED_NOTE.fullmatch(title) else None
    print(json.dumps(result.to_json()) if args.json
          else result_text(result, shown=True, stop_note=stop_note))
    if args.export:
        print(f"wrote {args.export}", file=sys.stderr)
    return 0


def _delete(args: argparse.Namespace) -> int:
    """``--delete ID``: the replay, its cases and its results, in one transaction."""
    store = Store(args.db)
    try:
        row = next((r for r in store.replays() if r["id"] == args.delete), None)
        # Read before it goes: the line below says which replay that was.
        listed = None if row is None else _listed(
            row, store.replay_case_counts([args.delete]).get(args.delete))
        if listed is None or not store.delete_replay(args.delete):
            raise ReplayError(f"no saved replay {args.delete} in {args.db}; see --list")
    finally:
        store.close()
    if args.json:
        print(json.dumps({"deleted": listed}))
    else:
        print(f"deleted replay {args.delete}"
              + (f' "{listed["title"]}"' if listed["title"] else "")
              + f" ({listed['created']}; {listed['selected']}; "
              f"{', '.join(listed['versions'])})")
    return 0
