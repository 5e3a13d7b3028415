"""What a replay runs captured inputs on: a local ONNX session (any provider) or a remote
Open Inference Protocol (v2) endpoint, each taking a whole batch of rows per call.
Thread: a target belongs to the thread that runs the replay.
"""

from __future__ import annotations

import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from app.core.classes import class_names
from app.core.domain import EndpointUri, UriError
from probes.base import ProbeError, params_of
from probes.http_common import (
    HTTP_PARAMS,
    BadResponse,
    CredentialsRefused,
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


class Cancelled(BaseException):
    """The replay was cancelled while a target's call was under way. A BaseException, so
    that no per-row fallback or error handler along the way takes it for a failed row."""


class Target(ABC):
    """One model version that takes stacked inputs (first dim = rows) and answers per row."""

    name: str
    location: str
    warmed: bool = False  # set by the replay after one untimed call
    # Set by the replay while it runs: a call that waits on the network checks it, and ends
    # with Cancelled instead of waiting out the server's silence.
    cancelled: Callable[[], bool] | None = None
    class_names: list[str] = []  # noqa: RUF012  (read only: the model's own, where it names them)
    # Calls that cost nothing but time to repeat (a local session): a small replay times each
    # batch as the median of a few calls instead of one (``run_version``).
    cheap_to_repeat: bool = False

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
    """One line, all of it: onnxruntime puts the useful part (which dimension, what it got
    and expected) on the lines after its first."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


class LocalOnnxTarget(Target):
    """An onnxruntime session; ``provider`` as in ``onnx:`` URIs (cpu, cuda, ...)."""

    cheap_to_repeat = True

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
        self.class_names = class_names(meta.custom_metadata_map)
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
            declared = self._ranks[n]
            if a.ndim == len(declared) - 1:
                a = a[np.newaxis, ...]  # captured without its batch dimension
            if declared and not _fits(a.shape[1:], declared[1:]):
                # Said once for the whole version, rather than once per row after every
                # batch, then every row alone, has failed on it.
                raise ReplayError(
                    f"{self.name} takes {n} as [{', '.join(map(_dim, declared))}]; the "
                    f"captures hold [{', '.join(map(str, a.shape[1:]))}] per row")
            if want is not None and a.dtype != want:
                a = _cast(a, want, self.name, n)
            out[n] = a
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


def _cast(a: np.ndarray, want: np.dtype, version: str, name: str) -> np.ndarray:
    """``a`` as ``want``; floats go to an integer input only when they are whole numbers in
    its range (astype would cut 2.7 to 2, and turn NaN into nonsense)."""
    if np.dtype(want).kind in "iu" and a.dtype.kind == "f" and a.size:
        info = np.iinfo(want)
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(a) & (np.trunc(a) == a) & (a >= info.min) & (a <= info.max)
        if not whole.all():
            bad = a[~whole].flat[0]
            raise ReplayError(f"{version} takes {name} as {np.dtype(want)}; the captures hold "
                              f"values that are not whole numbers in its range (e.g. {bad:g})")
    return a.astype(want)


def _dim(d: object) -> str:
    return str(d) if isinstance(d, int) and d > 0 else (str(d) if d else "?")


def _fits(shape: tuple[int, ...], declared: tuple) -> bool:
    """Whether a row of ``shape`` fits the declared dims after the batch one (a named or
    unknown dim takes any size)."""
    return len(shape) == len(declared) and all(
        not (isinstance(d, int) and d > 0) or d == s for s, d in zip(shape, declared, strict=True))


# Answers from the door, not the model: not allowed in, no such model, unavailable, and a
# proxy's or gateway's own (throttled, bad gateway, gateway timeout). None says anything of
# how the model would answer. A 500 can be the model failing on the input: an error.
_NOT_ASKED = frozenset({401, 403, 404, 429, 502, 503, 504})


class _RemoteTarget(Target):
    """A model server reached over HTTP with JSON bodies: one POST per batch."""

    example = ""

    def __init__(self, uri: str, name: str | None = None) -> None:
        try:
            parsed = EndpointUri.parse(uri)
            base_url, path = split_http_target(parsed, self.example)
            settings = HttpSettings.from_uri(parsed)
        except (UriError, ProbeError) as exc:
            raise ReplayError(str(exc)) from None
        # A key no probe of its kind reads would be stored and shown with the version, and
        # never sent: a credential put there by mistake (?access_token=) would leak and not
        # even work. The live probe's own keys are taken, so a watched URI can be replayed.
        known = HTTP_PARAMS | params_of(parsed.scheme)
        if unknown := sorted({k for k, _ in parsed.params} - known):
            raise ReplayError(f"'{unknown[0]}' is not a parameter of a {parsed.scheme}: "
                              f"version; it takes {', '.join(sorted(known))} (a token "
                              "goes in the environment variable ?token_env= names)")
        self.location = str(parsed)
        self.path, model, version = self.parse_path(uri, [p for p in path.split("/") if p])
        self.name = name or (model + (f"@{version}" if version else ""))
        self.model_version = version
        self.client = HttpClient(base_url, settings)

    @abstractmethod
    def parse_path(self, uri: str, parts: list[str]) -> tuple[str, str, str | None]:
        """(path to POST to, model name, version or None); ReplayError if not a model."""

    @abstractmethod
    def body(self, feeds: dict[str, np.ndarray]) -> dict[str, Any]: ...

    @abstractmethod
    def outputs(self, body: object) -> list[tuple[str, np.ndarray]]: ...

    def run(self, feeds: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        answer = self._call(json.dumps(self.body(feeds)).encode())
        if answer.status_code in _NOT_ASKED:
            # No such model, no entry, or not serving now: the version was never asked, which
            # says nothing about how it answers this input.
            raise TargetDown(f"HTTP {answer.status_code}: {answer.error_text()}")
        if answer.status_code >= 400:
            raise ReplayError(f"HTTP {answer.status_code}: {answer.error_text()}")
        try:
            return self.outputs(answer.json())
        except BadResponse as exc:
            raise ReplayError(str(exc)) from None

    def _post(self, content: bytes) -> Any:
        try:
            return self.client.request("POST", self.path, content=content)
        except (Unreachable, TimedOut, CredentialsRefused) as exc:
            raise TargetDown(str(exc)) from None  # never asked: says nothing of the model
        except BadResponse as exc:
            raise ReplayError(str(exc)) from None

    def _call(self, content: bytes) -> Any:
        """The POST, on a thread of its own while a replay can be cancelled: a cancel then
        ends the wait within 50 ms, not when a silent server's timeout (10 s by default)
        runs out. The call left behind ends with its timeout, or when ``close`` shuts the
        client; its answer is dropped."""
        cancelled = self.cancelled
        if cancelled is None:
            return self._post(content)
        answer: Future = Future()

        def post() -> None:
            try:
                answer.set_result(self._post(content))
            except BaseException as exc:  # handed to the replay's thread, raised there
                answer.set_exception(exc)

        # A daemon thread, not an executor's: a call left behind must not hold the exit.
        threading.Thread(target=post, name=f"replay-call-{self.name}", daemon=True).start()
        while True:
            try:
                return answer.result(timeout=0.05)
            except TimeoutError:
                if cancelled():
                    raise Cancelled from None

    def close(self) -> None:
        self.client.close()


class RemoteV2Target(_RemoteTarget):
    """``v2+http://HOST:PORT/models/NAME[/versions/V]``: one JSON ``/infer`` per batch."""

    example = "v2+http://HOST:PORT/models/NAME[/versions/V]"

    def parse_path(self, uri: str, parts: list[str]) -> tuple[str, str, str | None]:
        if parts[:1] == ["v2"]:
            parts = parts[1:]
        if len(parts) not in (2, 4) or parts[0] != "models" or (
                len(parts) == 4 and parts[2] != "versions"):
            raise ReplayError(f"'{uri}' does not name a model; expected {self.example}")
        return ("/v2/" + "/".join(parts) + "/infer", parts[1],
                parts[3] if len(parts) == 4 else None)

    def body(self, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        return {"inputs": [{"name": n, "shape": list(a.shape), "datatype": datatype_of(a.dtype),
                            "data": a.reshape(-1).tolist()} for n, a in feeds.items()]}

    def outputs(self, body: object) -> list[tuple[str, np.ndarray]]:
        raw = body.get("outputs") if isinstance(body, dict) else None
        if not isinstance(raw, list) or not raw:
            raise ReplayError("the infer answer has no outputs")
        return [tensor_from_json(t) for t in raw]


class RemoteTfServingTarget(_RemoteTarget):
    """``tfserving+http://HOST:8501/NAME[/versions/V]``: TensorFlow Serving's REST predict, the
    batch as ``instances`` (row format), the answer's ``predictions`` as one output."""

    example = "tfserving+http://HOST:8501/NAME[/versions/V]"

    def parse_path(self, uri: str, parts: list[str]) -> tuple[str, str, str | None]:
        if parts[:2] == ["v1", "models"]:
            parts = parts[2:]
        if len(parts) not in (1, 3) or (len(parts) == 3 and parts[1] != "versions"):
            raise ReplayError(f"'{uri}' does not name a model; expected {self.example}")
        return ("/v1/models/" + "/".join(parts) + ":predict", parts[0],
                parts[2] if len(parts) == 3 else None)

    def body(self, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        if len(feeds) == 1:
            return {"instances": next(iter(feeds.values())).tolist()}
        n = len(next(iter(feeds.values())))
        return {"instances": [{k: v[i].tolist() for k, v in feeds.items()} for i in range(n)]}

    def outputs(self, body: object) -> list[tuple[str, np.ndarray]]:
        rows = body.get("predictions") if isinstance(body, dict) else None
        if not isinstance(rows, list) or not rows:
            raise ReplayError("the predict answer has no predictions")
        if isinstance(rows[0], dict):  # several named outputs: one column each
            return [(k, np.asarray([r[k] for r in rows])) for k in rows[0]]
        try:
            return [("predictions", np.asarray(rows, dtype=np.float64))]
        except (TypeError, ValueError):
            raise ReplayError("the predict answer's rows are not numbers of one shape") from None


def open_target(location: str, *, provider: str = "cpu", name: str | None = None,
                threads: int | None = None) -> Target:
    """A path to an .onnx file, or a ``v2+http(s)://`` endpoint."""
    if location.startswith(("v2+http://", "v2+https://")):
        return RemoteV2Target(location, name)
    if location.startswith(("tfserving+http://", "tfserving+https://")):
        return RemoteTfServingTarget(location, name)
    if location.startswith("onnx:"):
        parsed = EndpointUri.parse(location)
        return LocalOnnxTarget(parsed.target, parsed.param("provider", provider) or provider,
                               name, threads)
    if "://" in location:
        raise ReplayError(f"cannot replay on '{location}': replay targets are ONNX files, "
                          "v2+http(s):// or tfserving+http(s):// endpoints")
    return LocalOnnxTarget(location, provider, name, threads)


def error_text(exc: BaseException) -> str:
    return _error_text(exc)
