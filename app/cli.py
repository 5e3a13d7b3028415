"""Command line: ``probescope [COMMAND]``; each subcommand is a thin call into the core.

With no command it opens the window on the demo workspace. Errors a user can fix print one
line on stderr and exit with status 2; nothing prints a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import keyword
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from app.commands import COMMAND_MODULES

EXIT_USER_ERROR = 2


def probescope_version() -> str:
    try:
        return version("probescope")
    except PackageNotFoundError:
        return "0+unknown"


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given the arguments about to be parsed, it imports only the command named
    there, so one command's imports (Qt, for the window and reports) never load under another
    (the headless agent and tap). With no command named, every command is registered."""
    parser = argparse.ArgumentParser(
        prog="probescope",
        description="Watch ML inference endpoints: latency, memory, drift, failures. "
                    "With no COMMAND, opens the window on the built-in demo.",
    )
    parser.add_argument("--version", action="version",
                        version=f"probescope {probescope_version()}")
    parser.add_argument("--debug", action="store_true", help="log verbosely; show tracebacks")
    parser.add_argument("--db", type=Path, dest="gui_db",
                        help="open this workspace in the window (no COMMAND)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _command_named(argv) if argv is not None else None
    for name in COMMAND_MODULES if wanted not in COMMAND_MODULES else (wanted,):
        importlib.import_module(f"app.commands.{name}").add_parser(sub)
    return parser


def _command_named(argv: Sequence[str]) -> str | None:
    """The module of the first argument that is not a global option, if any."""
    items = iter(argv)
    for item in items:
        if item == "--db":
            next(items, None)  # the global --db takes a value
        elif not item.startswith("-"):
            return _module_name(item)
    return None


def _module_name(command: str) -> str:
    # A subcommand spelled like a Python keyword (import) lives in a module with a trailing _.
    return f"{command}_" if keyword.iskeyword(command) else command


def _run_window(args: argparse.Namespace) -> int:
    from app.gui.launch import run_window

    return run_window(args.gui_db)


def _user_errors() -> tuple[type[BaseException], ...]:
    from app.core.codec import CodecError
    from app.core.demo import DemoError
    from app.core.domain import UriError
    from app.core.store import StoreError
    from probes import ProbeError

    return (ProbeError, StoreError, UriError, CodecError, DemoError, OSError)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command is None:
            return _run_window(args)
        return importlib.import_module(f"app.commands.{_module_name(args.command)}").run(args)
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
