"""Command line: ``probescope [COMMAND]``; each subcommand is a thin call into the core.

With no command it opens the window on the demo workspace. Errors a user can fix print one
line on stderr and exit with status 2; nothing prints a traceback unless ``--debug`` is given.
A reader of stdout that goes away (``| head -1``) ends a command quietly, with the status a
tool killed by SIGPIPE has (141).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import select
import sys
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NoReturn

from app.commands import COMMANDS, module_name

EXIT_USER_ERROR = 2


def probescope_version() -> str:
    try:
        return version("probescope")
    except PackageNotFoundError:
        return "0+unknown"


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake said in one line (argparse prints the whole usage
    first, which buries the mistake under the options of a long command)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given the arguments about to be parsed, it imports only the command named
    there, so one command's imports (Qt, for the window and reports) never load under another
    (the headless agent and tap). With no command named, each command is listed by its help
    line alone: ``--help`` and ``--version`` import none of them."""
    parser = _Parser(
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
    for command, help_line in COMMANDS.items():
        if command == wanted or argv is None:
            importlib.import_module(f"app.commands.{module_name(command)}").add_parser(sub)
        else:
            sub.add_parser(command, help=help_line)
    return parser


def _command_named(argv: Sequence[str]) -> str | None:
    """The first argument that is not a global option, if any."""
    items = iter(argv)
    for item in items:
        if item == "--db":
            next(items, None)  # the global --db takes a value
        elif not item.startswith("-"):
            return item
    return None


def no_display_reason(env: Mapping[str, str], platform: str = sys.platform) -> str | None:
    """Why Qt could not open a window here, or None. Qt's own answer is an abort (SIGABRT)
    with a page of plugin advice, so the plain case is caught before Qt starts."""
    if not platform.startswith("linux") or env.get("QT_QPA_PLATFORM"):
        return None
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    return ("no display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY is set); "
            "run it in a desktop session or under xvfb-run, or use a headless command such as "
            "`probescope demo --db demo.db` (see `probescope --help`)")


def _run_window(args: argparse.Namespace) -> int:
    reason = no_display_reason(os.environ)
    if reason:
        print(f"probescope: {reason}", file=sys.stderr)
        return EXIT_USER_ERROR
    from app.gui.launch import run_window

    return run_window(args.gui_db)


def _user_errors() -> tuple[type[BaseException], ...]:
    from app.core.codec import CodecError
    from app.core.demo import DemoError
    from app.core.domain import UriError
    from app.core.store import StoreError
    from probes import ProbeError

    return (ProbeError, StoreError, UriError, CodecError, DemoError, OSError)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` is a ``kind``, directly or as the error it turned into."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _interrupted(exc: BaseException) -> bool:
    """Whether a Ctrl+C is behind ``exc``, directly or as the error it turned into."""
    return _caused_by(exc, KeyboardInterrupt)


EXIT_PIPE_CLOSED = 128 + 13  # as if killed by SIGPIPE, what a shell reports for `yes | head -1`


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status."""
    try:
        try:
            return _main(argv)
        finally:
            # Written out now, not at exit: a reader that is gone shows up here, as the
            # BrokenPipeError below, rather than as a message and status 120 from Python.
            sys.stdout.flush()
    except Exception as exc:
        if not (_caused_by(exc, BrokenPipeError) and _stdout_gone()):
            raise
        # stdout's reader is gone (`probescope ... | head -1`): what it wanted, it read. Said
        # quietly, as other tools do; what is still buffered goes nowhere at exit.
        _drop_stdout()
        return EXIT_PIPE_CLOSED


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has left. A BrokenPipeError can also come from
    a socket (a server that hung up), which is an error to report like any other."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):  # not a file (a test's capture)
        return False
    if not hasattr(select, "poll"):  # Windows: stdout is the likely pipe
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    # A pipe with no reader polls as an error; a terminal or a file never does.
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _drop_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # Building the parser imports the named command's module (pandas, onnxruntime: a
        # second or two); Ctrl+C then is a change of mind, not a traceback.
        args = build_parser(argv).parse_args(argv)
    except KeyboardInterrupt:
        return 130
    except ImportError as exc:
        # A native module interrupted while it loads (onnxruntime's) reports the Ctrl+C as
        # "ImportError: initialization failed", the KeyboardInterrupt as its context.
        if _interrupted(exc):
            return 130
        raise
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command is None:
            return _run_window(args)
        return importlib.import_module(f"app.commands.{module_name(args.command)}").run(args)
    except _user_errors() as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_gone():
            raise  # no mistake of the user's: stdout's reader left; main ends quietly
        if args.debug:
            raise
        print(f"probescope: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if _interrupted(exc):
            return 130
        if _caused_by(exc, BrokenPipeError) and _stdout_gone():
            raise
        if args.debug:
            raise
        print(f"probescope: internal error: {type(exc).__name__}: {exc} "
              "(run with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
