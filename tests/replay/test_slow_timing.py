"""How SLOW cases are timed: each case's calls on every version in the same rounds, compared
round by round, so that a burst of load on the machine mid-case cannot hand a version a
verdict. Real onnxruntime sessions on the demo's model; the burst is a real sleep."""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from collections import Counter

from app.core.replay import replay
from app.core.replay_targets import LocalOnnxTarget
from app.core.replay_timing import MAX_TIMED_CALLS, TIMED_CALLS
from tests.replay.conftest import slow_cases as recorded_slow_cases

BURST_FROM = 7  # the call of a case (over all versions) from which the machine is slow


class Burst:
    """A neighbour that starts loading the machine partway through each case's timing: from
    its BURST_FROM-th one-row call on, every call takes ``stall_s`` longer, whichever
    version it is. Calls are counted per input row, shared by every version."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self.calls: Counter[bytes] = Counter()

    def __call__(self, feeds) -> None:
        arrays = list(feeds.values())
        if any(a.shape[0] != 1 for a in arrays):
            return  # a batch
        row = b"".join(a.tobytes() for a in arrays)
        if self.calls[row] >= BURST_FROM:
            time.sleep(self.stall_s)
        self.calls[row] += 1


class Loaded(LocalOnnxTarget):
    """A real local version whose one-row calls go through ``burst`` and take ``extra_s``
    longer of their own (a version slower than another)."""

    def __init__(self, path, burst: Burst, extra_s: float = 0.0) -> None:
        super().__init__(path)
        self.burst, self.extra_s = burst, extra_s

    def run_adapted(self, feeds):
        self.burst(feeds)
        if self.extra_s and all(a.shape[0] == 1 for a in feeds.values()):
            time.sleep(self.extra_s)
        return super().run_adapted(feeds)


def slow_cases(tmp_path, recorder):
    """Recorded a hair over their SLO (0.1001 ms, SLO 0.1), judged on latency alone."""
    cases, criteria = recorded_slow_cases(tmp_path, recorder, 0.1001)
    return cases, dataclasses.replace(criteria, min_confidence=0.0)


def test_a_burst_of_load_mid_case_does_not_make_a_copy_fix_slow_cases(tmp_path, versions):
    cases, criteria = slow_cases(tmp_path, versions[0])
    twin = shutil.copy(versions[0], tmp_path / "twin.onnx")  # the same model, bit for bit
    assert TIMED_CALLS == 8  # the burst below falls on 5 of one version's calls, 4 of the other's
    burst = Burst(stall_s=0.002)
    doc = replay(cases, [Loaded(versions[0], burst), Loaded(twin, burst)], criteria=criteria,
                 requests=0).to_json()
    recording, copy = doc["versions"]
    assert recording["fixed"] == 0 and copy["cases"] > 100
    # Timed apart, the copy's median fell half in the burst and the recording version's in
    # it: the copy "fixed" nearly every case. Round by round the burst slows both alike.
    assert copy["fixed"] <= copy["cases"] // 10, copy


def test_a_version_faster_by_a_margin_still_fixes_slow_cases_through_the_burst(tmp_path,
                                                                              versions):
    cases, criteria = slow_cases(tmp_path, versions[0])
    twin = shutil.copy(versions[0], tmp_path / "twin.onnx")
    burst = Burst(stall_s=0.002)
    # The recording version takes 1 ms more a call than the copy: the copy is faster by far
    # more than SLOW_MARGIN, in every round, burst or none.
    doc = replay(cases, [Loaded(versions[0], burst, extra_s=0.001), Loaded(twin, burst)],
                 criteria=criteria, requests=0).to_json()
    recording, faster = doc["versions"]
    assert recording["fixed"] == 0
    assert faster["fixed"] >= faster["cases"] * 9 // 10, faster


class Noisy(LocalOnnxTarget):
    """A real local version whose one-row calls each take a random extra 0-0.5 ms (a machine
    far busier than any test host); ``calls`` counts them per input row."""

    def __init__(self, path, seed: int) -> None:
        super().__init__(path)
        self.rng = random.Random(seed)
        self.calls: Counter[bytes] = Counter()

    def run_adapted(self, feeds):
        if all(a.shape[0] == 1 for a in feeds.values()):
            self.calls[b"".join(a.tobytes() for a in feeds.values())] += 1
            time.sleep(self.rng.uniform(0, 0.0005))
        return super().run_adapted(feeds)


def test_times_too_noisy_to_judge_are_taken_again_up_to_a_limit(tmp_path, versions):
    cases, criteria = slow_cases(tmp_path, versions[0])
    twin = shutil.copy(versions[0], tmp_path / "twin.onnx")
    targets = [Noisy(versions[0], 1), Noisy(twin, 2)]
    replay(cases, targets, criteria=criteria, requests=0)
    # Each case was timed in more rounds than the first TIMED_CALLS, up to the limit, and
    # no further (plus the batch's one call of the row, if it ran alone).
    per_case = [n for t in targets for n in t.calls.values()]
    assert max(per_case) <= MAX_TIMED_CALLS + 1
    assert sorted(per_case)[len(per_case) // 2] >= MAX_TIMED_CALLS > TIMED_CALLS
