"""The verdict palette: each verdict's colour (``VERDICT_COLORS``), its mark in a glyph or word
(``VERDICT_MARKS``), and the black or white text that reads on a colour (``text_color_for``,
WCAG contrast). Apart from the case view because the replay panel's results grid draws the
same verdicts with the same colours and marks. Thread: GUI (the grid and the case view ask
per cell drawn).
"""

from __future__ import annotations

import functools

from PySide6.QtGui import QColor

# Okabe-Ito's colour-blind-safe hues (blue, vermillion, orange) and two greys that differ in
# lightness: red against green read as one olive under deuteranopia. Every cell also says its
# verdict in a glyph or word (VERDICT_MARKS), and its text is black or white, whichever reads
# better on it (``text_color_for``: at least 4.5:1, WCAG AA).
VERDICT_COLORS = {"fixed": "#0072b2", "still_failing": "#d55e00", "newly_broken": "#e69f00",
                  "ok": "#616161", "no_answer": "#c8c8c8"}
VERDICT_MARKS = {"fixed": "\u2713", "still_failing": "\u2717", "newly_broken": "\u25b2 new",
                 "ok": "ok", "no_answer": "no answer"}


def relative_luminance(color: str) -> float:
    """WCAG 2's relative luminance of an sRGB colour such as ``"#d55e00"``."""
    c = QColor(color)

    def linear(v: float) -> float:
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    return (0.2126 * linear(c.redF()) + 0.7152 * linear(c.greenF())
            + 0.0722 * linear(c.blueF()))


def contrast_ratio(a: str, b: str) -> float:
    """WCAG 2's contrast ratio of two colours, 1 to 21."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@functools.lru_cache(maxsize=32)  # asked per cell drawn, of a handful of colours
def text_color_for(background: str) -> str:
    """Black or white, whichever contrasts more with ``background`` (white on the palette's
    orange was 3.1:1, under the 4.5:1 normal text needs)."""
    return max(("#000000", "#ffffff"), key=lambda ink: contrast_ratio(ink, background))
