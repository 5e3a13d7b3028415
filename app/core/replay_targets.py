"""What a replay runs captured inputs on: a local ONNX session (any provider) or a remote
Open Inference Protocol (v2) endpoint, each taking a whole batch of rows per call.
Thread: a target belongs to the thread that runs the replay.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from app.core.domain import EndpointUri, UriError
from probes.base import ProbeError
from probes.http_common import (
    BadResponse,
    HttpClient,
    HttpSettings,
    TimedOut,
    Unreachable,
    split_http_target,
)
from probes.onnx_local import _ORT_DTYPES, load_session
from probes.v2_http import datatype_of, tensor_from_json

log = logging.getLogger(__name__)


class ReplayError(Exception):
    """A replay that cannot run as asked; the message says what to change."""


class TargetDown(ReplayError):
    """The target cannot be reached at all: every row of the batch failed the same way."""


class Target(ABC):
    """One model version that takes stacked inputs (first dim = rows) and answers per row."""

    name: str
    location: str
    warmed: bool = False  # set by the replay after one untimed call

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        """Outputs as (name, array with one row per input row); raises on failure."""

    def adapt(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Captured tensors as this target's feed (names, dtypes), done once per stacked group
        so ``run_adapted`` can skip it per batch."""
        return feeds

    def run_adapted(self, feeds: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        return self.run(feeds)

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release the session or the connection."""


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class LocalOnnxTarget(Target):
    """An onnxruntime session; ``provider`` as in ``onnx:`` URIs (cpu, cuda, ...)."""

    def __init__(self, path: str | Path, provider: str = "cpu", name: str | None = None,
                 threads: int | None = None) -> None:
        try:
            self.session = load_session(path, provider, threads)
        except ProbeError as exc:
            raise ReplayError(str(exc)) from None
        self.location = str(path)
        self.provider = provider
        meta = self.session.get_modelmeta()
        self.name = name or Path(path).stem
        self.model_version = meta.custom_metadata_map.get("version")
        self._inputs = self.session.get_inputs()
        self._dtypes = {i.name: _ORT_DTYPES.get(i.type) for i in self._inputs}
        self._ranks = {i.name: tuple(i.shape or ()) for i in self._inputs}
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._run = self.session.run

    def feed_for(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Captured tensors as this model's feed: by name, or by position for one input."""
        names = [i.name for i in self._inputs]
        if set(names) <= set(feeds):
            picked = {n: feeds[n] for n in names}
        elif len(names) == 1 and len(feeds) == 1:
            picked = {names[0]: next(iter(feeds.values()))}
        else:
            raise ReplayError(f"{self.name} wants inputs {', '.join(names)}; the capture holds "
                              f"{', '.join(feeds)}")
        out = {}
        for n, a in picked.items():
            want = self._dtypes.get(n)
            if a.ndim == len(self._ranks[n]) - 1:
                a = a[np.newaxis, ...]  # captured without its batch dimension
            out[n] = a if want is None or a.dtype == want else a.astype(want)
        return out

    def run(self, feeds: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        return self.run_adapted(self.feed_for(feeds))

    def adapt(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.feed_for(feeds)

    def run_adapted(self, feeds: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        names = self._outputs
        return list(zip(names, self._run(names, feeds), strict=True))

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


_NOT_ASKED = frozenset({401, 403, 404, 503})


class RemoteV2Target(Target):
    """``v2+http://HOST:PORT/models/NAME[/versions/V]``: one JSON ``/infer`` per batch."""

    example = "v2+http://HOST:PORT/models/NAME[/versions/V]"

    def __init__(self, uri: str, name: str | None = None) -> None:
        try:
            parsed = EndpointUri.parse(uri)
            base_url, path = split_http_target(parsed, self.example)
            settings = HttpSettings.from_uri(parsed)
        except (UriError, ProbeError) as exc:
            raise ReplayError(str(exc)) from None
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["v2"]:
            parts = parts[1:]
        if len(parts) not in (2, 4) or parts[0] != "models" or (
                len(parts) == 4 and parts[2] != "versions"):
            raise ReplayError(f"'{uri}' does not name a model; expected {self.example}")
        self.model_path = "/v2/" + "/".join(parts)
        self.location = str(parsed)
        self.name = name or (parts[1] + (f"@{parts[3]}" if len(parts) == 4 else ""))
        self.client = HttpClient(base_url, settings)

    def run(self, feeds: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        doc: dict[str, Any] = {"inputs": [
            {"name": n, "shape": list(a.shape), "datatype": datatype_of(a.dtype),
             "data": a.reshape(-1).tolist()} for n, a in feeds.items()]}
        try:
            answer = self.client.request("POST", f"{self.model_path}/infer",
                                         content=json.dumps(doc).encode())
        except (Unreachable, TimedOut) as exc:
            raise TargetDown(str(exc)) from None
        except BadResponse as exc:
            raise ReplayError(str(exc)) from None
        if answer.status_code in _NOT_ASKED:
            # No such model, no entry, or not serving now: the version was never asked, which
            # says nothing about how it answers this input.
            raise TargetDown(f"HTTP {answer.status_code}: {answer.error_text()}")
        if answer.status_code >= 400:
            raise ReplayError(f"HTTP {answer.status_code}: {answer.error_text()}")
        body = answer.json()
        raw = body.get("outputs") if isinstance(body, dict) else None
        if not isinstance(raw, list) or not raw:
            raise ReplayError("the infer answer has no outputs")
        try:
            return [tensor_from_json(t) for t in raw]
        except BadResponse as exc:
            raise ReplayError(str(exc)) from None

    def close(self) -> None:
        self.client.close()


def open_target(location: str, *, provider: str = "cpu", name: str | None = None,
                threads: int | None = None) -> Target:
    """A path to an .onnx file, or a ``v2+http(s)://`` endpoint."""
    if location.startswith(("v2+http://", "v2+https://")):
        return RemoteV2Target(location, name)
    if location.startswith("onnx:"):
        parsed = EndpointUri.parse(location)
        return LocalOnnxTarget(parsed.target, parsed.param("provider", provider) or provider,
                               name, threads)
    if "://" in location:
        raise ReplayError(f"cannot replay on '{location}': replay targets are ONNX files or "
                          "v2+http(s):// endpoints")
    return LocalOnnxTarget(location, provider, name, threads)


def error_text(exc: BaseException) -> str:
    return _error_text(exc)
