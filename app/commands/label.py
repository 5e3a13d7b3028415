"""``probescope label FILE --db PATH``: join late ground-truth labels to captures by request
id; a capture whose prediction disagrees with its label becomes a failure (MISMATCH).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.commands import COMMANDS
from app.core.importer import LogImportError, apply_labels


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label", help=COMMANDS["label"])
    p.add_argument("file", type=Path, help="labels: .csv, .parquet or .jsonl")
    p.add_argument("--db", required=True, type=Path, help="workspace SQLite file")
    p.add_argument("--id-column", help="request id column (default: request_id or id)")
    p.add_argument("--label-column", help="(default: label)")
    p.add_argument("--endpoint", help="only label this endpoint's captures")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    if not args.db.exists():
        print(f"probescope: no workspace at {args.db}", file=sys.stderr)
        return 2
    try:
        r = apply_labels(args.file, args.db, id_column=args.id_column,
                         label_column=args.label_column, endpoint=args.endpoint)
    except LogImportError as exc:
        print(f"probescope: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"rows": r.rows, "matched": r.matched, "unknown": r.unknown,
                          "blank": r.blank, "new_failures": r.new_failures,
                          "cleared": r.cleared}))
    else:
        print(f"labelled {r.matched} captures from {r.rows} rows ({r.unknown} ids unknown, "
              f"{r.blank} rows without a label or id): {r.new_failures} new failures, "
              f"{r.cleared} cleared")
    return 0
