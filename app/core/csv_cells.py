"""CSV cells a spreadsheet will not run: shared by every CSV export (replay cases, plot data).

A spreadsheet reads a cell starting with one of ``FORMULA_STARTS`` as a formula. Labels,
request ids, errors and series names come from production logs, servers and agents, not from
the user: "=HYPERLINK(...)" in one would send the sheet's cells elsewhere when the export is
opened.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def inert(value: object) -> object:
    """Text that a spreadsheet would run as a formula, kept as text (a leading quote, as
    OWASP advises); numbers, negative ones included, stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _number(value):
        return "'" + value
    return value


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
