"""The replay panel's summary text, as HTML for its label: a finished replay's table (a row
per version: fixed, still failing, newly broken, broken again, no answer, p95, newly broken by
label), the bisect line, what it was judged with, the versions a Cancel left unrun and the
SLOW note; a refusal; an export's outcome. Pure functions, no Qt.
Thread: any (the panel calls them on the GUI thread).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from app.core.domain import figure_text
from app.core.replay import (
    ReplayResult,
    VersionSummary,
    bisect_text,
    judged_with,
    limit_text,
)
from app.core.summary import fit

_CELL = '<td style="padding-right:8px">'
_NAME_CHARS = 24


def _cell(label: str, value: object, strong: bool = False) -> str:
    """"newly broken 3/200": the label's words kept together, so a narrow panel breaks a cell
    only before its number, and every cell of a column keeps its label on one line."""
    text = f"{label.replace(' ', '&nbsp;')} {value}"
    return f"<b>{text}</b>" if strong else text


def _row(s: VersionSummary, show: dict[str, bool]) -> str:
    """One version's row. Each cell says what its number is ("fixed 12/40"), so the table
    needs no header, and reads as a sentence when copied as text. Where each failure first
    fails is the bisect line's, below."""
    # A long name is cut in its middle, keeping what tells versions apart at either end.
    cells = [f"<b>{html.escape(fit(s.version, _NAME_CHARS))}</b>:",
             _cell("fixed", f"{s.fixed}/{s.failures}"),
             _cell("still failing", s.still_failing),
             _cell("newly broken", f"{s.newly_broken}/{s.controls}")]
    if show["again"]:  # columns that are all zero are left out
        cells.append(_cell("broken again", s.broken_again, strong=bool(s.broken_again)))
    if show["errors"]:
        cells.append(_cell("errors", s.errors))
    if show["silent"]:
        cells.append(_cell("no answer", s.unanswered, strong=True) if s.unanswered else "")
    # One request's p95 where the versions were timed so; else (a replay saved before) the
    # batches' shares, per row.
    cells.append("p95 -" if s.latency_p95_ms is None
                 else _cell("p95", f"{figure_text(s.latency_p95_ms)} "
                                   f"{'ms' if s.requests_timed else 'ms/row'}"))
    if s.batched_ms_per_row is not None:
        cells.append(_cell("batched", f"{figure_text(s.batched_ms_per_row)} ms/row"))
    if show["labels"]:
        cells.append(_cell("broken by label", html.escape(", ".join(
            f"{label}: {n}" for label, n in s.newly_broken_by_label.items())))
            if s.newly_broken_by_label else "")
    return "<tr>" + " ".join(f"{_CELL}{c}</td>" for c in cells) + "</tr>\n"


def result_html(result: ReplayResult, not_saved: str | None = None, *,
                registered_versions: set[str | None] | None = None,
                asked: Sequence[str] = ()) -> str:
    """The summary of ``result``: its title (or why it was not saved), a table row per
    version, the bisect line, and the notes (why a version gave no answer or erred, the SLOW
    failures judged on outputs only). ``registered_versions``: the model versions the
    registry held (to say when a SLOW failure's recording version is not there to tick);
    ``asked``: the versions ticked, to name those a Cancel left unrun."""
    named = f" “{html.escape(result.title)}”" if result.title else ""
    title = (f"<b>Replay #{result.replay_id}</b>{named}" if result.replay_id is not None else
             f"<b>Replay, not saved:</b> {html.escape(not_saved or 'not saved')}; "
             "Export CSV… keeps its cases")
    # What it was judged with on the title's line: one line less above the columns.
    head = [title + (" — <b>cancelled</b>; finished versions only" if result.cancelled
                     else "") + " · " + html.escape(judged_with(result.criteria))]
    ran = {r.version for r in result.runs}
    not_run = [name for name in asked if name not in ran]
    if result.cancelled and not_run:
        head.append(f"not run: {html.escape(', '.join(not_run))} (cancelled)")
    summaries = result.summaries()
    show = {"again": any(s.broken_again for s in summaries),
            "errors": any(s.errors for s in summaries),
            "silent": any(s.unanswered for s in summaries),
            "labels": any(s.newly_broken_by_label for s in summaries)}
    table = ('<table cellspacing="0" cellpadding="0">'
             + "".join(_row(s, show) for s in summaries) + "</table>")
    left_out = limit_text(result, "raise the limit to replay more")
    notes = [html.escape(text) for text in (left_out, bisect_text(result)) if text]
    again = [f"{s.version} {s.broken_again} (fixed by " + ", ".join(
        f"{v} {n}" for v, n in s.broken_again_after.items()) + ")"
        for s in summaries if s.broken_again]
    if again:  # one line for every version: the table says how many, this says after whom
        notes.append("broken again after a fix: " + html.escape("; ".join(again)))
    for s in summaries:
        # Reasons go below the table, once per version: in a cell they would widen it.
        if s.unanswered:
            notes.append(f"{html.escape(s.version)}: no answer {s.unanswered} "
                         f"({html.escape(s.unanswered_reason or '')})")
        if s.error_reason:
            notes.append(f"{html.escape(s.version)}: errors mostly: "
                         f"{html.escape(s.error_reason)}")
    unjudged, made_by = result.unjudged_slow()
    if unjudged:
        by = f" (model version {html.escape(', '.join(made_by))})" if made_by else ""
        # "Tick it" helps only if it is there to tick: say when no registered version is.
        missing = [m for m in made_by if m not in (registered_versions or set())]
        hint = (f"; no registered version is model version "
                f"{html.escape(', '.join(missing))}" if missing else "")
        notes.append(f"{unjudged} SLOW failures judged on their outputs only: their "
                     f"endpoint has no SLO, or the version that recorded them{by} was not "
                     f"replayed{hint}")
    return "<br>".join(head) + table + "<br>".join(notes)


def refusal_html(message: str, what: str, shown: ReplayResult | None) -> str:
    """Why something was refused; a replay still ``shown`` stays, and says so, since Export
    writes it."""
    text = f"<b>{what}:</b> {html.escape(message)}"
    if shown is not None:
        name = f"#{shown.replay_id}" if shown.replay_id is not None else "(not saved)"
        text += f"<br>The grid still shows replay {name}."
    return text


def exported_html(cases: int, out: Path) -> str:
    """The line added under the summary once Export CSV… has written ``out``."""
    return f"<br>exported {cases} cases to {html.escape(str(out))}"


def export_failed_html(message: str) -> str:
    """The line added under the summary when Export CSV… could not write."""
    return f"<br><b>Export failed:</b> {html.escape(message)}"
