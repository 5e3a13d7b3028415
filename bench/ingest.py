"""Ingest throughput: samples/s from probe threads through the bus and recorder into SQLite.

Four producer threads put samples as fast as they can; the figure is samples committed per
second of wall time until the last one is durable. The baseline, measured in the same run on
the same rows, is the ceiling: one bare ``executemany`` into the same schema with no bus, no
recorder and no threads. Target: >= 100,000 samples/s on a 2-core machine.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.bus import Bus
from app.core.domain import Sample
from app.core.recorder import Recorder
from app.core.store import Store

PRODUCERS = 4
PER_PRODUCER = 250_000
BATCH = 100  # probes hand samples over in small groups (put_many), as the onnx probe does


def make_samples(producer: int) -> list[Sample]:
    endpoint = f"onnx:model-{producer}.onnx"
    return [Sample(endpoint, i, "latency_ms", i * 0.001) for i in range(PER_PRODUCER)]


def through_recorder(db: Path, work: list[list[Sample]]) -> float:
    bus = Bus(capacity=1_000_000)
    recorder = Recorder(bus, lambda: Store(db))
    recorder.start()
    total = sum(len(w) for w in work)

    def produce(samples: list[Sample]) -> None:
        for k in range(0, len(samples), BATCH):
            chunk = samples[k:k + BATCH]
            if bus.put_many(chunk) < len(chunk):  # never at this capacity; a drop voids the run
                raise RuntimeError("bus overflowed during the benchmark")

    threads = [threading.Thread(target=produce, args=(w,)) for w in work]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while recorder.stats().committed_samples < total:
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    recorder.stop()
    return total / elapsed


def bare_executemany(db: Path, work: list[list[Sample]]) -> float:
    store = Store(db)
    rows = [s for w in work for s in w]
    t0 = time.perf_counter()
    store.write_batch(rows, [])
    elapsed = time.perf_counter() - t0
    store.close()
    return len(rows) / elapsed


def main() -> int:
    work = [make_samples(p) for p in range(PRODUCERS)]
    with tempfile.TemporaryDirectory() as d:
        ours = through_recorder(Path(d) / "recorder.db", work)
        ceiling = bare_executemany(Path(d) / "bare.db", work)
        check = Store(Path(d) / "recorder.db")
        committed = check.count_samples()
        check.close()
    total = PRODUCERS * PER_PRODUCER
    assert committed == total, f"lost samples: {committed} of {total}"
    target = 100_000
    print(f"bus + recorder: {ours:,.0f} samples/s ({PRODUCERS} producers, {total:,} samples, "
          f"all {committed:,} committed)")
    print(f"bare executemany baseline: {ceiling:,.0f} samples/s")
    print(f"ratio to baseline: {ours / ceiling:.3f}")
    print(f"target >= {target:,} samples/s: {'MET' if ours >= target else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
