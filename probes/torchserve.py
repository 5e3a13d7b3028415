"""Probes TorchServe's own inference API: ``torchserve+http://HOST:8080/NAME[/VERSION]``.

Health is ``/ping``; each request is a JSON POST to ``/predictions/NAME[/VERSION]``. TorchServe
declares no signature, so a payload is required. Each row is sent as ``{"data": [values]}``;
``?field=NAME`` renames the key and ``?field=`` (empty) sends the bare list. The answer may be
numbers (scores), a ``{class: probability}`` object, a label, or any of those under
``predictions``/``outputs``. Its metrics port (8082) is probed with ``prom+http://HOST:8082/metrics``.
Thread: the probe's own (see probes.http_model).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from app.core.bus import Bus
from app.core.domain import EndpointUri
from probes.base import ProbeError, ProbeOptions, register
from probes.http_common import BadResponse, one_line
from probes.http_model import Decoded, RemoteModelProbe, RemoteRequest, require_payload

_WRAPPERS = ("predictions", "outputs", "output", "result", "data")


def decode_json_answer(doc: Any, depth: int = 0) -> Decoded:
    """Read the usual shapes of a free-form JSON prediction into outputs and a class."""
    if depth > 3:
        raise BadResponse("answer nests too deep to read as a prediction")
    if isinstance(doc, dict):
        for key in _WRAPPERS:
            if key in doc:
                return decode_json_answer(doc[key], depth + 1)
        if doc and all(isinstance(v, int | float) and not isinstance(v, bool)
                       for v in doc.values()):
            # {class name: probability}, as TorchServe's classifier handlers answer
            labels = list(doc)
            try:
                scores = np.asarray([float(doc[k]) for k in labels], dtype=np.float64)
            except OverflowError:  # an integer past float range
                raise BadResponse("answer holds a score too large for a number") from None
            top = int(np.argmax(scores))
            confident = bool(((scores >= 0.0) & (scores <= 1.0)).all())
            return Decoded({"scores": scores[np.newaxis, :]}, prediction=str(labels[top]),
                           confidence=float(scores[top]) if confident else None)
        raise BadResponse(f"answer is not scores or a label: {one_line(json.dumps(doc)[:120])}")
    if isinstance(doc, list):
        if len(doc) == 1 and isinstance(doc[0], dict):
            return decode_json_answer(doc[0], depth + 1)  # a batch of one
        try:
            array = np.asarray(doc, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            if len(doc) == 1 and isinstance(doc[0], str):
                return Decoded(prediction=doc[0])
            raise BadResponse(f"answer is a list but not of numbers: "
                              f"{one_line(json.dumps(doc)[:120])}") from None
        if array.ndim == 1:
            array = array[np.newaxis, :]
        return Decoded({"output": array})
    if isinstance(doc, bool):
        return Decoded(prediction=str(doc).lower())
    if isinstance(doc, int | float):
        try:
            return Decoded({"output": np.asarray([[doc]], dtype=np.float64)})
        except OverflowError:
            raise BadResponse("answer is a number too large to read") from None
    if isinstance(doc, str):
        return Decoded(prediction=doc)
    raise BadResponse("answer is empty (null)")


@register("torchserve+http")
class TorchServeProbe(RemoteModelProbe):
    example = "torchserve+http://HOST:8080/NAME[/VERSION]"
    params = RemoteModelProbe.params | {"field"}

    def __init__(self, uri: EndpointUri, bus: Bus, options: ProbeOptions) -> None:
        self.field = uri.param("field", "data")
        super().__init__(uri, bus, options)

    def parse_path(self, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["predictions"]:
            parts = parts[1:]
        if len(parts) not in (1, 2):
            raise ProbeError(f"'{self.uri}' does not name a model; expected {self.example}")
        self.model = parts[0]
        self.path_version = parts[1] if len(parts) == 2 else None
        if self.path_version and not self.uri.param("version"):
            self.model_version = self.path_version

    def check_ready(self, retries: int) -> None:
        ping = self.client.get("/ping", retries=retries)
        if ping.status_code >= 400:
            raise BadResponse(f"TorchServe at {self.base_url} is unhealthy: HTTP "
                              f"{ping.status_code}: {ping.error_text()}", ping.status_code)

    def build_requests(self, retries: int) -> list[RemoteRequest]:
        p = self.payload
        if p is None:
            raise require_payload(self.endpoint, "TorchServe declares no input signature")
        requests = []
        for r in range(len(p)):
            row = p.features[r]
            body = row.tolist() if not self.field else {self.field: row.tolist()}
            requests.append(RemoteRequest(
                {"data": row[np.newaxis, ...]}, json.dumps(body).encode(),
                (p.labels[r] or None) if p.labels else None, p.ids[r] if p.ids else None))
        return requests

    def infer_path(self) -> str:
        version = f"/{self.path_version}" if self.path_version else ""
        return f"/predictions/{self.model}{version}"

    def decode(self, doc: object) -> Decoded:
        return decode_json_answer(doc)

    def info(self) -> dict[str, str]:
        return {**super().info(), "model": self.model}
