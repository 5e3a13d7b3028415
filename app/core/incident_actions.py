"""A person's actions on an incident: find the one an ID (or ``latest``) names, acknowledge or
resolve it, and say its status as people read it. ``Status`` is defined here and the engine
(incidents.py) imports it, so this module needs nothing of the engine; ``app.core.incidents``
re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.core.domain import utc_text
from app.core.incident_rules import IncidentError
from app.core.store import Store


class Status:
    """The stored statuses. "cleared" is not one of them: the rule ending an incident stores
    ``resolved`` with its ``cleared_ns`` and no ``resolved_ns``; a person resolving it (before
    or after the rule cleared it) sets ``resolved_ns``. ``status_text`` tells them apart."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    CLEARED = "cleared"  # as status_text says it; never stored
    ALL = ("open", "acknowledged", "resolved")


def status_text(incident: Mapping) -> str:
    """An incident's status as people read it: one the rule cleared by itself is "cleared",
    not "resolved", which says a person closed it (the stored status is the same)."""
    if (incident.get("status") == Status.RESOLVED and incident.get("cleared_ns")
            and not incident.get("resolved_ns")):
        return Status.CLEARED
    return str(incident.get("status"))


def find_incident(store: Store, which: str | int) -> dict:
    """The incident an ID (or ``latest``) names, or IncidentError saying what exists."""
    if str(which).lower() == "latest":
        rows = store.incidents(limit=1)
        if not rows:
            raise IncidentError(f"no incidents in {store.path} yet; run `probescope incidents "
                                f"--db {store.path} evaluate` to judge its history")
        return rows[0]
    try:
        incident_id = int(which)
    except ValueError:
        raise IncidentError(f"'{which}' is not an incident id; give a number or 'latest'") \
            from None
    # An id past SQLite's integers is no incident either (not an OverflowError from it).
    row = store.incident(incident_id) if 0 < incident_id < 2**63 else None
    if row is None:
        raise IncidentError(f"no incident {incident_id} in {store.path}; "
                            "`probescope incidents --db PATH` lists them")
    return row


@dataclass(frozen=True, slots=True)
class StatusChange:
    """What a person's acknowledge or resolve did: the incident as stored after it, one line
    that says so, and whether that was just what was asked (not "already resolved" or "the
    rule had cleared it"), which a window that showed an older state has to say."""

    incident: dict
    message: str
    as_asked: bool = True


def change_status(store: Store, which: str | int, status: str, *, note: str | None = None,
                  author: str = "") -> StatusChange:
    """Acknowledge or resolve (``status``) the incident ``which`` names, judged by its status
    as stored now, not as a list showed it earlier (the rule may have cleared it since).

    A given note is always saved, or IncidentError says it was not: resolving one a person
    already resolved keeps its status and adds the note; acknowledging a cleared or resolved
    one is refused (there is nothing left to acknowledge), the note with it."""
    row = find_incident(store, which)
    note = (note or "").strip()
    iid, now = row["id"], status_text(row)
    if status == Status.ACKNOWLEDGED and now in (Status.CLEARED, Status.RESOLVED):
        what = (f"cleared (the rule saw it end at {utc_text(row['cleared_ns'])})"
                if now == Status.CLEARED else "resolved")
        instead = "resolve it or add a note" if now == Status.CLEARED else "add a note"
        unsaved = "; the note was not saved" if note else ""
        raise IncidentError(f"incident #{iid} is {what}, so there is nothing to acknowledge; "
                            f"{instead} instead{unsaved}")
    if now == status:  # already acknowledged, or already resolved by a person
        when = row["resolved_ns"] if status == Status.RESOLVED else None
        message = f"incident #{iid} is already {status}" + (
            f" at {utc_text(when)}" if when else "")
        if note:
            store.add_incident_note(iid, note, author=author)
            message += "; note added"
        return StatusChange(store.incident(iid) or row, message, as_asked=False)
    # From open, acknowledged or cleared. Resolving a cleared one keeps when the rule saw it
    # end (cleared_ns) and records that a person closed it (resolved_ns).
    store.update_incident(iid, status=status, note_author=author,
                          note=status.capitalize() + (f": {note}" if note else "."))
    message = f"incident #{iid} {status}"
    if now == Status.CLEARED:
        message += f" (the rule had cleared it at {utc_text(row['cleared_ns'])})"
    return StatusChange(store.incident(iid) or row, message, as_asked=now != Status.CLEARED)
