"""Probes an ONNX model on this machine through an onnxruntime session: ``onnx:PATH?provider=cpu``.

URI parameters: ``provider`` (cpu, cuda, tensorrt, openvino, coreml, dml, rocm), ``payload``
(a file of input rows), ``rate`` (requests/s), ``capture`` (share of successes kept),
``slo_ms``, ``min_confidence``, ``threads`` (intra-op threads), ``version``.

Its state: down when every request of the last half second raised, else up or degraded by the
share of recent requests that failed, as for every probe that sends requests (probes/health.py).
"""

from __future__ import annotations

import functools
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import psutil

from app.core.bus import Bus
from app.core.domain import (
    Capture,
    CaptureStatus,
    EndpointUri,
    Metric,
    Sample,
    TensorBlob,
    not_a_file,
)
from probes.base import (
    EndpointState,
    Probe,
    ProbeError,
    ProbeOptions,
    first_line,
    int_param,
    register,
    traffic_params,
)
from probes.health import FailureWindow
from probes.payload import Payload, load_payload

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}

_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}

MEMORY_INTERVAL_S = 0.5
SETTLE_EVERY = 64  # requests judged together
SETTLE_INTERVAL_S = 0.05  # ...or at least this often, so slow endpoints still show at once
LATENCY_METRIC = Metric.LATENCY_MS
FAILURE_METRIC = Metric.FAILURE
RSS_METRIC = Metric.RSS_MB


def available_providers() -> list[str]:
    # Azure's provider calls a cloud endpoint; it is not a way to run a local model.
    names = {v: k for k, v in PROVIDERS.items()}
    return [names.get(p, p) for p in ort.get_available_providers()
            if p != "AzureExecutionProvider"]


def load_session(path: str | Path, provider: str = "cpu", threads: int | None = None
                 ) -> ort.InferenceSession:
    """An onnxruntime session, or a ProbeError that says what is wrong and what to do."""
    path = Path(path)
    if provider not in PROVIDERS:
        raise ProbeError(f"unknown provider '{provider}'; use one of {', '.join(PROVIDERS)}")
    available = available_providers()
    if provider not in available:
        raise ProbeError(f"provider '{provider}' is not installed here; available: "
                         f"{', '.join(available)}. Install probescope[gpu] or use the cpu "
                         "provider")
    if problem := not_a_file(path, "model file"):
        raise ProbeError(problem)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's own warnings go to stderr otherwise
    if threads:
        options.intra_op_num_threads = threads
    chosen = [PROVIDERS[provider]]
    if provider != "cpu":
        chosen.append(PROVIDERS["cpu"])  # ops the accelerator lacks fall back, as ORT intends
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as exc:
        raise ProbeError(f"cannot load {path} as an ONNX model: {first_line(exc)}") from exc
    require_provider(session, provider, path)
    return session


def require_provider(session: ort.InferenceSession, provider: str, path: str | Path) -> None:
    """A ProbeError unless ``provider`` really runs ``session``.

    When an accelerator's provider cannot start (a missing CUDA or cuDNN library, no device),
    onnxruntime logs it and quietly retries on CPU. Figures measured that way would be CPU
    figures under a CUDA label, so a session that lost its provider is refused instead.
    """
    used = session.get_providers()
    if PROVIDERS[provider] not in used:
        raise ProbeError(f"onnxruntime could not start the '{provider}' provider for {path} "
                         f"and fell back to {', '.join(used) or 'nothing'}; check the GPU "
                         "driver and the CUDA/cuDNN libraries onnxruntime needs, or use "
                         "provider cpu")


def _concrete_shape(shape: list, rows: int = 1) -> tuple[int, ...]:
    # Symbolic or missing dims: the first is the batch (one request = one row), others 1.
    dims = []
    for i, d in enumerate(shape):
        dims.append(d if isinstance(d, int) and d > 0 else (rows if i == 0 else 1))
    return tuple(dims)


@dataclass(frozen=True)
class Request:
    feed: dict[str, np.ndarray]
    label: str | None
    request_id: str | None

    @functools.cached_property
    def blobs(self) -> tuple[TensorBlob, ...]:
        """The feed as capture tensors, made once: a request is sent many times."""
        return tuple(TensorBlob.from_array(k, v) for k, v in self.feed.items())


def build_requests(session: ort.InferenceSession, payload: Payload | None, *, seed: int = 0,
                   generated: int = 64) -> list[Request]:
    """Turn payload rows (or random inputs shaped like the signature) into ready feeds."""
    inputs = session.get_inputs()
    if payload is None:
        rng = np.random.default_rng(seed)
        requests = []
        for _ in range(generated):
            feed = {}
            for i in inputs:
                dtype = _ORT_DTYPES.get(i.type)
                if dtype is None:
                    raise ProbeError(f"input '{i.name}' has type {i.type}, which cannot be "
                                     "generated; give rows with --payload")
                shape = _concrete_shape(i.shape)
                if np.issubdtype(dtype, np.floating):
                    feed[i.name] = rng.standard_normal(shape).astype(dtype)
                else:
                    feed[i.name] = rng.integers(0, 2, shape).astype(dtype)
            requests.append(Request(feed, None, None))
        return requests
    if len(inputs) != 1:
        names = {i.name for i in inputs}
        missing = names - set(payload.columns)
        if missing:
            raise ProbeError(f"model has inputs {', '.join(sorted(names))}; payload columns "
                             f"lack {', '.join(sorted(missing))}")
    first = inputs[0]
    dtype = _ORT_DTYPES.get(first.type, np.float32)
    want = _concrete_shape(first.shape)
    per_row = int(np.prod(want[1:])) if len(want) > 1 else 1
    got = int(np.prod(payload.features.shape[1:])) if payload.features.ndim > 1 else 1
    if len(inputs) == 1 and got != per_row:
        raise ProbeError(f"payload rows have {got} values but input '{first.name}' wants "
                         f"{per_row} per row (shape {first.shape})")
    requests = []
    for r in range(len(payload)):
        if len(inputs) == 1:
            feed = {first.name: payload.features[r].reshape(want).astype(dtype)}
        else:
            col = {c: k for k, c in enumerate(payload.columns)}
            feed = {i.name: np.asarray(payload.features[r, col[i.name]]).reshape(
                _concrete_shape(i.shape)).astype(_ORT_DTYPES.get(i.type, np.float32))
                for i in inputs}
        label = payload.labels[r] if payload.labels else None
        rid = payload.ids[r] if payload.ids else None
        requests.append(Request(feed, label or None, rid))
    return requests


def classify(output: np.ndarray) -> tuple[str | None, float | None]:
    """Top class and its probability, when the first output is one row of class scores."""
    flat = output.reshape(-1) if output.ndim <= 2 and output.shape[0] == 1 else None
    if flat is None or flat.size < 2 or not np.issubdtype(flat.dtype, np.floating):
        return None, None
    top = int(np.argmax(flat))
    total = float(flat.sum())
    if flat.min() >= 0.0 and abs(total - 1.0) < 1e-3:
        return str(top), float(flat[top])
    return str(top), None  # logits: a class but no calibrated confidence


def classify_outputs(outputs: list) -> tuple[str | None, float | None]:
    """Top class and confidence from a model's outputs: the first output's scores, or, when
    the first output is the class itself (scikit-learn's exports answer a label, then the
    class probabilities), that class with the confidence of the first scores after it."""
    arrays = [o for o in outputs if isinstance(o, np.ndarray)]
    if not arrays or arrays[0].size == 0:
        return None, None
    first = arrays[0]
    if first.dtype.kind == "f" and first.size >= 2:
        return classify(first)
    if first.size != 1:
        return None, None
    value = first.reshape(-1)[0]
    if first.dtype.kind in "biuUSO":
        prediction = str(value.item() if hasattr(value, "item") else value)
    elif first.dtype.kind == "f" and np.isfinite(value) and float(value).is_integer():
        prediction = str(int(value))  # a class id sent as a float
    else:
        return None, None
    scores = next((a for a in arrays[1:] if a.dtype.kind == "f" and a.size >= 2), None)
    return prediction, (classify(scores)[1] if scores is not None else None)


@register("onnx")
class OnnxProbe(Probe):
    params = frozenset({"provider", "payload", "rate", "capture", "slo_ms", "min_confidence",
                        "threads", "version"})

    def __init__(self, uri: EndpointUri, bus: Bus, options: ProbeOptions) -> None:
        super().__init__(uri, bus, options)
        self.path = Path(uri.target)
        self.provider = uri.param("provider", "cpu") or "cpu"
        # Each intra-op thread is an OS thread spun up at once: threads=100000 took 16 GB and
        # the whole machine before the first request. More than the cores buys nothing.
        cores = os.cpu_count() or 1
        threads = int_param(uri, "threads", None, maximum=cores,
                            why_maximum=f" (this machine's {cores} cores)")
        self.session = load_session(self.path, self.provider, threads)
        payload_path = uri.param("payload") or options.payload
        payload = load_payload(payload_path) if payload_path else None
        self.input_names = payload.columns if payload is not None else ()  # for drift's names
        self.requests_ready = build_requests(self.session, payload, seed=options.seed)
        self.rate_hz, self.capture_rate, self.slo_ms, self.min_confidence = traffic_params(
            uri, options)
        meta = self.session.get_modelmeta()
        self.model_version = (uri.param("version") or meta.custom_metadata_map.get("version")
                              or self.path.stem)
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._process = psutil.Process()
        self._next = 0
        # Drawn at random, not every n-th request: a looped payload whose length n divides
        # would otherwise be sampled on the same few rows every loop.
        self._capture_draw = random.Random().random
        self._id_prefix = uuid.uuid4().hex[:12]  # unique per probe run; a counter within it
        self._session_run = self.session.run
        self._unsettled: list[tuple[int, int, int, list | None, str | None]] = []
        self._settle_due = 0.0
        self._window_errors = self._window_requests = 0  # since the last state update
        self.health = FailureWindow()

    def info(self) -> dict[str, str]:
        return {"kind": "onnx", "model_version": self.model_version, "provider": self.provider,
                "path": str(self.path)}

    # The hot path (``send_one``) does the inference call and appends one tuple; judging the
    # result, building samples and captures and taking the bus lock happen in ``settle``, once
    # per batch. Done per request, that bookkeeping ran with caches just flushed by the model and
    # cost several times what it costs in a warm batch.

    def send_one(self) -> None:
        """Send the next request; its result waits, unjudged, for ``settle``."""
        i = self._next
        self._next = (i + 1) % len(self.requests_ready)
        ts_ns = time.time_ns()
        t0 = time.perf_counter_ns()
        try:
            outputs = self._session_run(self._output_names, self.requests_ready[i].feed)
            error = None
        except Exception as exc:
            outputs, error = None, first_line(exc)
        self._unsettled.append((i, ts_ns, time.perf_counter_ns() - t0, outputs, error))

    def step(self) -> None:
        """One request as the run loop makes it: send, and settle when a batch is due."""
        self.send_one()
        if len(self._unsettled) >= SETTLE_EVERY or time.perf_counter() >= self._settle_due:
            self.settle()

    def measure_one(self) -> Capture | None:
        """Send one request and settle it at once; returns its capture, if kept."""
        self.send_one()
        captures = self.settle()
        return captures[0] if captures else None

    def settle(self) -> list[Capture]:
        """Judge the requests sent since the last call; put samples and captures on the bus."""
        unsettled, self._unsettled = self._unsettled, []
        self._settle_due = time.perf_counter() + SETTLE_INTERVAL_S
        items: list[Sample | Capture] = []
        captures: list[Capture] = []
        endpoint = self.endpoint
        verdicts = self._judge_batch(unsettled)
        failed_by: dict[CaptureStatus, int] = {}
        last_error: str | None = None
        for (index, ts_ns, latency_ns, outputs, error), (status, prediction, confidence) in zip(
                unsettled, verdicts, strict=True):
            request = self.requests_ready[index]
            latency_ms = latency_ns / 1e6
            self.requests += 1
            items.append(Sample(endpoint, ts_ns, LATENCY_METRIC, latency_ms))
            failed = status is not CaptureStatus.OK
            if failed:
                self.errors += 1
                self._window_errors += status is CaptureStatus.ERROR
                failed_by[status] = failed_by.get(status, 0) + 1
                last_error = error or last_error
                items.append(Sample(endpoint, ts_ns, FAILURE_METRIC, 1.0))
            self._window_requests += 1
            # Every request, failed or not, takes its turn in the random sample; a failure
            # out of turn is kept all the same, marked as not sampled (drift leaves it out).
            sampled = self._capture_draw() < self.capture_rate
            if not sampled and not failed:
                continue
            capture = Capture(
                endpoint=endpoint, ts_ns=ts_ns, latency_ms=latency_ms, status=status,
                inputs=request.blobs,
                outputs=tuple(TensorBlob.from_array(n, o) for n, o in
                              zip(self._output_names, outputs or (), strict=False)
                              if isinstance(o, np.ndarray)),
                request_id=request.request_id or f"{self._id_prefix}-{self.requests}",
                error=error, label=request.label, prediction=prediction,
                confidence=confidence, model_version=self.model_version, sampled=sampled,
            )
            items.append(capture)
            captures.append(capture)
        if unsettled:
            self.health.add_counts(len(unsettled), failed_by, time.monotonic(), last_error)
        if items:
            self.bus.put_many(items)
        return captures

    def _judge_batch(self, unsettled: list) -> list[tuple[CaptureStatus, str | None,
                                                          float | None]]:
        """Status, top class and confidence per request, with numpy over the whole batch."""
        verdicts: list[tuple[CaptureStatus, str | None, float | None]] = []
        firsts = [u[3][0] if u[3] is not None else None for u in unsettled]
        shape = firsts[0].shape if firsts and firsts[0] is not None else None
        uniform = (shape is not None and len(shape) == 2 and shape[0] == 1 and shape[1] >= 2
                   and len(self._output_names) == 1
                   and all(f is not None and f.shape == shape and f.dtype.kind == "f"
                           for f in firsts))
        if not uniform:
            return [self._judge(self.requests_ready[u[0]], u[2] / 1e6, u[3], u[4])
                    for u in unsettled]
        scores = np.concatenate(firsts)  # one row per request
        finite = np.isfinite(scores).all(axis=1).tolist()
        top = scores.argmax(axis=1)
        top_score = scores[np.arange(len(top)), top].tolist()
        is_prob = ((scores.min(axis=1) >= 0.0)
                   & (np.abs(scores.sum(axis=1) - 1.0) < 1e-3)).tolist()
        for k, (index, _, latency_ns, _, _) in enumerate(unsettled):
            if not finite[k]:
                verdicts.append((CaptureStatus.NON_FINITE, None, None))
                continue
            prediction = str(int(top[k]))
            confidence = top_score[k] if is_prob[k] else None
            verdicts.append((self._verdict(self.requests_ready[index], latency_ns / 1e6,
                                           prediction, confidence), prediction, confidence))
        return verdicts

    def _judge(self, request: Request, latency_ms: float, outputs: list | None,
               error: str | None) -> tuple[CaptureStatus, str | None, float | None]:
        if error is not None or outputs is None:
            return CaptureStatus.ERROR, None, None
        if not all(np.isfinite(o).all() for o in outputs
                   if isinstance(o, np.ndarray) and o.dtype.kind == "f"):
            return CaptureStatus.NON_FINITE, None, None
        prediction, confidence = classify_outputs(outputs)
        return self._verdict(request, latency_ms, prediction, confidence), prediction, confidence

    def _verdict(self, request: Request, latency_ms: float, prediction: str | None,
                 confidence: float | None) -> CaptureStatus:
        if request.label is not None and prediction is not None and prediction != request.label:
            return CaptureStatus.MISMATCH
        if self.slo_ms is not None and latency_ms > self.slo_ms:
            return CaptureStatus.SLOW
        if (self.min_confidence is not None and confidence is not None
                and confidence < self.min_confidence):
            return CaptureStatus.LOW_CONFIDENCE
        return CaptureStatus.OK

    def run(self, stop: threading.Event) -> None:
        period_s = 1.0 / self.rate_hz if self.rate_hz > 0 else 0.0
        next_due = time.perf_counter()
        next_memory = 0.0
        while not stop.is_set():
            if self.paused:
                self.settle()
                self.wait_if_paused()
                next_due = time.perf_counter()
                continue
            self.step()
            now = time.perf_counter()
            if now >= next_memory:
                self.settle()
                self.bus.put(Sample(self.endpoint, time.time_ns(), RSS_METRIC,
                                    self._process.memory_info().rss / 2**20))
                next_memory = now + MEMORY_INTERVAL_S
                self._update_state()
            if period_s:
                next_due += period_s
                delay = next_due - time.perf_counter()
                if delay > 0:
                    stop.wait(delay)
                elif delay < -1.0:
                    next_due = time.perf_counter()  # fell far behind: do not burst to catch up
        self.settle()

    def _update_state(self) -> None:
        if self._window_requests:
            if self._window_errors == self._window_requests:
                self.state = EndpointState.DOWN
                self.health.reset()  # an outage is said by down, not counted in the share
            else:
                self.set_request_state(self.health, time.monotonic())
        self._window_errors = self._window_requests = 0

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
