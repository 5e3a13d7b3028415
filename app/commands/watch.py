"""``probescope watch URI... --db PATH --seconds N``: attach probes headless and summarise."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from app.commands import COMMANDS, _args
from app.commands._recording import LiveJudging, add_run_options, record
from app.core.domain import EndpointUri, UriError
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
                        "with label and id arrays); a URI that names another file with "
                        "payload= is refused")
    p.add_argument("--capture-rate", type=_args.share, default=1.0,
                   help="share of successful requests kept as captures (failures always)")
    p.add_argument("--slo-ms", type=_args.positive, help="latency above this is a failure")


def _payload_clash(uris: Sequence[str], payload: Path | None) -> str | None:
    """Why --payload and a URI's ``payload=`` cannot both be meant (they name different
    files), or None. The URI's would win at the probe, silently sending other rows than the
    ones typed after --payload."""
    if payload is None:
        return None
    for text in uris:
        try:
            given = EndpointUri.parse(text).param("payload")
        except UriError:
            continue  # attaching it says what is wrong with it
        if given and not _same_file(Path(given), payload):
            return (f"--payload {payload} and payload={given} in {text} name different files; "
                    "give the rows one way: drop --payload, or payload= from the URI")
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # links and other spellings of one file
    except OSError:  # one is not there: attaching says so
        return a.resolve() == b.resolve()


def run(args: argparse.Namespace) -> int:
    clash = _payload_clash(args.uris, args.payload)
    if clash:
        print(f"probescope: {clash}", file=sys.stderr)
        return 2
    options = ProbeOptions(rate_hz=args.rate, payload=args.payload,
                           capture_rate=args.capture_rate, slo_ms=args.slo_ms)
    judging = LiveJudging(args.db)

    def incidents(result: dict) -> None:
        result["incidents_opened"] = judging.opened

    return record(args.uris, args.db, args.seconds, options, args.json, incidents,
                  with_monitor=judging)
