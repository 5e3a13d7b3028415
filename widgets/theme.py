"""Colours for the dark and light looks, shared by every widget. Thread: any (plain data)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Theme:
    name: str
    window: str  # window and dock background
    base: str  # plot and list background
    text: str
    muted: str  # axis labels, secondary text
    border: str
    accent: str
    series: tuple[str, ...]  # per-curve colours, in order
    points: str  # latency dots
    p50: str
    p95: str
    p99: str
    slo: str
    failure: str
    states: dict[str, str]  # endpoint state -> dot colour


_STATES_DARK = {"up": "#3fb950", "degraded": "#d29922", "down": "#f85149",
                "paused": "#8b949e", "starting": "#58a6ff", "stopped": "#6e7681"}
_STATES_LIGHT = {"up": "#1a7f37", "degraded": "#bf8700", "down": "#cf222e",
                 "paused": "#6e7781", "starting": "#0969da", "stopped": "#8c959f"}

DARK = Theme(
    name="dark", window="#161b22", base="#0d1117", text="#e6edf3", muted="#8b949e",
    border="#30363d", accent="#58a6ff",
    series=("#58a6ff", "#3fb950", "#d2a8ff", "#ffa657", "#79c0ff", "#ff7b72", "#56d4dd"),
    points="#4c8ed9", p50="#3fb950", p95="#e3b341", p99="#ff7b72", slo="#f85149",
    failure="#ff4d4d", states=_STATES_DARK,
)
LIGHT = Theme(
    name="light", window="#f6f8fa", base="#ffffff", text="#1f2328", muted="#59636e",
    border="#d0d7de", accent="#0969da",
    series=("#0969da", "#1a7f37", "#8250df", "#bc4c00", "#0550ae", "#cf222e", "#1b7c83"),
    points="#5b8fd6", p50="#1a7f37", p95="#9a6700", p99="#cf222e", slo="#cf222e",
    failure="#d1242f", states=_STATES_LIGHT,
)
THEMES = {t.name: t for t in (DARK, LIGHT)}


def theme_named(name: str | None) -> Theme:
    return THEMES.get(name or "dark", DARK)
