"""Incident report export: time to write the PDF of a one-hour incident with 360,000 samples.

The workspace holds one endpoint with 100 requests/s for one hour (360,000 latency samples),
a failure sample for 5 % of them, RSS every second, and 500 failed captures with tensors; the
incident spans that hour. The baseline, in the same run and on the same file, is reading those
samples back raw (``Store.values`` for the three series over the report's window): the least
any report drawn from them must do if it looked at every sample. The report instead asks SQL
for per-bucket min/max/mean, then lays out and paints vector plots, the failures table and the
rest. Prints the median of five runs of each and the ratio.

Also printed, for the live monitor's cost: the incident rules judging that hour from the store
(one evaluation per 5 s, 720 in all), per evaluation.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np

from app.core.domain import Capture, CaptureStatus, Metric, Sample, TensorBlob
from app.core.incidents import evaluate_range, incident_window
from app.core.store import Store
from app.report import ensure_gui_app, write_report

NS = 1_000_000_000
RATE_HZ = 100
HOUR_S = 3600
RUNS = 5
EP = "onnx:assets/demo/wine-v1.onnx?provider=cpu&slo_ms=5"


def build(db: Path) -> int:
    store = Store(db)
    store.set_endpoint_info(EP, slo_ms=5.0, model_version="1.0.0")
    rng = np.random.default_rng(0)
    t0 = 1_700_000_000 * NS
    n = RATE_HZ * HOUR_S
    ts = t0 + (np.arange(n) * (NS // RATE_HZ)).astype(np.int64)
    latency = rng.gamma(4.0, 0.5, n) + np.where(np.arange(n) > n // 3, 2.0, 0.0)
    failed = rng.random(n) < 0.05
    samples = [Sample(EP, int(t), Metric.LATENCY_MS, float(v)) for t, v in zip(ts, latency,
                                                                              strict=True)]
    samples += [Sample(EP, int(t), Metric.FAILURE, 1.0) for t in ts[failed]]
    samples += [Sample(EP, int(t0 + s * NS), Metric.RSS_MB, 200.0 + s * 0.01)
                for s in range(HOUR_S)]
    captures = [Capture(EP, int(t), 3.0, CaptureStatus.MISMATCH,
                        inputs=(TensorBlob.from_array("features", rng.random((1, 13),
                                                                             np.float32)),),
                        label="1", prediction="0", confidence=0.55, model_version="1.0.0")
                for t in ts[failed][:500]]
    for k in range(0, len(samples), 50_000):
        store.write_batch(samples[k:k + 50_000], captures if k == 0 else [])
    incident_id = store.insert_incident(
        EP, rule="latency", severity="warning", status="open", opened_ns=t0, trigger_ns=t0,
        value=7.1, threshold=5.0, summary="Latency above SLO",
        details={"detail": "p95 7.10 ms over 30 s (3,000 requests); SLO 5 ms", "unit": "ms"},
        note="Opened: p95 7.10 ms over 30 s (3,000 requests); SLO 5 ms.")
    store.update_incident(incident_id, cleared_ns=t0 + HOUR_S * NS)
    store.close()
    return incident_id


def read_raw(db: Path, incident_id: int) -> int:
    store = Store(db, readonly=True)
    try:
        start, end = incident_window(store.incident(incident_id))
        return sum(len(store.values(EP, m, start, end)[1])
                   for m in (Metric.LATENCY_MS, Metric.FAILURE, Metric.RSS_MB))
    finally:
        store.close()


def main() -> None:
    ensure_gui_app()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        incident_id = build(db)
        count = read_raw(db, incident_id)
        baseline, report = [], []
        for i in range(RUNS):  # interleaved, so drift in machine load hits both alike
            t = time.perf_counter()
            read_raw(db, incident_id)
            baseline.append(time.perf_counter() - t)
            t = time.perf_counter()
            write_report(db, incident_id, Path(tmp) / f"r{i}.pdf")
            report.append(time.perf_counter() - t)
        size_kb = (Path(tmp) / "r0.pdf").stat().st_size / 1024
        store = Store(db)
        t_start = store.time_range(EP, Metric.LATENCY_MS)[0]
        t = time.perf_counter()
        evaluate_range(store, t_start, t_start + HOUR_S * NS, step_s=5.0)
        per_eval_ms = (time.perf_counter() - t) / (HOUR_S / 5) * 1000
        store.close()
    b, r = statistics.median(baseline), statistics.median(report)
    print(f"samples in the report window: {count:,}")
    print(f"baseline, read them raw from the store: {b * 1000:8.1f} ms (median of {RUNS})")
    print(f"write the incident report PDF:          {r * 1000:8.1f} ms (median of {RUNS}, "
          f"{size_kb:.0f} KB)")
    print(f"ratio report / raw read: {r / b:.2f}")
    print(f"incident rules, one evaluation of the endpoint: {per_eval_ms:.2f} ms "
          f"({HOUR_S // 5} evaluations over the hour)")


if __name__ == "__main__":
    main()
