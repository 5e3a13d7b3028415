"""The active-probe loop shared by the model-server probes (v2, TorchServe, TF Serving): pacing,
failure judgement, captures, and the down/up cycle when a server goes away and comes back.

A subclass says how to check health, how to learn the model's inputs, how to encode one request
and how to decode one answer. The state is down while the server cannot be reached (or says it
is not ready), else up or degraded by the share of recent requests that failed, as for every
probe that sends requests (probes/health.py).

Thread: ``run`` on the probe's own thread; the constructor makes one quick attempt to reach the
server so user-fixable problems surface at attach time.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from abc import abstractmethod
from dataclasses import dataclass, field

import numpy as np

from app.core.bus import Bus
from app.core.domain import Capture, CaptureStatus, EndpointUri, Metric, Sample, TensorBlob
from probes.base import (
    EndpointState,
    Probe,
    ProbeError,
    ProbeOptions,
    first_line,
    traffic_params,
)
from probes.health import FailureWindow
from probes.http_common import (
    HTTP_PARAMS,
    Backoff,
    BadResponse,
    CredentialsRefused,
    HttpClient,
    HttpSettings,
    RemoteError,
    TimedOut,
    Unreachable,
    split_http_target,
)
from probes.onnx_local import classify_outputs
from probes.payload import Payload, load_payload

log = logging.getLogger(__name__)

UP_METRIC = Metric.UP
STATE_INTERVAL_S = 0.5  # how often the state is judged (its window is probes/health.py's)
_NUMERIC_KINDS = frozenset("biuf")


@dataclass(frozen=True, slots=True)
class RemoteRequest:
    """One ready request: the tensors it carries (for the capture) and its encoded body."""

    inputs: dict[str, np.ndarray]
    body: bytes
    label: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    """What a server answered, in our terms. A subclass may name the class itself."""

    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    model_version: str | None = None
    prediction: str | None = None
    confidence: float | None = None
    request_id: str | None = None


def predict(outputs: dict[str, np.ndarray]) -> tuple[str | None, float | None]:
    """Class and confidence: the first output's scores, or a class label itself (with the
    confidence of the scores after it, as scikit-learn's exports answer)."""
    return classify_outputs(list(outputs.values()))


def uri_payload(uri: EndpointUri, options: ProbeOptions) -> Payload | None:
    """The rows named by ``?payload=`` (first) or the options; None when neither names any."""
    path = uri.param("payload") or options.payload
    return load_payload(path) if path else None


class RemoteModelProbe(Probe):
    """Sends requests to a model server at a steady rate and records each as a capture."""

    example: str = ""  # a valid URI, for error messages
    params = HTTP_PARAMS | {"rate", "capture", "slo_ms", "min_confidence", "payload", "version"}

    def __init__(self, uri: EndpointUri, bus: Bus, options: ProbeOptions) -> None:
        super().__init__(uri, bus, options)
        self.base_url, path = split_http_target(uri, self.example)
        self.settings = HttpSettings.from_uri(uri)
        self.model_version: str | None = uri.param("version")
        self.parse_path(path)
        self.payload = uri_payload(uri, options)
        self.input_names = self.payload.columns if self.payload is not None else ()
        self.rate_hz, self.capture_rate, self.slo_ms, self.min_confidence = traffic_params(
            uri, options)
        self.client = HttpClient(self.base_url, self.settings)
        self.requests_ready: list[RemoteRequest] = []
        self._next = 0
        # Drawn at random, not every n-th request: a looped payload whose length n divides
        # would otherwise be sampled on the same few rows every loop.
        self._capture_draw = random.Random().random
        self._backoff = Backoff()
        self.health = FailureWindow()
        try:
            with self.client.quick():
                self._connect(retries=0)
        except RemoteError as exc:
            # Not the user's mistake (yet): gone, slow, or still loading its model. Start down
            # and keep trying from the probe thread; last_error says why meanwhile.
            self.mark_down(str(exc))
        except ProbeError:
            self.client.close()
            raise

    # -- what a subclass provides -------------------------------------------------------------

    @abstractmethod
    def parse_path(self, path: str) -> None:
        """Read model name/version from the URI's path; ProbeError if it is not understood."""

    @abstractmethod
    def check_ready(self, retries: int) -> None:
        """Raise Unreachable/TimedOut when the server is down, BadResponse when not ready."""

    @abstractmethod
    def build_requests(self, retries: int) -> list[RemoteRequest]:
        """Learn the inputs (metadata, payload) and encode every request body once."""

    @abstractmethod
    def infer_path(self) -> str: ...

    @abstractmethod
    def decode(self, doc: object) -> Decoded:
        """Turn a 2xx JSON answer into outputs; BadResponse when it is not what we expect."""

    # -- connection state ---------------------------------------------------------------------

    def _connect(self, retries: int) -> None:
        """Health, then (first time only) metadata and requests. Raises RemoteError/ProbeError."""
        try:
            self.check_ready(retries)
            if not self.requests_ready:
                self.requests_ready = self.build_requests(retries)
        except BadResponse as exc:
            if isinstance(exc, CredentialsRefused):
                raise ProbeError(f"{self.endpoint}: {exc}") from None
            if exc.status_code == 404:
                raise ProbeError(f"{self.endpoint}: {exc}; check the model name and version "
                                 "in the URI") from None
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError,
                OverflowError) as exc:
            # Status and metadata documents come from the server: one of an unexpected
            # shape is the server's fault, to report and retry, not a reason to stop probing.
            log.debug("%s: unreadable status or metadata", self.endpoint, exc_info=True)
            raise BadResponse(f"status or metadata from {self.base_url} cannot be read: "
                              f"{self.client.redact(first_line(exc))}") from None
        self.state = EndpointState.UP
        self.last_error = None
        # The backoff is not reset here but when an inference is answered (nor is "back up"
        # said before then): a server whose health check answers while each inference drops
        # the connection (a crashing model worker behind a live front end) would otherwise
        # be asked again at once, hundreds of times a second, whatever the rate.
        self.bus.put(Sample(self.endpoint, time.time_ns(), UP_METRIC, 1.0))

    def _reconnect(self, stop: threading.Event) -> bool:
        """One attempt to come back (its reads retried as ``?retries=`` says); on failure
        waits the next, longer backoff delay."""
        try:
            self._connect(retries=self.settings.retries)
            return True
        except (RemoteError, ProbeError) as exc:
            self.mark_down(str(exc))
        stop.wait(self._backoff.next())
        return False

    # -- measuring ----------------------------------------------------------------------------

    def measure_one(self) -> Capture | None:
        """Send the next request, put its samples on the bus; returns the capture, if kept."""
        request = self.requests_ready[self._next]
        self._next = (self._next + 1) % len(self.requests_ready)
        ts_ns = time.time_ns()
        t0 = time.perf_counter_ns()
        decoded = Decoded()
        error = None
        latency_ms: float | None = None
        status = CaptureStatus.OK
        try:
            answer = self.client.request("POST", self.infer_path(), content=request.body)
            latency_ms = answer.elapsed_ms  # the HTTP exchange only, not our decoding
            if answer.status_code >= 400:
                raise BadResponse(f"HTTP {answer.status_code}: {answer.error_text()}",
                                  answer.status_code)
            decoded = self.decode(answer.json())
        except TimedOut as exc:
            status, error = CaptureStatus.TIMEOUT, str(exc)
            self.last_error = error  # why the endpoint reads degraded, in the details
        except Unreachable as exc:
            status, error = CaptureStatus.ERROR, str(exc)
            self.mark_down(str(exc))
        except BadResponse as exc:
            status, error = CaptureStatus.ERROR, self.client.redact(str(exc))
            self.last_error = error
        if latency_ms is None:  # no answer at all: the time until we gave up
            latency_ms = (time.perf_counter_ns() - t0) / 1e6
            self.unanswered += 1
        self.requests += 1

        outputs = decoded.outputs
        # Decoded text (a label, an id) came from the answer: our token must not ride along.
        redact = self.client.redact
        decoded = Decoded(outputs, decoded.model_version and redact(decoded.model_version),
                          decoded.prediction and redact(decoded.prediction),
                          decoded.confidence, decoded.request_id and redact(decoded.request_id))
        prediction, confidence = decoded.prediction, decoded.confidence
        if prediction is None and confidence is None:
            prediction, confidence = predict(outputs)
        if error is not None:
            pass  # status already says how it failed
        elif not all(np.isfinite(o).all() for o in outputs.values() if o.dtype.kind == "f"):
            status = CaptureStatus.NON_FINITE
        elif request.label is not None and prediction is not None and prediction != request.label:
            status = CaptureStatus.MISMATCH
        elif self.slo_ms is not None and latency_ms > self.slo_ms:
            status = CaptureStatus.SLOW
        elif (self.min_confidence is not None and confidence is not None
              and confidence < self.min_confidence):
            status = CaptureStatus.LOW_CONFIDENCE
        if decoded.model_version:
            self.model_version = decoded.model_version
        failed = status is not CaptureStatus.OK
        items: list[Sample | Capture] = [
            Sample(self.endpoint, ts_ns, Metric.LATENCY_MS, latency_ms)]
        if failed:
            self.errors += 1
            items.append(Sample(self.endpoint, ts_ns, Metric.FAILURE, 1.0))

        # Every request, failed or not, takes its turn in the random sample; a failure out of
        # turn is kept all the same, marked as not sampled (drift leaves it out).
        sampled = self._capture_draw() < self.capture_rate
        if not sampled and not failed:
            self.bus.put_many(items)
            return None
        capture = Capture(
            endpoint=self.endpoint, ts_ns=ts_ns, latency_ms=latency_ms, status=status,
            inputs=tuple(TensorBlob.from_array(k, v) for k, v in request.inputs.items()),
            # Text outputs (BYTES) are not stored as tensors; their class is in ``prediction``.
            outputs=tuple(TensorBlob.from_array(k, v) for k, v in outputs.items()
                          if v.dtype.kind in _NUMERIC_KINDS),
            request_id=request.request_id or decoded.request_id or uuid.uuid4().hex,
            error=error, label=request.label, prediction=prediction, confidence=confidence,
            model_version=self.model_version, sampled=sampled,
        )
        items.append(capture)
        self.bus.put_many(items)  # one lock for the request's samples and capture
        return capture

    def run(self, stop: threading.Event) -> None:
        period_s = 1.0 / self.rate_hz if self.rate_hz > 0 else 0.0
        next_due = time.perf_counter()
        next_state = 0.0
        while not stop.is_set():
            if self.paused:
                self.wait_if_paused()
                next_due = time.perf_counter()
                continue
            if self.state is EndpointState.DOWN or not self.requests_ready:
                if not self._reconnect(stop):
                    continue
                next_due = time.perf_counter()
                self.health.reset()  # the outage is said by down, not counted in the share
            sent_before = self.requests
            try:
                capture = self.measure_one()
            except Exception as exc:
                # Decoders turn malformed answers into BadResponse; anything else is a bug of
                # ours, and one odd answer must not end the probing for the rest of the run.
                self._unexpected(exc, counted=self.requests > sent_before)
                status, error = CaptureStatus.ERROR, self.last_error
            else:
                if self.state is EndpointState.DOWN:
                    # The request found the server gone: pause (growing, as while it is
                    # unreachable), then reconnect before the next.
                    stop.wait(self._backoff.next())
                    continue
                self._backoff.reset()  # it answered: the next outage starts short again
                self.mark_answered()
                # Failures always come back as a capture; None is a success not sampled.
                status, error = ((capture.status, capture.error) if capture is not None
                                 else (CaptureStatus.OK, None))
            now = time.perf_counter()
            self.health.add(status, now, error)
            if now >= next_state:
                self.set_request_state(self.health, now)
                next_state = now + STATE_INTERVAL_S
            if period_s:
                next_due += period_s
                delay = next_due - time.perf_counter()
                if delay > 0:
                    stop.wait(delay)
                elif delay < -1.0:
                    next_due = time.perf_counter()  # fell far behind: do not burst to catch up

    def _unexpected(self, exc: Exception, counted: bool) -> None:
        """Count and report a request that failed in our own code (``counted``: already in
        ``requests``); the traceback is logged once per kind of error, so a server that keeps
        causing it does not flood the log."""
        self.requests += 0 if counted else 1
        self.errors += 1
        # Counted as an error in the share that decides the state (run), as a server's is.
        self.last_error = self.client.redact(self.internal_error(exc, "handling an answer"))
        self.bus.put(Sample(self.endpoint, time.time_ns(), Metric.FAILURE, 1.0))

    def info(self) -> dict[str, str]:
        facts = {"kind": self.scheme, "server": self.base_url}
        if self.model_version:
            facts["model_version"] = self.model_version
        return facts

    def close(self) -> None:
        self.client.close()


def require_payload(endpoint: str, why: str) -> ProbeError:
    return ProbeError(f"{endpoint}: {why}, so ProbeScope cannot make up requests; give input "
                      "rows with --payload FILE or ?payload=FILE (.csv, .parquet, .jsonl, .npy)")
