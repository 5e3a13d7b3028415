"""A progress line on stderr for long commands, on a terminal only (a pipe or a log gets
nothing): one percentage that counts up in place."""

from __future__ import annotations

import sys
from collections.abc import Callable


def progress_line(label: str, note: Callable[[float], str] = lambda _: ""
                  ) -> Callable[[float], None]:
    """A ``progress(share)`` callback printing ``label: NN%`` and ``note(share)`` after it."""
    if not sys.stderr.isatty():
        return lambda _: None
    shown = [-1]

    def show(share: float) -> None:
        percent = int(share * 100)
        if percent != shown[0]:
            shown[0] = percent
            print(f"\r{label}: {percent:3d}%{note(share)}", end="", file=sys.stderr, flush=True)

    return show
