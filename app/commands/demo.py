"""``probescope demo --db PATH --seconds N``: run the built-in demo scenario headless."""

from __future__ import annotations

import argparse

from app.commands._recording import add_run_options, record
from app.core.demo import demo_endpoints


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the built-in demo scenario headless")
    add_run_options(p, default_seconds=20)


def run(args: argparse.Namespace) -> int:
    def failures(result: dict) -> None:
        result["failures_captured"] = sum(e["failures_captured"] for e in result["endpoints"])

    return record(demo_endpoints(), args.db, args.seconds, None, args.json, failures)
