"""Probes a server speaking the Open Inference Protocol (KServe v2) over REST:
``v2+http://HOST:PORT/models/NAME[/versions/V]`` — Triton, MLServer, KServe, TorchServe's v2 mode.

Health (``/v2/health/live``, the model's ``/ready``), metadata (input names, shapes, datatypes)
and JSON ``/infer``. When the metadata declares no inputs (MLServer's scikit-learn runtime), the
payload decides them: one tensor ``?input=NAME`` (default ``input-0``) of the payload's rows.
URI parameters beyond the common ones: ``payload``, ``input``, ``outputs`` (comma-separated
output names to ask for, e.g. ``predict_proba``), ``rate``, ``capture``, ``slo_ms``,
``min_confidence``, ``timeout_s``, ``connect_timeout_s``, ``max_mb``, ``token_env``.
Thread: the probe's own (see probes.http_model).
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

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
_NAMES = {v: k for k, v in DATATYPES.items()}
GENERATED_ROWS = 64


def datatype_of(dtype: np.dtype) -> str:
    name = _NAMES.get(np.dtype(dtype))
    if name is None:
        raise ProbeError(f"payload dtype {dtype} has no Open Inference Protocol datatype")
    return name


def concrete_shape(shape: list[Any]) -> tuple[int, ...]:
    # -1 (dynamic) dims: the first is the batch (one request = one row), any other is 1.
    return tuple(int(d) if int(d) > 0 else 1 for d in shape)


def tensor_from_json(doc: Any) -> tuple[str, np.ndarray]:
    """One output tensor of an infer answer, checked against its declared shape; BadResponse
    ("answer is not a valid tensor: ...") for anything malformed."""
    if not isinstance(doc, dict) or "name" not in doc or "data" not in doc:
        raise BadResponse(f"an output is not a tensor (name, shape, datatype, data): "
                          f"{one_line(json.dumps(doc)[:120])}")
    name, datatype = str(doc["name"]), str(doc.get("datatype", ""))
    raw_shape = doc.get("shape") or []
    if not isinstance(raw_shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw_shape):
        raise BadResponse(f"answer is not a valid tensor: output '{name}' has shape "
                          f"{one_line(json.dumps(raw_shape)[:60])}, not a list of sizes")
    shape: list[int] = raw_shape
    try:
        if datatype == "BYTES":
            array = np.asarray(doc["data"], dtype=str)
        elif datatype in DATATYPES:
            array = np.asarray(doc["data"], dtype=DATATYPES[datatype])
        else:
            raise BadResponse(f"answer is not a valid tensor: output '{name}' has unknown "
                              f"datatype '{datatype}'")
    except (TypeError, ValueError, OverflowError):
        # Ragged or nested past numpy's limit (ValueError), not numbers (TypeError), or
        # numbers that do not fit the datatype (OverflowError: 2**70 as INT64).
        raise BadResponse(f"answer is not a valid tensor: output '{name}' holds data that "
                          f"is not {datatype}") from None
    array = np.atleast_1d(array)  # a bare number for data: one value, not a 0-d tensor
    if shape and array.size == math.prod(shape):
        array = array.reshape(shape)
    elif shape:
        raise BadResponse(f"answer is not a valid tensor: output '{name}' declares shape "
                          f"{shape} but holds {array.size} values")
    return name, array


@register("v2+http")
class V2Probe(RemoteModelProbe):
    example = "v2+http://HOST:PORT/models/NAME[/versions/V]"
    params = RemoteModelProbe.params | {"input", "outputs"}

    def __init__(self, uri: EndpointUri, bus: Bus, options: ProbeOptions) -> None:
        self.input_name = uri.param("input") or "input-0"
        wanted = uri.param("outputs")
        self.output_names = [n.strip() for n in wanted.split(",") if n.strip()] if wanted else []
        self.inputs_declared: list[dict[str, Any]] = []
        super().__init__(uri, bus, options)

    def parse_path(self, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["v2"]:
            parts = parts[1:]
        if len(parts) == 2 and parts[0] == "models":
            self.model, version = parts[1], None
        elif len(parts) == 4 and parts[0] == "models" and parts[2] == "versions":
            self.model, version = parts[1], parts[3]
        else:
            raise ProbeError(f"'{self.uri}' does not name a model; expected {self.example}")
        self.path_version = version
        self.model_path = f"/v2/models/{self.model}" + (f"/versions/{version}" if version else "")

    def check_ready(self, retries: int) -> None:
        live = self.client.get("/v2/health/live", retries=retries)
        if live.status_code >= 400:
            raise BadResponse(f"server at {self.base_url} is not live: HTTP {live.status_code}",
                              live.status_code)
        ready = self.client.get(f"{self.model_path}/ready", retries=retries)
        if ready.status_code == 404:
            raise BadResponse(f"server at {self.base_url} has no model '{self.model}'"
                              f"{' version ' + self.path_version if self.path_version else ''}"
                              f" ({ready.error_text()})", 404)
        if ready.status_code >= 400:
            raise BadResponse(f"model '{self.model}' is not ready: HTTP {ready.status_code}: "
                              f"{ready.error_text()}", ready.status_code)

    def build_requests(self, retries: int) -> list[RemoteRequest]:
        meta = self.client.get_json(self.model_path, retries=retries)
        if not isinstance(meta, dict):
            raise BadResponse(f"model metadata from {self.base_url} is not a JSON object")
        declared = meta.get("inputs") or []
        self.inputs_declared = [i for i in declared if isinstance(i, dict) and "name" in i]
        if not self.model_version and meta.get("versions"):
            self.model_version = str(meta["versions"][-1])
        if not self.inputs_declared:
            if self.payload is None:
                raise require_payload(self.endpoint, f"model '{self.model}' declares no inputs "
                                      "in its metadata")
            return self._from_payload_alone()
        if self.payload is None:
            return self._generated()
        return self._from_payload_and_metadata()

    def _from_payload_alone(self) -> list[RemoteRequest]:
        # The payload decides: one tensor of one row each, its dtype as the file holds it.
        p = self.payload
        assert p is not None
        return [self._request({self.input_name: p.features[r][np.newaxis, ...]}, r)
                for r in range(len(p))]

    def _from_payload_and_metadata(self) -> list[RemoteRequest]:
        p = self.payload
        assert p is not None
        inputs = self.inputs_declared
        if len(inputs) == 1:
            spec = inputs[0]
            dtype = DATATYPES.get(spec.get("datatype", "FP32"), np.dtype(np.float32))
            want = concrete_shape(spec.get("shape") or [-1, p.features[0].size])
            per_row = math.prod(want[1:]) if len(want) > 1 else 1
            if p.features[0].size != per_row:
                raise ProbeError(f"payload rows have {p.features[0].size} values but input "
                                 f"'{spec['name']}' wants {per_row} per row "
                                 f"(shape {spec.get('shape')})")
            return [self._request({spec["name"]: p.features[r].reshape(want).astype(dtype)}, r)
                    for r in range(len(p))]
        names = [i["name"] for i in inputs]
        missing = sorted(set(names) - set(p.columns))
        if missing:
            raise ProbeError(f"model has inputs {', '.join(names)}; payload columns lack "
                             f"{', '.join(missing)}")
        col = {c: k for k, c in enumerate(p.columns)}
        return [self._request({
            i["name"]: np.asarray(p.features[r, col[i["name"]]]).reshape(
                concrete_shape(i.get("shape") or [1, 1])).astype(
                DATATYPES.get(i.get("datatype", "FP32"), np.dtype(np.float32)))
            for i in inputs}, r) for r in range(len(p))]

    def _generated(self) -> list[RemoteRequest]:
        rng = np.random.default_rng(self.options.seed)
        requests = []
        for _ in range(GENERATED_ROWS):
            feed = {}
            for spec in self.inputs_declared:
                datatype = spec.get("datatype", "")
                if datatype not in DATATYPES:
                    raise require_payload(self.endpoint, f"input '{spec['name']}' has "
                                          f"datatype {datatype or '(none)'}")
                dtype, shape = DATATYPES[datatype], concrete_shape(spec.get("shape") or [1])
                feed[spec["name"]] = (rng.standard_normal(shape).astype(dtype)
                                      if dtype.kind == "f" else
                                      rng.integers(0, 2, shape).astype(dtype))
            requests.append(self._request(feed, None))
        return requests

    def _request(self, feed: dict[str, np.ndarray], row: int | None) -> RemoteRequest:
        p = self.payload
        label = p.labels[row] or None if p is not None and p.labels and row is not None else None
        rid = p.ids[row] if p is not None and p.ids and row is not None else None
        doc: dict[str, Any] = {"inputs": [
            {"name": name, "shape": list(a.shape), "datatype": datatype_of(a.dtype),
             "data": a.reshape(-1).tolist()} for name, a in feed.items()]}
        if rid is not None:
            doc["id"] = rid
        if self.output_names:
            doc["outputs"] = [{"name": n} for n in self.output_names]
        # JSON has no NaN; rows that hold one are sent with Python's bare NaN token, as a client
        # in production would, and a strict server's refusal is recorded as that row's failure.
        body = json.dumps(doc, separators=(",", ":")).encode()
        return RemoteRequest(feed, body, label, rid)

    def infer_path(self) -> str:
        return f"{self.model_path}/infer"

    def decode(self, doc: object) -> Decoded:
        if not isinstance(doc, dict):
            raise BadResponse("infer answer is not a JSON object")
        if doc.get("error"):
            raise BadResponse(f"server error: {one_line(str(doc['error']))}")
        raw = doc.get("outputs")
        if not isinstance(raw, list) or not raw:
            raise BadResponse(f"infer answer has no outputs: {one_line(json.dumps(doc)[:120])}")
        outputs = dict(tensor_from_json(t) for t in raw)
        version = doc.get("model_version")
        return Decoded(outputs, str(version) if version else None,
                       request_id=str(doc["id"]) if doc.get("id") else None)

    def info(self) -> dict[str, str]:
        facts = super().info()
        facts["model"] = self.model
        declared = ", ".join(i["name"] for i in self.inputs_declared)
        if declared:
            facts["inputs"] = declared
        elif self.payload is not None:
            facts["inputs"] = f"{self.input_name} (from payload)"
        else:  # the server has not been reached yet: nothing is known of them
            facts["inputs"] = "not known yet (read from the server's metadata once it answers)"
        return facts


@register("v2+https")
class V2HttpsProbe(V2Probe):
    example = "v2+https://HOST:PORT/models/NAME[/versions/V]"
