"""``probescope tap --listen HOST:PORT --upstream URL --db PATH``: a recording reverse proxy in
front of a model server; runs until Ctrl+C or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from app.commands import COMMANDS, _args
from app.core.agent import AgentError, parse_listen
from app.core.tap import DEFAULT_MAX_RECORD_BYTES, Tap, TapError
from app.core.tap_proxy import ClientLimits


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tap", help=COMMANDS["tap"])
    p.add_argument("--listen", default="127.0.0.1:9000",
                   help="HOST:PORT clients connect to (default 127.0.0.1:9000; port 0 picks one)")
    p.add_argument("--upstream", required=True, help="the model server, e.g. http://host:8000")
    p.add_argument("--db", required=True, type=Path, help="workspace SQLite file")
    p.add_argument("--max-record-bytes", type=_args.size, default=DEFAULT_MAX_RECORD_BYTES,
                   help="bodies longer than this are forwarded whole but recorded cut "
                        f"(default {DEFAULT_MAX_RECORD_BYTES})")
    p.add_argument("--timeout", type=_args.seconds, default=30.0,
                   help="seconds to wait for the upstream's answer (then 504, recorded)")
    p.add_argument("--seconds", type=_args.seconds,
                   help="stop after this long (default: until Ctrl+C)")
    limits = ClientLimits()
    p.add_argument("--max-body-bytes", type=_args.count, default=limits.max_body_bytes,
                   help="a longer request body is answered 413 and not forwarded "
                        f"(default {limits.max_body_bytes} = 64 MiB)")
    p.add_argument("--max-connections", type=_args.count, default=limits.max_connections,
                   help="client connections served at once; more wait to be accepted "
                        f"(default {limits.max_connections}; each takes two file descriptors)")
    p.add_argument("--client-timeout", type=_args.seconds, default=limits.client_timeout_s,
                   help="seconds a client has to send a request's whole head, from its "
                        "connect or its first byte; a body gets this plus 1 s per 64 KiB "
                        f"(default {limits.client_timeout_s:g}; then 408)")
    p.add_argument("--idle-timeout", type=_args.seconds, default=limits.idle_timeout_s,
                   help="seconds a kept-alive client connection may wait for its next "
                        f"request (default {limits.idle_timeout_s:g})")


def run(args: argparse.Namespace) -> int:
    try:
        host, port = parse_listen(args.listen)
        tap = Tap(args.upstream, args.db, host=host, port=port,
                  max_record_bytes=args.max_record_bytes, timeout_s=args.timeout,
                  limits=ClientLimits(max_connections=args.max_connections,
                                      client_timeout_s=args.client_timeout,
                                      idle_timeout_s=args.idle_timeout,
                                      max_body_bytes=args.max_body_bytes))
        tap.start()
    except (AgentError, TapError) as exc:
        print(f"probescope: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        h, p = tap.address
        print(f"probescope tap serving http://{h}:{p} -> {args.upstream} (db {args.db})",
              flush=True)
        stop.wait(args.seconds)
    finally:
        tap.close()
    print(f"forwarded {tap.forwarded} requests ({tap.calls} inference calls), "
          f"recorded {tap.recorded} captures")
    if tap.not_recorded:
        print(f"probescope: {tap.not_recorded} forwarded calls were not recorded (still "
              "waiting on the server when the tap stopped, refused by the workspace, or "
              "the recording process had stopped: see above)", file=sys.stderr)
        return 1
    return 0
