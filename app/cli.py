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
    parser.add_argument("--db", type=Path, dest="gui_db", metavar="PATH",
                        help="the workspace: with no COMMAND, open it in the window; before a "
                             "COMMAND, that command's --db")
    parser.add_argument("--attach", action="append", default=[], metavar="URI",
                        dest="gui_attach",
                        help="with no COMMAND: attach this endpoint in the window once it opens "
                             "(repeat for more; the attach dialog's URIs)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _command_named(argv) if argv is not None else None
    for command, help_line in COMMANDS.items():
        if command == wanted or argv is None:
            importlib.import_module(f"app.commands.{module_name(command)}").add_parser(sub)
        else:
            sub.add_parser(command, help=help_line)
    return parser


def _command_at(argv: Sequence[str]) -> int | None:
    """Where the first argument that is not a global option is, if any."""
    at = 0
    while at < len(argv):
        if argv[at] in ("--db", "--attach"):
            at += 2  # the global --db and --attach take a value
            continue
        if not argv[at].startswith("-"):
            return at
        at += 1
    return None


def _command_named(argv: Sequence[str]) -> str | None:
    """The first argument that is not a global option, if any."""
    at = _command_at(argv)
    return None if at is None else argv[at]


class _DbError(Exception):
    """A --db before the command that cannot be that command's."""


def _takes_db(parser: argparse.ArgumentParser) -> bool:
    """Whether this parser, or one of its actions' (``versions list``), takes --db."""
    if "--db" in parser._option_string_actions:
        return True
    return any(_takes_db(choice) for action in parser._actions
               if isinstance(action, argparse._SubParsersAction)
               for choice in action.choices.values())


def _db_after_command(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``argv`` with a --db given before the command moved after it, as the command's own
    (``probescope --db WS incidents``: the user gave the workspace, just early). The
    top-level --db alone still opens the window."""
    at = _command_at(argv)
    if at is None:
        return argv
    before, after = argv[:at], argv[at:]
    given: str | None = None
    kept: list[str] = []
    items = iter(before)
    for item in items:
        if item == "--db":
            given = next(items)  # _command_at found the command after its value
        elif item.startswith("--db="):
            given = item.removeprefix("--db=")
        else:
            kept.append(item)
    if given is None:
        return argv
    command = after[0]
    choices = next((a.choices for a in parser._actions
                    if isinstance(a, argparse._SubParsersAction)), {})
    if command not in choices:
        return argv  # argparse says which commands there are
    if not _takes_db(choices[command]):
        raise _DbError(f"{command} takes no --db; drop it (with no command, --db opens "
                       "that workspace in the window)")
    end = after.index("--") if "--" in after else len(after)
    own = [after[k + 1] if item == "--db" else item.removeprefix("--db=")
           for k, item in enumerate(after[:end])
           if (item == "--db" and k + 1 < end) or item.startswith("--db=")]
    different = [o for o in own if Path(o).resolve() != Path(given).resolve()]
    if different:
        raise _DbError(f"--db is given twice, as {given} before {command} and as "
                       f"{different[0]} after it; give it once")
    if own:
        return kept + after
    # The =form keeps a path that starts with '-' its value.
    return kept + after[:end] + [f"--db={given}"] + after[end:]


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


def _attach_problem(uris: Sequence[str]) -> str | None:
    """What is wrong with a URI to attach at start that shows without connecting (its form,
    its kind): said on the terminal before the window opens. A server that does not answer
    is said in the window, as the attach dialog says it."""
    from app.core.domain import EndpointUri, UriError
    from probes import schemes

    for uri in uris:
        try:
            scheme = EndpointUri.parse(uri).scheme
        except UriError as exc:
            return f"--attach {uri}: {exc}"
        if scheme not in schemes():
            return (f"--attach {uri}: unknown endpoint kind '{scheme}'; known: "
                    f"{', '.join(schemes())}")
    return None


def _run_window(args: argparse.Namespace) -> int:
    reason = _attach_problem(args.gui_attach) or no_display_reason(os.environ)
    if reason:
        print(f"probescope: {reason}", file=sys.stderr)
        return EXIT_USER_ERROR
    from app.gui.launch import run_window

    return run_window(args.gui_db, attach=args.gui_attach)


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
        parser = build_parser(argv)
        try:
            argv = _db_after_command(argv, parser)
        except _DbError as exc:
            print(f"probescope: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        args = parser.parse_args(argv)
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
    if args.command is not None and args.gui_attach:
        print(f"probescope: --attach opens the window; it takes no COMMAND ({args.command}): "
              "give the URI to the command instead", file=sys.stderr)
        return EXIT_USER_ERROR
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
