"""Replay throughput: 10,000 captures x 3 local versions through ``app.core.replay`` against
raw batched onnxruntime on the same inputs, in the same run. Target: replay >= 0.9 of raw.

The captures (the demo's production rows as the onnx probe records them: one (1, 13) float32
tensor each; 9,000 failures with labels, 1,000 passing controls) live in a real workspace.
Both sides use the same sessions (one intra-op thread, as in bench/overhead.py) and the same
batch size, and are checked once to give the same outputs. Two starting points, each the
same for both sides:

- **from the store**: raw is the least a hand-written script does: the same two queries
  (failures newest first, then controls) selecting only the input blobs, one join, the
  header cut off in one numpy slice, ``session.run`` per batch. Replay is
  ``select_case_set`` (ids, kinds, labels and inputs as columns, no Capture objects) then
  ``replay`` and the per-version summaries the CLI prints.
- **prepared**: raw is ``session.run`` on an array stacked beforehand; replay is ``replay``
  on a case set prepared beforehand: the engine alone (batching, judging every row,
  failing per capture kind, verdict columns), without the summaries.

Each comparison alternates its two sides block by block so machine noise hits both; figures
are medians of the blocks. An informational line times the object path the window uses
(``select_cases``, which builds a Capture per case, then ``replay``) against the same
raw-from-store baseline. A second one, the floor, does only what no replay can skip on top of
raw: each batch's answer copied into its column (the versions' columns side by side in one
block, as the engine keeps them), then the block judged in one go (``judge_columns``); no
errors, latencies, progress or verdicts. Its ratio bounds what any
engine built on these numpy passes can reach on these models. The replays compared run the
batches only (``requests=0``); a last line says what the per-request latency sample a real
replay takes afterwards (``REQUEST_SAMPLE`` cases, one call each per version) adds.
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from app.core.domain import Capture, CaptureStatus, TensorBlob
from app.core.replay import REQUEST_SAMPLE, Selection, replay, select_case_set, select_cases
from app.core.replay_run import judge_columns
from app.core.replay_targets import LocalOnnxTarget
from app.core.store import Store
from bench._common import write_mlp
from probes.payload import load_payload

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "demo"
CASES = 10_000
CONTROLS = 1_000
BATCH = 1024  # the engine's default for rows this small
BLOCKS = 15
MLP_HIDDEN = (256, 1024)  # models of more realistic cost per row than the demo's
SELECTION = Selection(limit=CASES - CONTROLS, controls=CONTROLS)


def write_workspace(db: Path) -> None:
    payload = load_payload(DEMO / "production.csv")
    rows = payload.features.astype(np.float32)
    labels = payload.labels or ()
    captures = []
    for i in range(CASES):
        k = i % len(rows)
        status = CaptureStatus.OK if i % 10 == 0 else CaptureStatus.MISMATCH
        captures.append(Capture(
            endpoint="onnx:bench", ts_ns=i + 1, latency_ms=0.1, status=status,
            inputs=(TensorBlob.from_array("features", rows[k:k + 1]),),
            outputs=(TensorBlob.from_array("probabilities", np.full((1, 3), 1 / 3, np.float32)),),
            label=labels[k] if labels else None, model_version="1"))
    store = Store(db)
    try:
        store.write_batch([], captures)
    finally:
        store.close()


def raw_inputs(store: Store) -> np.ndarray:
    """A script's read: the same selection, input blobs only, stacked in one go."""
    blobs: list[bytes] = []
    for where, limit in (("status != 'ok'", SELECTION.limit), ("status = 'ok'",
                                                              SELECTION.controls)):
        blobs += [r[0] for r in store.db.conn.execute(
            f"SELECT inputs FROM captures WHERE {where} ORDER BY ts_ns DESC, id DESC LIMIT ?",
            [limit])]
    head = len(blobs[0]) - 13 * 4  # one (1, 13) float32 tensor after the codec's header
    raw = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), -1)
    return np.ascontiguousarray(raw[:, head:]).view(np.float32)


def run_raw(data: np.ndarray, targets: list[LocalOnnxTarget]) -> list[list[np.ndarray]]:
    out = []
    for t in targets:
        run, names = t.session.run, [o.name for o in t.session.get_outputs()]
        feed = t.session.get_inputs()[0].name
        out.append([run(names, {feed: data[i:i + BATCH]})[0]
                    for i in range(0, len(data), BATCH)])
    return out


def run_floor(data: np.ndarray, targets: list[LocalOnnxTarget]) -> None:
    """Raw plus the least a replay adds: keep each answer in a column, beside the other
    versions' (one block, as the engine keeps them), and judge the block in one go."""
    n = len(data)
    block: np.ndarray | None = None
    for v, t in enumerate(targets):
        run, names = t.session.run, [o.name for o in t.session.get_outputs()]
        feed = t.session.get_inputs()[0].name
        for i in range(0, n, BATCH):
            first = run(names, {feed: data[i:i + BATCH]})[0]
            if block is None:
                block = np.empty((len(targets), n, *first.shape[1:]), first.dtype)
            block[v, i:i + BATCH] = first
    assert block is not None
    judge_columns({"out": block.reshape(len(targets) * n, -1)}, len(targets) * n)


def replayed(cases, targets: list[LocalOnnxTarget], summarise: bool = True,
             requests: int = 0):
    # The throughput compared is the batches': the per-request latency sample a replay takes
    # afterwards (REQUEST_SAMPLE cases, one call each) is a fixed cost, timed on its own line.
    result = replay(cases, targets, batch_size=BATCH, selection=SELECTION, requests=requests)
    if summarise:
        result.summaries()
    return result


def timed(fn: Callable[[], object]) -> float:
    """One call's wall time with the garbage collector paused (as ``timeit`` does): otherwise
    a collection triggered by one side's garbage lands in the other's time. No collection
    before the call either: walking every object evicts the caches, which costs the side
    touching more memory more, and a replay does not run on a cold cache in real use."""
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - t0) / 1e9
    finally:
        gc.enable()


def measure(label: str, store: Store, targets: list[LocalOnnxTarget]) -> dict:
    data = raw_inputs(store)
    prepared = select_case_set(store, SELECTION)
    # Same answers on both sides, checked once (outside the timing).
    check = replayed(prepared, targets)
    for run, batches in zip(check.runs, run_raw(data, targets), strict=True):
        assert np.array_equal(next(iter(run.outputs.values())), np.concatenate(batches),
                              equal_nan=True)
    sides = {"raw_store": lambda: run_raw(raw_inputs(store), targets),
             "replay_store": lambda: replayed(select_case_set(store, SELECTION), targets),
             "raw_pre": lambda: run_raw(data, targets),
             "replay_pre": lambda: replayed(prepared, targets, summarise=False),
             "floor_pre": lambda: run_floor(data, targets),
             "replay_objects": lambda: replayed(select_cases(store, SELECTION), targets),
             "replay_pre_sampled": lambda: replayed(prepared, targets, summarise=False,
                                                    requests=REQUEST_SAMPLE)}
    for fn in sides.values():  # warm every path
        fn()
    # Each comparison alternates its own two sides only (ABAB..., BABA...), so what one
    # comparison leaves behind (freed memory, evicted caches) does not land on the other.
    times: dict[str, list[float]] = {k: [] for k in sides}
    for a, b, blocks in (("raw_store", "replay_store", BLOCKS), ("raw_pre", "replay_pre", BLOCKS),
                         ("raw_pre", "floor_pre", BLOCKS), ("raw_store", "replay_objects", 5),
                         ("replay_pre", "replay_pre_sampled", 5)):
        for k in range(blocks):
            for name in ((a, b) if k % 2 == 0 else (b, a)):
                times[name].append(timed(sides[name]))
    med = {k: statistics.median(v) for k, v in times.items()}
    work = CASES * len(targets)
    print(f"{label}: {CASES:,} captures x {len(targets)} versions, batch {BATCH}, "
          f"{BLOCKS} blocks (medians)")
    for name, text in (("raw_store", "raw from the store"),
                       ("replay_store", "replay from the store (columns)"),
                       ("raw_pre", "raw: session.run on a stacked array"),
                       ("replay_pre", "replay on a prepared case set"),
                       ("floor_pre", "floor: copy + judge only (info)"),
                       ("replay_objects", "replay from Capture objects (info)")):
        print(f"  {text:<40} {med[name] * 1e3:9.2f} ms {work / med[name]:>13,.0f} rows/s")
    out = {"store": med["raw_store"] / med["replay_store"],
           "prepared": med["raw_pre"] / med["replay_pre"],
           "objects": med["raw_store"] / med["replay_objects"],
           "floor": med["raw_pre"] / med["floor_pre"],
           "raw_us_per_row": med["raw_pre"] / work * 1e6,
           "read_us_per_case": (med["raw_store"] - med["raw_pre"]) / CASES * 1e6}
    out["sample_ms"] = (med["replay_pre_sampled"] - med["replay_pre"]) * 1e3
    print(f"  ratio from the store {out['store']:.3f}, prepared {out['prepared']:.3f} "
          f"(target >= 0.9); floor {out['floor']:.3f}; Capture objects {out['objects']:.3f}")
    print(f"  the per-request latency sample ({REQUEST_SAMPLE} cases x {len(targets)} versions, "
          f"one call each) adds {out['sample_ms']:.1f} ms to a replay (info)")
    return out


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        write_workspace(db)
        store = Store(db)
        try:
            demo = [LocalOnnxTarget(DEMO / f"wine-v{i}.onnx", threads=1) for i in (1, 2, 3)]
            rows.append(("demo wine-v1/v2/v3", measure("demo wine-v1/v2/v3", store, demo)))
            for hidden in MLP_HIDDEN:
                models = [write_mlp(Path(tmp) / f"mlp{hidden}-{i}.onnx", 13, hidden)
                          for i in range(3)]
                label = f"MLP 13-{hidden}-16"
                targets = [LocalOnnxTarget(m, threads=1) for m in models]
                rows.append((label, measure(label, store, targets)))
        finally:
            store.close()
    print("\nsummary (replay throughput / raw throughput, same inputs, same run)")
    print(f"  {'models':<20} {'raw us/row':>10} {'read us/case':>12} {'from store':>10} "
          f"{'prepared':>9} {'floor':>6} {'objects':>8} {'sample ms':>9}")
    for label, r in rows:
        print(f"  {label:<20} {r['raw_us_per_row']:>10.3f} {r['read_us_per_case']:>12.3f} "
              f"{r['store']:>10.3f} {r['prepared']:>9.3f} {r['floor']:>6.3f} {r['objects']:>8.3f} "
              f"{r['sample_ms']:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
