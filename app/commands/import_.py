"""``probescope import FILE --db PATH --endpoint NAME``: a production log (CSV, Parquet, JSON
lines) becomes captures; rows whose prediction disagrees with their label become failures.

The module is ``import_`` because ``import`` is a Python keyword; it registers ``import``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.commands import COMMANDS
from app.commands._progress import progress_line
from app.core.importer import ColumnMap, LogImportError, import_log


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help=COMMANDS["import"])
    p.add_argument("file", type=Path, help="the log: .csv, .parquet or .jsonl")
    p.add_argument("--db", required=True, type=Path, help="workspace SQLite file")
    p.add_argument("--endpoint", required=True,
                   help="name for the log's endpoint (stored as log:NAME unless it is a URI)")
    p.add_argument("--id-column", help="request id column (default: request_id or id)")
    p.add_argument("--timestamp-column", help="time column: dates, or epoch seconds, ms, us or ns "
                                              "(default: timestamp, ts or time)")
    p.add_argument("--features", help="comma-separated feature columns "
                                      "(default: every column not used for something else)")
    p.add_argument("--prediction-column", help="(default: prediction)")
    p.add_argument("--label-column", help="(default: label)")
    p.add_argument("--latency-column", help="(default: latency_ms)")
    p.add_argument("--input-name", default="features",
                   help="the model input the features feed, for replay (default: features)")
    p.add_argument("--dtype", default="float32", help="feature dtype for replay "
                                                      "(default float32)")
    p.add_argument("--model-version", help="the model version that made the predictions")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    columns = ColumnMap(
        id=args.id_column, timestamp=args.timestamp_column,
        features=tuple(c.strip() for c in args.features.split(",")) if args.features else None,
        prediction=args.prediction_column, label=args.label_column,
        latency=args.latency_column)
    show = progress_line("importing")
    done = [0.0]  # the share of rows written so far, for a Ctrl+C

    def progress(share: float) -> None:
        done[0] = share
        show(share)

    try:
        result = import_log(args.file, args.db, args.endpoint, columns,
                            input_name=args.input_name, dtype=args.dtype,
                            model_version=args.model_version, progress=progress)
    except LogImportError as exc:
        print(f"probescope: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Rows go in by batches, each whole or not at all: say how far it got.
        print(f"\nprobescope: stopped by Ctrl+C with {done[0]:.0%} of the rows in {args.db}; "
              "importing the file again adds the rest (rows whose id is there are skipped)",
              file=sys.stderr)
        return 130
    finally:
        if sys.stderr.isatty():
            print(file=sys.stderr)  # end the progress line
    if args.json:
        print(json.dumps({"endpoint": result.endpoint, "rows": result.rows,
                          "imported": result.imported, "skipped": result.skipped,
                          "failures": result.failures}))
    else:
        print(f"{result.endpoint}: imported {result.imported} of {result.rows} rows "
              f"({result.skipped} already there), {result.failures} failures")
    if result.shared_ids:
        print(f"probescope: {result.shared_ids} rows share their request id with another row "
              "of the file; all were imported, and a label for that id labels each of them",
              file=sys.stderr)
    if result.ids_made_up:
        print("probescope: the file has no request id column, so each row got a new id: "
              "importing it again would add every row twice, and late labels cannot find "
              "them; name one with --id-column if it has one", file=sys.stderr)
    return 0
