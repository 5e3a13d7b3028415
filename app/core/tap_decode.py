"""Turns one proxied HTTP exchange into a Capture: which endpoint, which tensors went in and came
out, and how it ended. Knows the three JSON protocols: Open Inference (v2), TorchServe and TF
Serving. Thread: the tap's decoder thread; pure functions otherwise.

A body that is not JSON, is too large, or holds non-numeric data is kept as raw bytes (a uint8
tensor named ``request_body``/``response_body``), so nothing the client sent is lost.
"""

from __future__ import annotations

import json
import re
import uuid
import zlib
from dataclasses import dataclass

import numpy as np

from app.core.domain import Capture, CaptureStatus, Metric, Sample, TensorBlob
from probes.http_common import BadResponse
from probes.http_model import predict  # the same rule the model-server probes use
from probes.torchserve import decode_json_answer

V2_DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}
_V2 = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")
_TORCHSERVE = re.compile(r"^/predictions/(?P<name>[^/]+)(?:/(?P<version>[^/]+))?$")
_TFSERVING = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/[^/:]+)?:predict$")
_ERROR_SNIPPET = 200


@dataclass(frozen=True, slots=True)
class Exchange:
    """What the proxy saw of one request; bodies are cut at the tap's record limit."""

    ts_ns: int
    method: str
    path: str
    request_body: bytes
    request_truncated: bool
    status: int | None  # None: no answer from upstream
    response_body: bytes
    response_truncated: bool
    latency_ms: float
    error: str | None = None
    timed_out: bool = False
    request_id: str | None = None  # from an X-Request-Id header, when the client sent one


def decode_content(body: bytes, encoding: bytes | None, limit: int
                   ) -> tuple[bytes, bool] | None:
    """``body`` with its Content-Encoding (gzip, deflate, identity, in any sequence) undone:
    at most ``limit`` bytes of it, and whether there was more. None when it cannot be read
    (another coding, such as br; or corrupt data): then nothing of it should be recorded,
    since a credential inside it could not be masked.

    Bounded: inflating stops at ``limit``, so a small body that expands to gigabytes (a zip
    bomb) costs no more than a body of ``limit`` bytes."""
    codings = [c.strip().lower() for c in (encoding or b"").split(b",")]
    codings = [c for c in codings if c and c != b"identity"]
    more = False
    for coding in reversed(codings):  # applied in the order listed, so undone backwards
        if coding in (b"gzip", b"x-gzip"):
            tries = (16 + zlib.MAX_WBITS,)
        elif coding == b"deflate":  # a zlib stream, as specified, or the bare deflate some send
            tries = (zlib.MAX_WBITS, -zlib.MAX_WBITS)
        else:
            return None
        for wbits in tries:
            inflate = zlib.decompressobj(wbits)
            try:
                out = inflate.decompress(body, limit + 1)
            except zlib.error:
                continue
            more = more or len(out) > limit or bool(inflate.unconsumed_tail)
            body = out[:limit]
            break
        else:
            return None
    return body, more


def route(method: str, path: str, upstream: str) -> tuple[str, str, str | None] | None:
    """(protocol, endpoint URI, model version) for an inference call; None for anything else.

    ``upstream`` is ``host:port``. The endpoint URI is the one a probe of the same model would
    use, so tapped traffic and active probing of one model land on one endpoint.
    """
    if method != "POST":
        return None
    path = path.split("?", 1)[0]
    if m := _V2.match(path):
        version = m["version"]
        suffix = f"/versions/{version}" if version else ""
        return "v2", f"v2+http://{upstream}/models/{m['name']}{suffix}", version
    if m := _TORCHSERVE.match(path):
        return "torchserve", f"torchserve+http://{upstream}/{m['name']}", m["version"]
    if m := _TFSERVING.match(path):
        return "tfserving", f"tfserving+http://{upstream}/{m['name']}", m["version"]
    return None


def _numeric(name: str, data: object, dtype: type | None = None,
             shape: list | None = None) -> TensorBlob | None:
    try:
        array = np.asarray(data, dtype=dtype)
        if array.dtype.kind not in "biuf":
            return None
        if shape is not None:
            array = array.reshape([int(d) for d in shape])
    except (ValueError, TypeError, OverflowError):
        return None
    return TensorBlob.from_array(name, array)


def _v2_tensors(entries: object) -> tuple[TensorBlob, ...] | None:
    if not isinstance(entries, list):
        return None
    out = []
    for e in entries:
        if not isinstance(e, dict):
            return None
        dtype = V2_DTYPES.get(str(e.get("datatype", "")).upper())
        blob = _numeric(str(e.get("name", "")), e.get("data"), dtype, e.get("shape"))
        if dtype is None or blob is None:
            return None  # BYTES or malformed: keep the raw body instead
        out.append(blob)
    return tuple(out)


def _named(doc: object, keys: tuple[str, ...]) -> tuple[TensorBlob, ...] | None:
    """TorchServe / TF Serving bodies: a bare array, {key: array}, or {key: {name: array}}."""
    if isinstance(doc, dict):
        for key in keys:
            if key in doc:
                value = doc[key]
                if isinstance(value, dict):
                    blobs = [_numeric(str(k), v) for k, v in value.items()]
                    return None if any(b is None for b in blobs) else tuple(blobs)  # type: ignore[misc]
                blob = _numeric(key, value)
                return None if blob is None else (blob,)
        return None
    blob = _numeric(keys[0], doc)
    return None if blob is None else (blob,)


@dataclass(frozen=True, slots=True)
class _Read:
    """One body as read: its tensors (the raw bytes when it could not be read), the JSON
    object when it was one, and the class an answer named itself (TorchServe), if any."""

    tensors: tuple[TensorBlob, ...]
    doc: dict | None = None
    named: tuple[str, float | None] | None = None  # (class, confidence)


def _decode(protocol: str, body: bytes, side: str, truncated: bool) -> _Read:
    raw = (TensorBlob.from_array(f"{side}_body", np.frombuffer(body, np.uint8)),) if body else ()
    if truncated or not body:
        return _Read(raw)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # the last: [[[[…]]]]
        return _Read(raw)
    obj = doc if isinstance(doc, dict) else None
    named = None
    if protocol == "v2":
        tensors = _v2_tensors(doc.get("inputs" if side == "request" else "outputs")
                              if isinstance(doc, dict) else None)
    elif protocol == "tfserving":
        keys = ("instances", "inputs") if side == "request" else ("predictions", "outputs")
        tensors = _named(doc, keys)
    elif side == "response":
        tensors, named = _torchserve_answer(doc)
    else:
        tensors = _named(doc, ("data", "instances"))
    return _Read(raw if tensors is None else tensors, obj, named)


def _torchserve_answer(doc: object) -> tuple[tuple[TensorBlob, ...] | None,
                                             tuple[str, float | None] | None]:
    """A TorchServe answer read as the torchserve+http probe reads it: scores, a {class:
    probability} object or a label, wrapped or not; the class when the answer names it."""
    try:
        answer = decode_json_answer(doc)
    except BadResponse:
        return None, None
    tensors = tuple(TensorBlob.from_array(n, np.asarray(a)) for n, a in answer.outputs.items())
    named = (answer.prediction, answer.confidence) if answer.prediction is not None else None
    return tensors or None, named


def to_capture(x: Exchange, upstream: str) -> tuple[Capture, list[Sample]] | None:
    """The capture and samples for one exchange, or None when it was not an inference call."""
    routed = route(x.method, x.path, upstream)
    if routed is None:
        return None
    protocol, endpoint, version = routed
    request = _decode(protocol, x.request_body, "request", x.request_truncated)
    inputs, req_doc = request.tensors, request.doc
    answered = x.status is not None
    answer = (_decode(protocol, x.response_body, "response", x.response_truncated)
              if answered else _Read(()))
    outputs, resp_doc = answer.tensors, answer.doc
    request_id = x.request_id
    if request_id is None and protocol == "v2":
        request_id = next((str(d["id"]) for d in (req_doc, resp_doc)
                           if d and d.get("id") is not None), None)
    if protocol == "v2" and resp_doc and resp_doc.get("model_version"):
        version = str(resp_doc["model_version"])
    prediction = confidence = None
    error = x.error
    if x.timed_out:
        status = CaptureStatus.TIMEOUT
    elif not answered:
        status = CaptureStatus.ERROR
    elif x.status is not None and x.status >= 400:
        status = CaptureStatus.ERROR
        snippet = x.response_body[:_ERROR_SNIPPET].decode("utf-8", "replace").strip()
        error = f"HTTP {x.status}: {snippet}" if snippet else f"HTTP {x.status}"
    elif any(t.dtype[1] == "f" and not np.isfinite(t.to_array()).all() for t in outputs
             if not t.name.endswith("_body")):
        status = CaptureStatus.NON_FINITE
    else:
        status = CaptureStatus.OK
        first = next((t for t in outputs if not t.name.endswith("_body")), None)
        if answer.named is not None:
            prediction, confidence = answer.named
        elif first is not None and first.shape:
            # Scores (argmax, and a confidence when they are probabilities) or, as MLServer's
            # scikit-learn runtime answers by default, the class itself (with the confidence
            # of the scores after it, when the answer holds them too).
            prediction, confidence = predict({t.name: t.to_array() for t in outputs
                                              if not t.name.endswith("_body") and t.shape})
    capture = Capture(
        endpoint=endpoint, ts_ns=x.ts_ns, latency_ms=x.latency_ms, status=status,
        inputs=inputs, outputs=outputs, request_id=request_id or uuid.uuid4().hex,
        error=error, prediction=prediction, confidence=confidence, model_version=version,
        truncated=x.request_truncated or x.response_truncated)
    samples = [Sample(endpoint, x.ts_ns, Metric.LATENCY_MS, x.latency_ms)]
    if capture.failed:
        samples.append(Sample(endpoint, x.ts_ns, Metric.FAILURE, 1.0))
    return capture, samples
