"""Argument types that turn nonsense numbers into one-line usage errors (exit 2).

``type=float`` takes ``nan``, ``inf``, ``-1`` and ``1e300``; a wait of ``inf`` seconds raises
OverflowError deep in ``threading``, a step of 0 loops forever. Each type here names the range
it accepts, so the error says what to type instead.
"""

from __future__ import annotations

import argparse
import math
import re
import threading

# The longest wait threading accepts (about 292 years on 64-bit Linux); past it, OverflowError.
MAX_SECONDS = min(threading.TIMEOUT_MAX, 10 * 365 * 24 * 3600.0)
# Counts and sizes go into SQLite (64-bit integers) and numpy; a billion is past any sane one.
MAX_WHOLE = 10**9


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
    return value


def seconds(text: str) -> float:
    """A duration: more than 0, at most ten years."""
    value = _number(text)
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a duration: give seconds above 0 and at most {MAX_SECONDS:.0f}")
    return value


_UNITS_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_s(text: str) -> float:
    """'90s', '10m', '2h', '1d' (a bare number is seconds); ValueError naming the mistake."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"'{text}' is not a duration; use e.g. 90s, 10m, 2h")
    value = float(match.group(1)) * _UNITS_S[match.group(2) or "s"]
    if value > MAX_SECONDS:  # past this, nanosecond stamps overflow SQLite's integers
        raise ValueError(f"'{text}' is longer than ten years; use e.g. 30d")
    return value


def duration(text: str) -> float:
    """``duration_s`` as an argument type: a mistake is a one-line usage error."""
    try:
        return duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be above 0")
    return value


def non_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be 0 or more")
    return value


def share(text: str) -> float:
    """A fraction from 0 to 1, such as a capture rate or a confidence."""
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be from 0 to 1")
    return value


def _whole(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < minimum:
        least = f"at least {minimum}" if minimum else "0 or more"
        raise argparse.ArgumentTypeError(f"'{text}' must be {least}")
    if value > MAX_WHOLE:
        raise argparse.ArgumentTypeError(f"'{text}' is too large: at most {MAX_WHOLE:,}")
    return value


def count(text: str) -> int:
    """A whole number of at least 1."""
    return _whole(text, 1)


def size(text: str) -> int:
    """A whole number of at least 0 (bytes, items)."""
    return _whole(text, 0)
