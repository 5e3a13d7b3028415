"""What a replay's JSON carries beside the per-version counts: the bisect, and how many SLOW
failures were judged on their outputs alone (so a script reading "fixed" knows)."""

from __future__ import annotations

import numpy as np

from app.core.replay import replay
from app.core.replay_targets import LocalOnnxTarget
from app.core.store import Store
from tests.replay.conftest import slow_cases as recorded_slow_cases


def slow_cases(tmp_path, recorder):
    """Recorded at 0.25 ms each (paced, cold) against an SLO of 0.1 ms that a warm call here
    meets easily."""
    return recorded_slow_cases(tmp_path, recorder, 0.25)


def test_slow_failures_judged_on_outputs_only_are_counted_in_the_json(tmp_path, versions):
    cases, criteria = slow_cases(tmp_path, versions[0])
    assert len(cases) > 20
    # The recording version (wine-v1) is not replayed: nothing to read the recorded
    # latency against, so every SLOW failure is judged on its outputs.
    doc = replay(cases, [LocalOnnxTarget(versions[1])], criteria=criteria).to_json()
    assert doc["slow_judged_on_outputs_only"] == len(cases)
    assert doc["slow_recorded_by_versions_not_replayed"] == ["1.0.0"]
    # With it, they are judged on latency: none left to mention.
    doc = replay(cases, [LocalOnnxTarget(v) for v in versions[:2]], criteria=criteria).to_json()
    assert doc["slow_judged_on_outputs_only"] == 0
    assert doc["slow_recorded_by_versions_not_replayed"] == []


def test_slow_cases_are_timed_on_every_version_together_and_a_cancel_there_keeps_them(
        tmp_path, versions):
    cases, criteria = slow_cases(tmp_path, versions[0])
    targets = [LocalOnnxTarget(v) for v in versions[:2]]
    timed = replay(cases, targets, criteria=criteria)
    # Each SLOW case has one call's time on each version, far above its share of a batch.
    for run in timed.runs:
        assert np.isfinite(run.latency_ms).all()
    # Cancelled once every version has answered, while the SLOW cases are being timed: the
    # versions are all kept, and the cases not timed are judged on their outputs, counted.
    seen: list[float] = []
    result = replay(cases, targets, criteria=criteria, progress=seen.append,
                    cancelled=lambda: seen.count(1.0) >= 2, requests=0)
    assert result.cancelled and [r.version for r in result.runs] == ["wine-v1", "wine-v2"]
    assert result.to_json()["slow_judged_on_outputs_only"] == len(cases)
    assert all(np.isnan(r.latency_ms).all() for r in result.runs)


def test_a_reopened_replay_says_what_the_live_one_said_about_slow_failures(tmp_path, versions):
    from app.core.replay_store import load_replay, save_replay

    cases, criteria = slow_cases(tmp_path, versions[0])
    db = tmp_path / "slow.db"
    for chosen in (versions[1:2], versions[:2]):  # judged on outputs only; then on latency
        live = replay(cases, [LocalOnnxTarget(v) for v in chosen], criteria=criteria)
        store = Store(db)
        try:
            again = load_replay(store, save_replay(store, live))
        finally:
            store.close()
        doc, shown = live.to_json(), again.to_json()
        assert shown["slow_judged_on_outputs_only"] == doc["slow_judged_on_outputs_only"]
        assert (shown["slow_recorded_by_versions_not_replayed"]
                == doc["slow_recorded_by_versions_not_replayed"])
        # And a case says why it is slow in the same words, limit included.
        whys = [(again.reasons(i, j), live.reasons(i, j)) for j in range(len(chosen))
                for i in range(len(cases))]
        assert all(a == b for a, b in whys)
    assert any(w and w[0].startswith("slow: ") for w, _ in whys)
