"""Command line: ``probescope [COMMAND]``; each subcommand is a thin call into the core.

With no command it opens the window on the demo. Errors a user can fix print one line on
stderr and exit with status 2; nothing prints a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

log = logging.getLogger("probescope")

EXIT_USER_ERROR = 2


def probescope_version() -> str:
    try:
        return version("probescope")
    except PackageNotFoundError:
        return "0+unknown"


def _add_run_options(p: argparse.ArgumentParser, *, default_seconds: float) -> None:
    p.add_argument("--db", required=True, type=Path, help="workspace SQLite file")
    p.add_argument("--seconds", type=float, default=default_seconds,
                   help=f"how long to record (default {default_seconds:g})")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="probescope",
        description="Watch ML inference endpoints: latency, memory, drift, failures.",
    )
    parser.add_argument("--version", action="version",
                        version=f"probescope {probescope_version()}")
    parser.add_argument("--debug", action="store_true", help="log verbosely; show tracebacks")
    parser.add_argument("--db", type=Path, dest="gui_db",
                        help="open this workspace in the window (no command)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    watch = sub.add_parser("watch", help="attach probes headless, record, print a summary")
    watch.add_argument("uris", nargs="+", metavar="URI",
                       help="endpoints, e.g. onnx:model.onnx?provider=cpu or system:")
    _add_run_options(watch, default_seconds=10)
    watch.add_argument("--rate", type=float, default=20.0,
                       help="requests per second for active probes; 0 = flat out (default 20)")
    watch.add_argument("--payload", type=Path,
                       help="input rows active probes send (.csv, .parquet, .jsonl, .npy)")
    watch.add_argument("--capture-rate", type=float, default=1.0,
                       help="share of successful requests kept as captures (failures always)")
    watch.add_argument("--slo-ms", type=float, help="latency above this is a failure")

    demo = sub.add_parser("demo", help="run the built-in demo scenario headless")
    _add_run_options(demo, default_seconds=20)
    return parser


def _record(uris: Sequence[str], db: Path, seconds: float, options: object,
            as_json: bool, extra: Callable[[dict], None] | None = None) -> int:
    from app.core.monitor import Monitor
    from app.core.store import Store
    from app.core.summary import format_table, summarize

    start_ns = time.time_ns()
    monitor = Monitor(db)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        attached = [monitor.attach(uri, options).endpoint for uri in uris]  # type: ignore[arg-type]
        stop.wait(seconds)
    finally:
        signal.signal(signal.SIGINT, previous)
        monitor.close()
    stats = monitor.stats()
    store = Store(db, readonly=True)
    try:
        summaries = [summarize(store, uri, start_ns) for uri in attached]
    finally:
        store.close()
    result = {"endpoints": [s.to_json() for s in summaries], "dropped": stats.dropped}
    if extra:
        extra(result)
    if as_json:
        print(json.dumps(result))
    else:
        print(format_table(summaries))
        for key, value in result.items():
            if key != "endpoints":
                print(f"{key.replace('_', ' ')}: {value}")
    if stats.last_error:
        print(f"probescope: warning: {stats.last_error}", file=sys.stderr)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from probes import ProbeOptions

    options = ProbeOptions(rate_hz=args.rate, payload=args.payload,
                           capture_rate=args.capture_rate, slo_ms=args.slo_ms)
    return _record(args.uris, args.db, args.seconds, options, args.json)


def cmd_demo(args: argparse.Namespace) -> int:
    from app.core.demo import demo_endpoints

    def failures(result: dict) -> None:
        result["failures_captured"] = sum(e["failures_captured"] for e in result["endpoints"])

    return _record(demo_endpoints(), args.db, args.seconds, None, args.json, failures)


def cmd_gui(args: argparse.Namespace) -> int:
    from app.gui.main_window import run_window

    return run_window(args.gui_db)


COMMANDS: dict[str | None, Callable[[argparse.Namespace], int]] = {
    None: cmd_gui,
    "watch": cmd_watch,
    "demo": cmd_demo,
}


def _user_errors() -> tuple[type[BaseException], ...]:
    from app.core.codec import CodecError
    from app.core.demo import DemoError
    from app.core.domain import UriError
    from app.core.store import StoreError
    from probes import ProbeError

    return (ProbeError, StoreError, UriError, CodecError, DemoError, OSError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except _user_errors() as exc:
        if args.debug:
            raise
        print(f"probescope: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"probescope: internal error: {type(exc).__name__}: {exc} "
              "(run with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
