"""The replay panel's background work as plain functions: listing the failures, replaying them
on the versions ticked and saving the result, reopening a saved replay. No Qt: the panel runs
them through its ``JobRunner`` and shows what they return. Thread: the panel's worker; each
opens its own short-lived Store connections there, so nothing is shared with the GUI thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.core.domain import UriError
from app.core.references import input_names_of
from app.core.replay import (
    Case,
    Criteria,
    ReplayResult,
    Selection,
    count_failures,
    replay,
    select_cases,
    with_endpoint_thresholds,
)
from app.core.replay_store import load_replay, save_replay
from app.core.replay_targets import ReplayError, Target, open_target
from app.core.store import Store, StoreError
from app.core.versions import ModelVersion, VersionError, registered, verify_unchanged
from app.gui.replay_unopened import Unopened
from probes.base import ProbeError


@dataclass
class ReplayOutcome:
    """A replay run or reopened, with what the panel shows beside it, read on the worker."""

    result: ReplayResult
    not_saved: str | None = None  # why the store refused to save it; None once saved
    # The model versions the registry held (to say when a SLOW failure's recording version
    # is not there to tick), and each endpoint's input names (to label a case's values).
    registered_versions: set[str | None] = field(default_factory=set)
    input_names: dict[str, tuple[str, ...]] = field(default_factory=dict)


def select_failures(db_path: Path, selection: Selection) -> list[Case]:
    """The failures and controls ``selection`` chooses."""
    store = Store(db_path)
    try:
        return select_cases(store, selection)
    finally:
        store.close()


def replay_and_save(db_path: Path, cases: Sequence[Case], versions: Sequence[tuple[str, str]],
                    *, provider: str, criteria: Criteria, batch_size: int | None,
                    selection: Selection, progress: Callable[[float], None],
                    cancelled: Callable[[], bool],
                    version_started: Callable[[int], None] = lambda _: None) -> ReplayOutcome:
    """Replay ``cases`` on ``versions`` ((location, name), in bisect order) and save the
    result. A version that cannot open answers "not asked" with why; a store that cannot
    save leaves the result shown all the same, with ``not_saved`` saying why.
    ``version_started(k)``: the k-th version (from 1) is being asked, once each, in order."""
    store = Store(db_path)
    try:
        known = {v.name: v for v in registered(store)}
        # SLOW captures are held to the SLO their endpoint was probed with, and every case to
        # the minimum confidence its endpoint was probed with.
        judged_by = with_endpoint_thresholds(criteria, store)
        names = input_names_of(store, {c.capture.endpoint for c in cases})
        # The list keeps the newest ``limit`` failures: at the limit, say how many matched
        # (one COUNT, no blob read), as the CLI does.
        failures = sum(1 for c in cases if not c.control)
        matched = (count_failures(store, selection)
                   if selection is not None and failures >= selection.limit else None)
    finally:
        store.close()
    model_versions = {v.version for v in known.values()}
    targets: list[Target] = []
    try:
        for location, name in versions:
            targets.append(_open_version(location, name, known, provider))
        _announce_first_use(targets, version_started)
        result = replay(cases, targets, criteria=judged_by, batch_size=batch_size,
                        selection=selection, progress=progress, cancelled=cancelled)
        if matched is not None:
            result.failures_matched = max(matched, failures)  # captures may land meanwhile
    finally:
        for t in targets:
            t.close()
    not_saved = None
    try:
        store = Store(db_path)
        try:
            save_replay(store, result)
        finally:
            store.close()
    except StoreError as exc:  # the replay is done: show it all the same
        not_saved = str(exc)
    return ReplayOutcome(result, not_saved, model_versions, names)


def _announce_first_use(targets: Sequence[Target], started: Callable[[int], None]) -> None:
    """Call ``started(k)`` when the k-th target is first asked to adapt its feeds (what a
    version does first for every group of cases), k only rising: the replay reports a
    fraction of its work, which does not say which version is running ("version 2 of 6"),
    and the requests timed after the batches ask every version again."""
    reached = 0

    for k, target in enumerate(targets, start=1):
        adapt = target.adapt

        def announced(feeds: dict[str, np.ndarray], k: int = k,
                      adapt: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = adapt
                      ) -> dict[str, np.ndarray]:
            nonlocal reached
            if k > reached:
                reached = k
                started(k)
            return adapt(feeds)

        target.adapt = announced  # on this replay's own targets, closed after it


def _open_version(location: str, name: str, known: dict[str, ModelVersion],
                  provider: str) -> Target:
    """The target for one version; a registered file is checked unchanged first."""
    try:
        if name in known and known[name].location == location:
            verify_unchanged(known[name])
        return open_target(location, provider=provider, name=name)
    except (ReplayError, VersionError, UriError, ProbeError) as exc:
        # One version that cannot open is that version's "no answer (why)", not the end of
        # the replay for all the others.
        return Unopened(name, location, str(exc))


def reopen_replay(db_path: Path, replay_id: int) -> ReplayOutcome:
    """Saved replay ``replay_id``, as saved."""
    store = Store(db_path)
    try:
        model_versions = {v.version for v in registered(store)}
        result = load_replay(store, replay_id)
        names = input_names_of(store, {c.capture.endpoint for c in result.cases})
        return ReplayOutcome(result, None, model_versions, names)
    finally:
        store.close()
