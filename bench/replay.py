"""Replay throughput: 10,000 captures x 3 local versions through ``app.core.replay.replay``
against raw batched onnxruntime on the same inputs, in the same run.

Both sides start from the same in-memory captures (reading the workspace is not timed) and use
the same sessions and batch size. The raw side is the least a hand-written script must do:
join the captures' input bytes into one array, then ``session.run`` per batch. The replay side
also judges every row (top class, confidence, finiteness, failing per capture kind, verdicts)
and keeps per-version columns. Blocks alternate between the sides so machine noise hits both;
figures are medians of the blocks. Target: replay throughput >= 0.9 of raw.

A second ratio is printed against ``session.run`` alone on an array stacked beforehand: the
cost of turning 10,000 captures into a batch, which any replay must pay, shows there.
Sessions use one intra-op thread, as in bench/overhead.py (2-core machines: see there).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from app.core.domain import Capture, CaptureStatus, TensorBlob
from app.core.replay import Case, prepare, replay
from app.core.replay_targets import LocalOnnxTarget
from bench._common import write_mlp
from probes.payload import load_payload

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "demo"
CASES = 10_000
BATCH = 1024  # the engine's default
BLOCKS = 15
MLP_HIDDEN = (256, 1024)  # models of more realistic cost per row than the demo's


def make_cases(n: int) -> list[Case]:
    """Captures shaped as the onnx probe records them: one (1, 13) float32 row each."""
    payload = load_payload(DEMO / "production.csv")
    rows = payload.features.astype(np.float32)
    labels = payload.labels or ()
    cases = []
    for i in range(n):
        k = i % len(rows)
        status = CaptureStatus.MISMATCH if i % 10 else CaptureStatus.OK
        cases.append(Case(i, Capture(
            endpoint="onnx:bench", ts_ns=i, latency_ms=0.1, status=status,
            inputs=(TensorBlob.from_array("features", rows[k:k + 1]),),
            label=labels[k] if labels else None), control=status is CaptureStatus.OK))
    return cases


def raw(cases: list[Case], targets: list[LocalOnnxTarget]) -> list[list[np.ndarray]]:
    data = np.frombuffer(b"".join([c.capture.inputs[0].data for c in cases]),
                         dtype=np.float32).reshape(len(cases), 13)
    return raw_prestacked(data, targets)


def raw_prestacked(data: np.ndarray, targets: list[LocalOnnxTarget]) -> list[list[np.ndarray]]:
    out = []
    for t in targets:
        run, names = t.session.run, [o.name for o in t.session.get_outputs()]
        feed = t.session.get_inputs()[0].name
        out.append([run(names, {feed: data[i:i + BATCH]})[0]
                    for i in range(0, len(data), BATCH)])
    return out


def timed(fn) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e9


def measure(label: str, cases: list[Case], targets: list[LocalOnnxTarget]) -> dict:
    width = cases[0].capture.inputs[0].shape[1]
    data = np.frombuffer(b"".join([c.capture.inputs[0].data for c in cases]),
                         dtype=np.float32).reshape(len(cases), width)
    prepared = prepare(cases)
    # Same answers on both sides, checked once (outside the timing).
    check = replay(cases, targets, batch_size=BATCH)
    for run, batches in zip(check.runs, raw(cases, targets), strict=True):
        first = next(iter(run.outputs.values()))
        assert np.array_equal(first, np.concatenate(batches), equal_nan=True)
    sides = {"raw": lambda: raw(cases, targets),
             "replay": lambda: replay(cases, targets, batch_size=BATCH),
             "pre": lambda: raw_prestacked(data, targets),
             "replay_pre": lambda: replay(prepared, targets, batch_size=BATCH)}
    for fn in sides.values():  # warm every path
        fn()
    times: dict[str, list[float]] = {k: [] for k in sides}
    order = list(sides)
    for b in range(BLOCKS):
        for name in (order if b % 2 == 0 else order[::-1]):
            times[name].append(timed(sides[name]))
    med = {k: statistics.median(v) for k, v in times.items()}
    work = len(cases) * len(targets)
    print(f"{label}: {len(cases):,} captures x {len(targets)} versions, batch {BATCH}, "
          f"{BLOCKS} blocks (medians)")
    for name, text in (("raw", "raw: join capture bytes + session.run"),
                       ("replay", "replay from captures"),
                       ("pre", "raw: session.run on a stacked array"),
                       ("replay_pre", "replay from prepared cases")):
        print(f"  {text:<40} {med[name] * 1e3:9.2f} ms {work / med[name]:>13,.0f} rows/s")
    out = {"from_captures": med["raw"] / med["replay"],
           "prepared": med["pre"] / med["replay_pre"],
           "raw_ms_per_row": med["pre"] / work * 1e3}
    print(f"  ratio from captures {out['from_captures']:.3f}, prepared "
          f"{out['prepared']:.3f} (target >= 0.9)")
    return out


def main() -> int:
    cases = make_cases(CASES)
    demo = [LocalOnnxTarget(DEMO / f"wine-v{i}.onnx", threads=1) for i in (1, 2, 3)]
    rows = [("demo wine-v1/v2/v3", measure("demo wine-v1/v2/v3", cases, demo))]
    with tempfile.TemporaryDirectory() as tmp:
        for hidden in MLP_HIDDEN:
            models = [write_mlp(Path(tmp) / f"mlp{hidden}-{i}.onnx", 13, hidden)
                      for i in range(3)]
            mlp_cases = [Case(c.capture_id, Capture(
                endpoint="onnx:bench", ts_ns=c.capture.ts_ns, latency_ms=0.1,
                status=c.capture.status, inputs=(TensorBlob("x", *_blob(c)),),
                label=c.capture.label), c.control) for c in cases]
            targets = [LocalOnnxTarget(m, threads=1) for m in models]
            label = f"MLP 13-{hidden}-16"
            rows.append((label, measure(label, mlp_cases, targets)))
    print("\nsummary (replay throughput / raw throughput, same inputs, same run)")
    print(f"  {'models':<22} {'raw us/row':>10} {'from captures':>14} {'prepared':>9}")
    for label, r in rows:
        print(f"  {label:<22} {r['raw_ms_per_row'] * 1e3:>10.3f} {r['from_captures']:>14.3f} "
              f"{r['prepared']:>9.3f}")
    return 0


def _blob(case: Case) -> tuple:
    b = case.capture.inputs[0]
    return b.dtype, b.shape, b.data


if __name__ == "__main__":
    sys.exit(main())
