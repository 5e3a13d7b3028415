"""``probescope report --db PATH --incident ID|latest --out FILE.pdf``: an incident's PDF report."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from app.commands import COMMANDS, _args
from app.core.incident_rules import IncidentError
from app.report import CONTEXT_S, PAGE_SIZES, ReportError, write_report


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help=COMMANDS["report"],
                       description="Write one incident's report as PDF: what tripped and when, "
                                   "plots of its window, failures, notes, reproducibility.")
    p.add_argument("--db", required=True, type=Path, help="workspace SQLite file")
    # Collected, not overwritten: a second --incident once silently won; a report is of one.
    p.add_argument("--incident", action="append", metavar="ID|latest",
                   help="incident id (see `probescope incidents`) or 'latest' (default); "
                        "one per report")
    p.add_argument("--out", required=True,
                   help="PDF file to write; a new name without an extension gets .pdf")
    p.add_argument("--page-size", default="A4", choices=PAGE_SIZES, type=_page_size,
                   help="paper size (default A4)")
    p.add_argument("--context", type=_args.duration, default=CONTEXT_S, metavar="DURATION",
                   help="plot this much before the incident opened, e.g. 10m (default "
                        f"{CONTEXT_S:g}s; a long incident gets a fifth of its length; the plot "
                        "never runs past the recording)")


def _page_size(text: str) -> str:
    for size in PAGE_SIZES:
        if size.lower() == text.lower():
            return size
    return text  # argparse's choices check names the valid ones


def out_path(text: str) -> str:
    """``--out`` as the file to write: a new file named without any extension gets ".pdf"
    (``--out report`` wrote a PDF named "report" that nothing opened as one). Anything that
    exists, or ends with a separator, is kept as given, so the writer's refusals (a folder,
    a device, a file that is not a PDF) still apply to exactly what was named."""
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.suffix or path.name in ("", ".", "..") \
            or os.path.lexists(path):
        return text
    return text + ".pdf"


def run(args: argparse.Namespace) -> int:
    incidents = args.incident or ["latest"]
    if len(incidents) > 1:
        print(f"probescope: --incident was given {len(incidents)} times "
              f"({', '.join(incidents)}); a report covers one incident: run report once for "
              "each", file=sys.stderr)
        return 2
    try:
        out = write_report(args.db, incidents[0], out_path(args.out), page_size=args.page_size,
                           context_s=args.context)
    except (ReportError, IncidentError) as exc:
        print(f"probescope: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
