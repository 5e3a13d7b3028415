"""``probescope watch URI... --db PATH --seconds N``: attach probes headless and summarise."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.commands import COMMANDS, _args
from app.commands._recording import LiveJudging, add_run_options, record
from probes import ProbeOptions


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("watch", help=COMMANDS["watch"])
    p.add_argument("uris", nargs="+", metavar="URI",
                   help="endpoints, e.g. onnx:model.onnx?provider=cpu or system:")
    add_run_options(p, default_seconds=10)
    p.add_argument("--rate", type=_args.non_negative, default=20.0,
                   help="requests per second for active probes; 0 = flat out (default 20)")
    p.add_argument("--payload", type=Path,
                   help="input rows active probes send (.csv, .parquet, .jsonl, .npy; .npz "
                        "with label and id arrays)")
    p.add_argument("--capture-rate", type=_args.share, default=1.0,
                   help="share of successful requests kept as captures (failures always)")
    p.add_argument("--slo-ms", type=_args.positive, help="latency above this is a failure")


def run(args: argparse.Namespace) -> int:
    options = ProbeOptions(rate_hz=args.rate, payload=args.payload,
                           capture_rate=args.capture_rate, slo_ms=args.slo_ms)
    judging = LiveJudging(args.db)

    def incidents(result: dict) -> None:
        result["incidents_opened"] = judging.opened

    return record(args.uris, args.db, args.seconds, options, args.json, incidents,
                  with_monitor=judging)
