"""What ``replay`` prints of a result: the table per version and the lines under it, for a run
and for ``--show`` alike, and times in local time. Apart so that a run and the saved replays
print one way without importing each other.
"""

from __future__ import annotations

from app.core.domain import figure_text
from app.core.replay import (
    ReplayResult,
    bisect_text,
    judged_with,
    limit_text,
    selection_text,
)


def result_text(result: ReplayResult, shown: bool = False, stop_note: str | None = None) -> str:
    """``shown``: a saved replay read back (--show), not one run now; ``stop_note``: the note
    an older run saved in its title's place when Ctrl+C cut it short."""
    # p50/p95 are of the requests each version answered one case at a time (a replay
    # saved before those were timed has its batches' shares: "ms/row"); "batched" is a
    # case's share of its batch's time, the version's pace through a backlog.
    summaries = result.summaries()
    per = "ms" if any(s.requests_timed for s in summaries) else "ms/row"
    width = max([20, *(len(s.version) for s in summaries)])  # long names keep the columns
    lines = [f"{'version':<{width}} {'cases':>6} {'fixed':>6} {'still failing':>14} "
             f"{'newly broken':>13} {'broken again':>13} {'errors':>7} {'p50 ' + per:>11} "
             f"{'p95 ' + per:>11} {'batched ms/row':>15}"]
    for s in summaries:
        p50, p95, batched = ("-" if v is None else figure_text(v) for v in (
            s.latency_p50_ms, s.latency_p95_ms, s.batched_ms_per_row))
        lines.append(f"{s.version:<{width}} {s.cases:>6} {s.fixed:>6} {s.still_failing:>14} "
                     f"{s.newly_broken:>13} {s.broken_again:>13} {s.errors:>7} {p50:>11} "
                     f"{p95:>11} {batched:>15}")
    timed = max((s.requests_timed for s in summaries), default=0)
    if timed:
        lines.append(f"latency: p50/p95 of {timed} requests per version, one case each, the "
                     f"versions taking turns{_capped_text(result)}; batched: a case's share of "
                     "its batch's time")
    for s in summaries:
        if s.error_reason:
            lines.append(f"{s.version}: {s.errors} cases erred, most often: {s.error_reason}")
        if s.unanswered:
            lines.append(f"{s.version}: {s.unanswered} of {s.cases} cases got no answer "
                         f"({s.unanswered_reason}); they are neither fixed nor failing there")
        if s.unmatched_labels:
            lines.append(f"{s.version}: {s.unmatched_labels} labels name no class of its "
                         "model (it carries no matching `classes` metadata), so they never "
                         "match its predictions")
    for s in summaries:
        if s.newly_broken_by_label:
            lines.append(f"{s.version} newly broken by label: " + ", ".join(
                f"{label}: {n}" for label, n in s.newly_broken_by_label.items()))
        if s.broken_again:
            lines.append(f"{s.version} broken again: {s.broken_again} failures an earlier "
                         "version fixed fail here (fixed by " + ", ".join(
                             f"{v} {n}" for v, n in s.broken_again_after.items()) + ")")
    left_out = limit_text(result)
    if left_out:
        lines.append(left_out)
    lines.append(bisect_text(result))
    lines.append(f"selected: {selection_text(result.selection)}")
    lines.append(judged_with(result.criteria))
    title = f' "{result.title}"' if result.title else ""
    if result.replay_id is not None and not shown:
        lines.append(f"saved as replay {result.replay_id}{title}")
    elif result.replay_id is not None:
        lines.append(f"replay {result.replay_id}{title}{_cancelled_text(result, stop_note)}")
    return "\n".join(lines)


def _capped_text(result: ReplayResult) -> str:
    """Where --requests asked for more than there are cases to time one request each: how
    many could be, and why not every case (the SLOW ones have times of their own)."""
    asked, possible = result.requests_asked, result.requests_possible
    if asked is None or asked <= possible:
        return ""
    alone = len(result.control_mask) - possible
    why = ("one per case" if not alone
           else "every case but the SLOW one, timed alone against its SLO" if alone == 1
           else f"every case but the {alone} SLOW ones, timed alone against their SLO")
    return f" ({possible} of the {asked} requests asked: {why})"


def _cancelled_text(result: ReplayResult, stop_note: str | None) -> str:
    """A cancelled replay holds the versions it finished: said, or it reads as whole."""
    if not result.cancelled:
        return ""
    if stop_note:
        return f" (cancelled: {stop_note})"
    done = len(result.runs)
    if result.versions_asked:
        return f" (cancelled after {done} of {result.versions_asked} versions)"
    return f" (cancelled after {done} version{'' if done == 1 else 's'})"


