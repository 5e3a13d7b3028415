"""Probes TensorFlow Serving's REST API: ``tfserving+http://HOST:8501/NAME[/versions/V]``.

Health is the model status (``/v1/models/NAME``: some version AVAILABLE), inputs come from
``/metadata`` (the ``?signature=`` signature, default ``serving_default``), and each request is
one instance in row format to ``/v1/models/NAME:predict``. A payload overrides generated inputs
and is required when the signature cannot be read. Thread: the probe's own.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from app.core.bus import Bus
from app.core.domain import EndpointUri
from probes.base import ProbeError, ProbeOptions, register
from probes.http_common import BadResponse, one_line
from probes.http_model import Decoded, RemoteModelProbe, RemoteRequest, require_payload

DTYPES: dict[str, np.dtype] = {
    "DT_FLOAT": np.dtype(np.float32), "DT_DOUBLE": np.dtype(np.float64),
    "DT_HALF": np.dtype(np.float16), "DT_INT8": np.dtype(np.int8),
    "DT_INT16": np.dtype(np.int16), "DT_INT32": np.dtype(np.int32),
    "DT_INT64": np.dtype(np.int64), "DT_UINT8": np.dtype(np.uint8),
    "DT_BOOL": np.dtype(np.bool_),
}
GENERATED_ROWS = 64


def _shape(spec: dict[str, Any]) -> tuple[int, ...]:
    dims = (spec.get("tensor_shape") or {}).get("dim") or []
    # -1 (any) dims: the first is the batch (one instance per request), any other is 1.
    return tuple(max(1, int(d.get("size", 1))) for d in dims) or (1,)


def _array(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise BadResponse(f"answer is not a valid tensor: output '{name}' is ragged or "
                          "nested too deep") from None
    if array.dtype.kind not in "biufU":
        raise BadResponse(f"output '{name}' is not numbers or text")
    return array[np.newaxis, ...] if array.ndim <= 1 else array


@register("tfserving+http")
class TfServingProbe(RemoteModelProbe):
    example = "tfserving+http://HOST:8501/NAME[/versions/V]"
    params = RemoteModelProbe.params | {"signature"}

    def __init__(self, uri: EndpointUri, bus: Bus, options: ProbeOptions) -> None:
        self.signature = uri.param("signature") or "serving_default"
        self.inputs_declared: dict[str, dict[str, Any]] = {}
        super().__init__(uri, bus, options)

    def parse_path(self, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["v1", "models"]:
            parts = parts[2:]
        if len(parts) == 1:
            self.model, self.path_version = parts[0], None
        elif len(parts) == 3 and parts[1] == "versions":
            self.model, self.path_version = parts[0], parts[2]
        else:
            raise ProbeError(f"'{self.uri}' does not name a model; expected {self.example}")
        self.model_path = f"/v1/models/{self.model}" + (
            f"/versions/{self.path_version}" if self.path_version else "")

    def check_ready(self, retries: int) -> None:
        status = self.client.get_json(self.model_path, retries=retries)
        versions = status.get("model_version_status") if isinstance(status, dict) else None
        if not isinstance(versions, list):
            raise BadResponse(f"model status from {self.base_url} has no model_version_status")
        available = [v for v in versions if isinstance(v, dict) and v.get("state") == "AVAILABLE"]
        if not available:
            states = ", ".join(f"{v.get('version')}: {v.get('state')}" for v in versions
                               if isinstance(v, dict)) or "none"
            raise BadResponse(f"model '{self.model}' has no AVAILABLE version ({states})")
        if not self.uri.param("version"):
            self.model_version = str(max(available, key=lambda v: int(v.get("version", 0)))
                                     .get("version"))

    def build_requests(self, retries: int) -> list[RemoteRequest]:
        try:
            meta = self.client.get_json(f"{self.model_path}/metadata", retries=retries)
            defs = meta["metadata"]["signature_def"]["signature_def"]
            self.inputs_declared = dict(defs[self.signature]["inputs"])
        except BadResponse:
            if self.payload is None:
                raise
        except (KeyError, TypeError, ValueError, AttributeError):
            if self.payload is None:
                raise require_payload(self.endpoint, f"the metadata has no signature "
                                      f"'{self.signature}' with inputs") from None
        if self.payload is None:
            return self._generated()
        return self._from_payload()

    def _from_payload(self) -> list[RemoteRequest]:
        p = self.payload
        assert p is not None
        requests = []
        if len(self.inputs_declared) > 1:
            missing = sorted(set(self.inputs_declared) - set(p.columns))
            if missing:
                raise ProbeError(f"signature has inputs {', '.join(self.inputs_declared)}; "
                                 f"payload columns lack {', '.join(missing)}")
        col = {c: k for k, c in enumerate(p.columns)}
        for r in range(len(p)):
            if len(self.inputs_declared) > 1:
                feed = {name: np.asarray(p.features[r, col[name]]).reshape(_shape(spec)).astype(
                    DTYPES.get(spec.get("dtype", ""), np.dtype(np.float64)))
                    for name, spec in self.inputs_declared.items()}
            else:
                name, spec = next(iter(self.inputs_declared.items()), ("input", {}))
                want = _shape(spec) if spec else (1, p.features[r].size)
                if math.prod(want) != p.features[r].size:
                    raise ProbeError(f"payload rows have {p.features[r].size} values but input "
                                     f"'{name}' wants shape {want}")
                dtype = DTYPES.get(spec.get("dtype", ""), p.features.dtype)
                feed = {name: p.features[r].reshape(want).astype(dtype)}
            requests.append(self._request(feed, (p.labels[r] or None) if p.labels else None,
                                          p.ids[r] if p.ids else None))
        return requests

    def _generated(self) -> list[RemoteRequest]:
        rng = np.random.default_rng(self.options.seed)
        requests = []
        for _ in range(GENERATED_ROWS):
            feed = {}
            for name, spec in self.inputs_declared.items():
                dtype = DTYPES.get(spec.get("dtype", ""))
                if dtype is None:
                    raise require_payload(self.endpoint, f"input '{name}' has dtype "
                                          f"{spec.get('dtype')}")
                shape = _shape(spec)
                feed[name] = (rng.standard_normal(shape).astype(dtype) if dtype.kind == "f"
                              else rng.integers(0, 2, shape).astype(dtype))
            requests.append(self._request(feed, None, None))
        return requests

    def _request(self, feed: dict[str, np.ndarray], label: str | None,
                 rid: str | None) -> RemoteRequest:
        # Row format: one instance, without the batch dimension the signature declares.
        if len(feed) == 1:
            instance: Any = next(iter(feed.values()))[0].tolist()
        else:
            instance = {k: v[0].tolist() for k, v in feed.items()}
        doc: dict[str, Any] = {"instances": [instance]}
        if self.uri.param("signature"):
            doc["signature_name"] = self.signature
        return RemoteRequest(feed, json.dumps(doc).encode(), label, rid)

    def infer_path(self) -> str:
        return f"{self.model_path}:predict"

    def decode(self, doc: object) -> Decoded:
        if not isinstance(doc, dict):
            raise BadResponse("predict answer is not a JSON object")
        if doc.get("error"):
            raise BadResponse(f"server error: {one_line(str(doc['error']))}")
        if "predictions" in doc:
            rows = doc["predictions"]
            if not isinstance(rows, list) or not rows:
                raise BadResponse("predict answer has empty predictions")
            first = rows[0]
            if isinstance(first, dict):
                return Decoded({k: _array(v, k) for k, v in first.items()})
            return Decoded({"predictions": _array(first, "predictions")})
        if "outputs" in doc:
            out = doc["outputs"]
            if isinstance(out, dict):
                return Decoded({k: _array(v, k) for k, v in out.items()})
            return Decoded({"outputs": _array(out, "outputs")})
        raise BadResponse(f"predict answer has neither predictions nor outputs: "
                          f"{one_line(json.dumps(doc)[:120])}")

    def info(self) -> dict[str, str]:
        return {**super().info(), "model": self.model, "signature": self.signature}
