"""SLOW verdicts on timing noise: how many SLOW failures a bit-identical copy of the version
that recorded them "fixes", quiet and with a busy Python thread in the process (as the
window's probe threads can be). Each case is recorded a hair over its SLO, so the copy fixes
one only where timing noise puts it SLOW_MARGIN ahead of the recording version.

The baseline is the estimator the replay used before 6 Dec: each version's time the median
of its own calls. The engine's now reads them round by round against the round's mean
(``replay_timing._one_call_times``). Both run on the same workspace, alternating, in this run;
each line gives the copy's false fixes for both orders of the two versions. Fewer is better;
the ratio is baseline over paired."""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from app.core import replay_timing
from app.core.domain import Capture, CaptureStatus, TensorBlob
from app.core.replay import Criteria, Selection, replay, select_case_set
from app.core.replay_targets import LocalOnnxTarget
from app.core.store import Store
from probes.payload import load_payload

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "demo"
CASES = 300
ROUNDS = 3  # per estimator, load and order


def write_workspace(db: Path) -> None:
    rows = load_payload(DEMO / "production.csv").features.astype(np.float32)
    captures = [Capture(
        endpoint="onnx:bench", ts_ns=i + 1, latency_ms=0.1001, status=CaptureStatus.SLOW,
        inputs=(TensorBlob.from_array("features", rows[i % len(rows)][None]),),
        outputs=(), model_version="1.0.0") for i in range(CASES)]
    store = Store(db)
    try:
        store.write_batch([], captures)
    finally:
        store.close()


def medians_apart(times: list[list[float]], calls: int) -> dict[int, float]:
    return {k: float(np.median(t)) for k, t in enumerate(times) if len(t) == calls}


def false_fixes(cases, models: list[Path]) -> int:
    doc = replay(cases, [LocalOnnxTarget(m) for m in models],
                 criteria=Criteria(slo_ms=0.1, min_confidence=0.0), requests=0).to_json()
    return int(doc["versions"][1]["fixed"])


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="slow-verdicts-"))
    db = work / "slow.db"
    write_workspace(db)
    recording = DEMO / "wine-v1.onnx"
    twin = Path(shutil.copy(recording, work / "twin.onnx"))
    store = Store(db)
    try:
        cases = select_case_set(store, Selection(kinds=("slow",), controls=0))
    finally:
        store.close()
    paired = replay_timing._one_call_times
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    print(f"{len(cases)} SLOW cases recorded at 1.001 x their SLO; a bit-identical copy's "
          f"false fixes (of {len(cases)}), {ROUNDS} runs per line, both version orders")
    for load in ("quiet", "busy thread"):
        if load == "busy thread":
            threading.Thread(target=spin, daemon=True).start()
        counts: dict[str, list[int]] = {"apart": [], "paired": []}
        for _ in range(ROUNDS):
            for name, estimator in (("apart", medians_apart), ("paired", paired)):
                replay_timing._one_call_times = estimator
                for order in ([recording, twin], [twin, recording]):
                    counts[name].append(false_fixes(cases, order))
        replay_timing._one_call_times = paired
        apart, pair = sum(counts["apart"]), sum(counts["paired"])
        print(f"{load:12s} medians apart {counts['apart']}  round by round {counts['paired']}"
              f"  ratio {apart / max(pair, 1):.1f}x")
    stop.set()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
