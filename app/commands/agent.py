"""``probescope agent --listen HOST:PORT --token-file F (--model PATH | --upstream URI)``: run
the headless edge agent until Ctrl+C or SIGTERM. Never imports Qt.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from app.commands import COMMANDS, _args
from app.core import agent_buffer
from app.core.agent import Agent, AgentConfig, AgentError, parse_listen
from app.core.agent_auth import TOKEN_ENV, TokenError, read_token
from app.core.agent_server import ListenLimits


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help=COMMANDS["agent"])
    p.add_argument("--listen", default="127.0.0.1:7070",
                   help="HOST:PORT to serve on (default 127.0.0.1:7070; port 0 picks one)")
    p.add_argument("--token-file", type=Path,
                   help=f"file holding the bearer token (chmod 600); else ${TOKEN_ENV}")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="an ONNX model to probe on this machine")
    src.add_argument("--upstream", metavar="URI",
                     help="a local server to probe, e.g. v2+http://127.0.0.1:8000/models/m")
    p.add_argument("--buffer", type=Path, default=Path("probescope-agent.sqlite"),
                   help="on-disk buffer file (default ./probescope-agent.sqlite)")
    p.add_argument("--max-items", type=_args.count, default=1_000_000,
                   help="the buffer keeps at most this many items (default 1,000,000: about "
                        "70-100 MB, more with large captures); older ones are trimmed")
    p.add_argument("--rate", type=_args.non_negative, default=10.0,
                   help="requests/s to the model (default 10; 0: as fast as it answers)")
    p.add_argument("--payload", type=Path,
                   help="input rows to send (.csv, .parquet, .jsonl, .npy, .npz)")
    p.add_argument("--capture-rate", type=_args.share, default=0.05,
                   help="share of requests drawn at random as captures, the sample the "
                        "dashboard's drift compares (default 0.05); failures are kept always")
    p.add_argument("--system-rate", type=_args.positive, default=1.0,
                   help="system samples per second (default 1)")
    p.add_argument("--cert", type=Path, help="TLS certificate (PEM); serve HTTPS")
    p.add_argument("--key", type=Path, help="TLS private key (PEM)")
    p.add_argument("--seconds", type=_args.seconds, help="stop after this long (default: run until "
                   "Ctrl+C or SIGTERM)")
    limits = ListenLimits()
    p.add_argument("--max-connections", type=_args.count, default=limits.max_connections,
                   help="client connections served at once; more are answered 503 "
                        f"(default {limits.max_connections})")
    p.add_argument("--client-timeout", type=_args.seconds, default=limits.client_timeout_s,
                   help="seconds a client has to send a request's whole head, from its "
                        "connect or its first byte; a body gets this plus 1 s per 64 KiB "
                        f"(default {limits.client_timeout_s:g})")
    p.add_argument("--idle-timeout", type=_args.seconds, default=limits.idle_timeout_s,
                   help="seconds a kept-alive connection may wait for its next request "
                        f"(default {limits.idle_timeout_s:g})")


def run(args: argparse.Namespace) -> int:
    try:
        host, port = parse_listen(args.listen)
        token = read_token(args.token_file)
        agent = Agent(AgentConfig(
            token=token, buffer_path=args.buffer, host=host, port=port, model=args.model,
            upstream=args.upstream, rate_hz=args.rate, payload=args.payload,
            capture_rate=args.capture_rate, system_rate_hz=args.system_rate,
            max_items=args.max_items, cert=args.cert, key=args.key,
            limits=ListenLimits(max_connections=args.max_connections,
                                client_timeout_s=args.client_timeout,
                                idle_timeout_s=args.idle_timeout)))
    except (AgentError, TokenError, agent_buffer.BufferError) as exc:
        print(f"probescope: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    agent.start()
    try:
        # One line on stdout, so a supervisor (or a test) learns the port that was picked.
        print(f"probescope agent serving {agent.url} (buffer {args.buffer})", flush=True)
        stop.wait(args.seconds)
    finally:
        agent.close()
    return 0
