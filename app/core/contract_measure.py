"""Measuring one model on one onnxruntime provider in a fresh child interpreter: latency p50
and p95 of single-row runs, the rise of peak RSS, and accuracy on the validation file. Both
ends are here: the parent's ``_measure_in_subprocess`` and the child's ``_child_main``.
Thread: the caller's (it waits on the child). Apart from ``contract`` because this is the code
that runs in the child, answering in figures; the verdicts on them are drawn in the parent
(``contract.measured_check``), for a local target or an agent's (``contract_agent``).

Why a child process: peak memory is only honest in a process that has loaded nothing else, and
latency is steadier away from a GUI's or a test runner's other threads. The child reports the
rise of its peak RSS (``ru_maxrss``) over its RSS just before loading the model.

The child is still started as ``python -m app.core.contract``, whose ``__main__`` calls
``_child_main``: the module path it had before this code moved here, so the child imports
what it did (and its process peak reads as before).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.classes import class_names, label_index
from app.core.contract_file import ContractError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ACCURACY_BATCH", "CHILD_TIMEOUT_S", "INTERVAL_LEVEL", "WARMUP_RUNS",
           "predicted_classes", "quantile_interval"]

WARMUP_RUNS = 20
CHILD_TIMEOUT_S = 120.0
ACCURACY_BATCH = 256
INTERVAL_LEVEL = 0.95  # the confidence asked of the p95's interval


def quantile_interval(times: list[float], q: float = 0.95,
                      level: float = INTERVAL_LEVEL) -> tuple[float, float, float]:
    """A distribution-free confidence interval for the ``q`` quantile of ``times``, from their
    order statistics: ``(low, high, coverage)``, where ``coverage`` is the interval's own
    confidence (at least ``level`` when the runs allow it; fewer runs give less).

    Why order statistics and not a bootstrap: the count of runs below the true quantile is
    Binomial(n, q) whatever the latency's distribution, so the interval is exact, needs no
    resampling (the same runs always give the same interval, which a gate must), and does
    not shrink at a tail quantile the way a bootstrap of a p95 does, since resampling can
    never draw a value beyond the slowest run."""
    ordered = sorted(times)
    n = len(ordered)
    if n == 0:
        raise ValueError("no runs")
    # P(B <= k) for B ~ Binomial(n, q), summed in logs so that 100,000 runs do not overflow.
    log_q, log_r = math.log(q), math.log1p(-q)
    pmf = [math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                    + k * log_q + (n - k) * log_r) for k in range(n + 1)]
    cdf = list(itertools.accumulate(pmf))
    tail = (1 - level) / 2
    # 1-based order statistics x_(lo) <= Q_q <= x_(hi) hold when lo <= B < hi.
    lo = max([k for k in range(1, n + 1) if cdf[k - 1] <= tail], default=1)
    hi = min([k for k in range(1, n + 1) if 1 - cdf[k - 1] <= tail], default=n)
    coverage = cdf[hi - 1] - (cdf[lo - 2] if lo >= 2 else 0.0)
    return float(ordered[lo - 1]), float(ordered[hi - 1]), min(1.0, coverage)


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _measure_in_child(path: str, provider: str, validation: str | None, runs: int) -> dict:
    """Runs in a fresh process: accuracy, latency p95 and the peak RSS rise of one model."""
    import resource
    import time

    import numpy as np

    # pandas whether or not there is a validation file to read: what is resident before the
    # baseline decides how much of onnxruntime's shared pages count as the model's, and the
    # figure must be the model's whatever the contract's clauses (14.0 MB without a
    # validation file, 10.3 MB with one, before this import).
    import pandas  # noqa: F401
    import psutil

    from probes.onnx_local import _ORT_DTYPES, load_session
    from probes.payload import load_payload

    payload = load_payload(validation) if validation else None
    # Imports can peak above what the process later holds; start the peak afresh (Linux:
    # writing 5 to clear_refs resets VmHWM) so it covers the model alone.
    reset = _reset_peak_rss()
    baseline_mb = psutil.Process().memory_info().rss / 2**20
    session = load_session(path, provider)
    first = session.get_inputs()[0]
    dtype = _ORT_DTYPES.get(first.type, np.float32)
    declared = first.shape[0] if first.shape else None
    # A model exported with a fixed batch (often 1) takes exactly that many rows per call.
    batch = declared if isinstance(declared, int) and declared > 0 else ACCURACY_BATCH
    if payload is not None:  # a bounded sample for the latency runs: see the accuracy below
        features = payload.features.reshape(len(payload), -1)
        rows = features[:ACCURACY_BATCH].astype(dtype)
    else:
        width = next((d for d in first.shape[1:] if isinstance(d, int) and d > 0), 1)
        rows = np.random.default_rng(0).standard_normal((64, width)).astype(dtype)
    out: dict = {}
    run = session.run
    for i in range(WARMUP_RUNS):
        run(None, {first.name: rows[i % len(rows)][None, :]})
    times = []
    for i in range(runs):
        row = rows[i % len(rows)][None, :]
        t0 = time.perf_counter_ns()
        run(None, {first.name: row})
        times.append((time.perf_counter_ns() - t0) / 1e6)
    out["latency_p95_ms"] = float(np.percentile(times, 95))
    out["latency_p50_ms"] = float(np.percentile(times, 50))
    # How far the p95 may move with other runs of this same measurement: a limit inside it
    # is a verdict another check could reverse.
    low, high, coverage = quantile_interval(times)
    out["latency_p95_interval_ms"] = [low, high]
    out["latency_p95_interval_level"] = coverage
    out["provider"] = provider
    peak_mb = (_peak_rss_mb() if reset else None) or (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux
    out["peak_memory_mb"] = max(0.0, peak_mb - baseline_mb)
    out["process_peak_mb"] = peak_mb
    # Accuracy after the peak is read, in bounded batches: the memory clause is about
    # serving the model, and must not grow with the size of the validation file.
    if payload is not None and payload.labels:
        predicted = np.concatenate([
            predicted_classes(run(None, {first.name: chunk}), len(chunk))
            for chunk in (features[at:at + batch].astype(dtype)
                          for at in range(0, len(features), batch))])
        names = class_names(session.get_modelmeta().custom_metadata_map)
        labelled = [i for i, lab in enumerate(payload.labels) if lab]
        said = [label_index(payload.labels[i], names) for i in labelled]
        correct = sum(1 for i, want in zip(labelled, said, strict=True)
                      if predicted[i] >= 0 and predicted[i] == want)
        out["accuracy"] = correct / len(labelled) if labelled else None
        out["validation_rows"] = len(labelled)
        out["unlabelled_rows"] = len(payload.labels) - len(labelled)
        out["no_class"] = int(np.count_nonzero(predicted[labelled] < 0))
    return out


def predicted_classes(outputs: list, n: int) -> np.ndarray:
    """Each row's class from a model's outputs, -1 where none: the first output that is a
    class index (an integer per row, as sklearn exports give first), else the first float
    output: the index of the top value, or for one column (a sigmoid, or a logit) 1 above
    0.5 (above 0 when some value is outside [0, 1]). A row with a non-finite value has none."""
    import numpy as np

    arrays = [np.asarray(o) for o in outputs if isinstance(o, np.ndarray)]
    for a in arrays:
        if a.dtype.kind in "iu" and a.size == n:
            return a.reshape(n).astype(np.int64)
    scores = next((a.reshape(n, -1) for a in arrays if a.dtype.kind == "f" and a.size % n == 0
                   and a.size), None)
    if scores is None:
        return np.full(n, -1, dtype=np.int64)
    finite = np.isfinite(scores).all(axis=1)
    if scores.shape[1] == 1:
        column = scores[:, 0]
        probability = bool(((column[finite] >= 0) & (column[finite] <= 1)).all())
        classes = (column > (0.5 if probability else 0.0)).astype(np.int64)
    else:
        classes = scores.argmax(axis=1).astype(np.int64)
    classes[~finite] = -1
    return classes


def _measure_in_subprocess(path: str, provider: str, validation: str | None,
                           runs: int) -> dict:
    """Run ``_measure_in_child`` in a fresh interpreter (``python -m app.core.contract``), the
    request and the answer as JSON on stdin/stdout. A plain subprocess rather than
    multiprocessing: spawn would re-import the parent's main module (the window, a test
    runner, a user's script) in the child."""
    request = json.dumps({"path": path, "provider": provider, "validation": validation,
                          "runs": runs})
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    try:
        done = subprocess.run([sys.executable, "-m", "app.core.contract"], input=request,
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                              env=env, check=False)
    except subprocess.TimeoutExpired:
        raise ContractError(f"no answer within {CHILD_TIMEOUT_S:g} s") from None
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if done.returncode != 0 or "error" in answer or not answer:
        text = answer.get("error") or (done.stderr.strip().splitlines() or ["no answer"])[-1]
        raise ContractError(text)
    return answer


def _child_main() -> int:
    request = json.loads(sys.stdin.read())
    try:
        out = _measure_in_child(request["path"], request["provider"], request["validation"],
                                int(request["runs"]))
    except Exception as exc:
        # One line, but whole: onnxruntime puts the index and the size it expected on the
        # lines after "for the following indices".
        text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        out = {"error": text or type(exc).__name__}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0
