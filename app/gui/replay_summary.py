"""The replay panel's summary text, as HTML for its label: a finished replay's per-version
lines (fixed, still failing, newly broken, no answer), what it was judged with, the versions
a Cancel left unrun and the SLOW note; a refusal; an export's outcome. Pure functions, no Qt.
Thread: any (the panel calls them on the GUI thread).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from app.core.domain import figure_text
from app.core.replay import ReplayResult, judged_with


def result_html(result: ReplayResult, not_saved: str | None = None, *,
                registered_versions: set[str | None] | None = None,
                asked: Sequence[str] = ()) -> str:
    """The summary of ``result``: its title (or why it was not saved), one line per version,
    and the notes. ``registered_versions``: the model versions the registry held (to say
    when a SLOW failure's recording version is not there to tick); ``asked``: the versions
    ticked, to name those a Cancel left unrun."""
    title = (f"<b>Replay #{result.replay_id}</b>" if result.replay_id is not None else
             f"<b>Replay, not saved:</b> {html.escape(not_saved or 'not saved')}; "
             "Export CSV… keeps its cases")
    # What it was judged with on the title's line: one line less above the columns.
    lines = [title + (" — <b>cancelled</b>; finished versions only" if result.cancelled
                      else "") + " · " + html.escape(judged_with(result.criteria))]
    ran = {r.version for r in result.runs}
    not_run = [name for name in asked if name not in ran]
    if result.cancelled and not_run:
        lines.append(f"not run: {html.escape(', '.join(not_run))} (cancelled)")
    for s in result.summaries():
        p95 = "-" if s.latency_p95_ms is None else figure_text(s.latency_p95_ms)
        why = html.escape(s.unanswered_reason or "")
        silent = f" · <b>no answer {s.unanswered}</b> ({why})" if s.unanswered else ""
        if s.error_reason:
            silent += f" · errors mostly: {html.escape(s.error_reason)}"
        lines.append(f"<b>{html.escape(s.version)}</b>: fixed {s.fixed}/{s.failures} · still "
                     f"failing {s.still_failing} · newly broken {s.newly_broken}/{s.controls}"
                     f" · errors {s.errors} · p95 {p95} ms/row{silent}")
    unjudged, made_by = result.unjudged_slow()
    if unjudged:
        by = f" (model version {html.escape(', '.join(made_by))})" if made_by else ""
        # "Tick it" helps only if it is there to tick: say when no registered version is.
        missing = [m for m in made_by if m not in (registered_versions or set())]
        hint = (f"; no registered version is model version "
                f"{html.escape(', '.join(missing))}" if missing else "")
        lines.append(f"{unjudged} SLOW failures judged on their outputs only: their "
                     f"endpoint has no SLO, or the version that recorded them{by} was not "
                     f"replayed{hint}")
    return "<br>".join(lines)


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
