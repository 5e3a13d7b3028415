"""``probescope versions add|list --db PATH``: the workspace's model-version registry."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from app.commands import COMMANDS
from app.core.store import Store
from app.core.versions import (
    CHANGED,
    KIND_REMOTE,
    MISSING,
    ModelVersion,
    VersionError,
    register_all,
    registered_with_state,
    unregister,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("versions", help=COMMANDS["versions"])
    actions = p.add_subparsers(dest="versions_action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="register an ONNX file or a remote endpoint")
    add.add_argument("--db", required=True, type=Path, help="workspace SQLite file")
    add.add_argument("location", nargs="+",
                     help="model.onnx files, or endpoint URIs like v2+http://HOST:PORT/models/M")
    add.add_argument("--name", help="name to register under (one location only; default: "
                     "the file's stem)")
    add.add_argument("--version", dest="model_version",
                     help="version string (default: the model's metadata 'version')")
    add.add_argument("--replace", action="store_true",
                     help="let a name already registered for another file point at this one")
    add.add_argument("--json", action="store_true", help="print the registered versions as JSON")
    rm = actions.add_parser("remove", help="unregister versions by name (the files stay; saved "
                            "replays keep their results)")
    rm.add_argument("--db", required=True, type=Path, help="workspace SQLite file")
    rm.add_argument("names", nargs="+", metavar="NAME", help="registered version names")
    ls = actions.add_parser("list", help="list registered versions in registry order")
    ls.add_argument("--db", required=True, type=Path, help="workspace SQLite file")
    ls.add_argument("--json", action="store_true", help="print one JSON object")


_MARKS = {CHANGED: "changed since registered", MISSING: "file missing"}


def _table(versions: list[ModelVersion], states: dict[str, str | None] | None = None) -> str:
    """``states``: per name, ``file_state`` (a file changed or gone since registered gets a
    mark after its sha256, the one it no longer has)."""
    head = f"{'#':>3}  {'name':<18} {'version':<10} {'params':>9} {'opset':>5} {'size':>9}  " \
           f"{'sha256':<12}  {'producer':<20} signature / location"
    lines = [head]
    for v in versions:
        state = (states or {}).get(v.name)
        lines.append(
            f"{v.id or '':>3}  {v.name:<18} {v.version or '-':<10} "
            f"{v.parameters if v.parameters is not None else '-':>9} "
            f"{v.opset if v.opset is not None else '-':>5} "
            f"{v.size_bytes if v.size_bytes is not None else '-':>9}  "
            f"{(v.sha256 or '-')[:12]:<12}  {v.producer or '-':<20} "
            f"{v.signature() or v.location}"
            + (f"  [{_MARKS[state]}: {v.location}]" if state else ""))
    changed = [v.name for v in versions if (states or {}).get(v.name) == CHANGED]
    if changed:
        lines.append(f"{', '.join(changed)}: the file is not what was registered; replay "
                     "refuses it until it is registered again (`probescope versions add`, "
                     "under a new --name to keep both)")
    # Gone is not changed: registering again needs the file, so the way out is to bring it
    # back or to drop the name.
    missing = [v.name for v in versions if (states or {}).get(v.name) == MISSING]
    if missing:
        lines.append(f"{', '.join(missing)}: the file is missing; replay asks it nothing, so "
                     f"it gets no verdict: restore the file, or `probescope versions remove "
                     f"{shlex.join(missing)}`")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.versions_action == "add" and args.name and len(args.location) > 1:
        print("probescope: --name names one version; give one location with it", file=sys.stderr)
        return 2
    if args.versions_action in ("list", "remove") and not args.db.exists():
        print(f"probescope: no workspace at {args.db}", file=sys.stderr)
        return 2
    store = Store(args.db)
    states: dict[str, str | None] | None = None  # ``file_state`` per name, for list
    try:
        if args.versions_action == "add":
            shown = register_all(store, args.location, args.name, args.model_version,
                                 replace=args.replace)
        elif args.versions_action == "remove":
            unregister(store, args.names)
            print(f"removed {', '.join(args.names)}")
            return 0
        else:
            listed = registered_with_state(store)
            shown = [v for v, _ in listed]
            states = {v.name: state for v, state in listed}
    except VersionError as exc:
        print(f"probescope: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    if args.json:
        print(json.dumps({"versions": [
            # Whether the file is still the bytes registered ("unchanged", "changed",
            # "missing"); null for a server's model.
            {**v.to_json(), "file": None if v.kind == KIND_REMOTE
             else states.get(v.name) or "unchanged"} if states is not None
            else v.to_json() for v in shown]}))
    else:
        print(_table(shown, states) if shown else "no versions registered; add one with "
              "`probescope versions add --db PATH MODEL.onnx`")
        if args.versions_action == "add":
            # A server's model names no version of itself here (its URI may not either), and
            # a contract's version clause and a SLOW failure's recording version need one.
            for v in shown:
                if v.kind == KIND_REMOTE and not v.version:
                    print(f"{v.name} is registered without a version: give the one its server "
                          "serves with --version V (or .../versions/V in the URI)")
    return 0
