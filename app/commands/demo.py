"""``probescope demo --db PATH --seconds N``: run the built-in demo scenario headless."""

from __future__ import annotations

import argparse

from app.commands import COMMANDS
from app.commands._recording import LiveJudging, add_run_options, record
from app.core.demo import MODEL_VERSIONS, demo_endpoints, give_references, model_path
from app.core.domain import EndpointUri
from app.core.store import Store
from app.core.versions import registered, seed


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help=COMMANDS["demo"])
    add_run_options(p, default_seconds=20)


def run(args: argparse.Namespace) -> int:
    # As in the window's demo: the bundled versions, registered, so that
    # `probescope replay --db PATH` replays the failures on them with no more typing.
    store = Store(args.db)
    try:
        versions_registered = seed(store, [str(model_path(v)) for v in MODEL_VERSIONS])
        # Said beside it: on a second run nothing is registered, which alone read as a failure.
        versions_in_workspace = len(registered(store))
        # As in the window's demo, so `probescope drift` and the window's Drift tab show the
        # drift this run records, without a --set-reference first.
        give_references(store, [str(EndpointUri.parse(u)) for u in demo_endpoints()])
    finally:
        store.close()
    # Judged live, as in the window: the error-rate burst opens once drift sets in, and the
    # drift history (and the drift rule) fill as they do there.
    judging = LiveJudging(args.db)

    def failures(result: dict) -> None:
        result["failures_captured"] = sum(e["failures_captured"] for e in result["endpoints"])
        result["incidents_opened"] = judging.opened
        result["versions_registered"] = versions_registered
        result["versions_in_workspace"] = versions_in_workspace

    return record(demo_endpoints(), args.db, args.seconds, None, args.json, failures,
                  with_monitor=judging)
