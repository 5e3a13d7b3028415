"""A contract checked on an edge agent (``agent+http(s)://HOST:PORT``): both ends of the
agent's ``POST /v1/contract``. Thread: the caller's (a check's worker; an agent's handler).

The agent measures the model file it was started with (``probescope agent --model PATH``) on
its own hardware, with the same child-process measurement as a local check
(``contract_measure._measure_in_subprocess``): accuracy on the validation rows the dashboard sends,
latency p95 of single-row runs, peak memory. It measures only that file, named by its sha256,
so a cell never reports a figure of another version; an agent that probes a server, or runs
another version, is *unsupported* for this one, with the reason.

The validation rows travel as a ``.npy`` array (read with ``allow_pickle=False``) in base64
and the labels as JSON strings: nothing from the network is unpickled or evaluated.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import math
import re
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import httpx

from app.core.agent_auth import TOKEN_ENV, TokenError, read_token
from app.core.contract import (
    UNREACHABLE,
    UNSUPPORTED,
    Contract,
    ContractError,
    TargetCheck,
    _measure_in_subprocess,
    measured_check,
)
from app.core.versions import ModelVersion, VersionError, inspect_onnx

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

CONTRACT_PATH = "/v1/contract"
MAX_REQUEST_BYTES = 64 * 2**20  # a validation set; the answer is a few hundred bytes
MAX_RUNS = 100_000
INFO_TIMEOUT_S = 3.0
# The agent's child measurement may take up to CHILD_TIMEOUT_S; the answer a little longer.
MEASURE_TIMEOUT_S = 150.0
TARGET_PARAMS = frozenset({"token_file", "token_env", "ca"})


class AgentRefusal(Exception):
    """A measurement the agent will not make; ``status`` is the HTTP status it answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class AgentModel:
    """The model file an agent runs, and its one-at-a-time contract measurements."""

    path: Path
    name: str
    sha256: str
    _busy: threading.Lock = field(default_factory=threading.Lock)

    def describe(self) -> dict:
        return {"name": self.name, "sha256": self.sha256}

    def measure(self, request: object) -> dict:
        """Measure this model for a ``POST /v1/contract`` body: ``{"sha256", "runs",
        "validation": null | {"features": base64 .npy, "labels": [str | null]}}``."""
        if not isinstance(request, dict):
            raise AgentRefusal(400, "the body must be a JSON object")
        asked = request.get("sha256")
        if asked != self.sha256:
            raise AgentRefusal(409, f"this agent runs {self.name} (sha256 "
                                    f"{self.sha256[:12]}…), not the version asked about")
        runs = request.get("runs")
        if not isinstance(runs, int) or isinstance(runs, bool) or not 1 <= runs <= MAX_RUNS:
            raise AgentRefusal(400, f"runs must be an integer from 1 to {MAX_RUNS}")
        features, labels = _validation_rows(request.get("validation"))
        try:  # the file may have been replaced since the agent started: measure no other
            now = inspect_onnx(self.path).sha256
        except VersionError as exc:
            raise AgentRefusal(422, f"cannot read {self.path} here: {exc}") from None
        if now != self.sha256:
            raise AgentRefusal(409, f"{self.path} changed since this agent started (sha256 "
                                    f"now {str(now)[:12]}…); restart it to measure the new file")
        # One at a time: two measurements side by side would each time the other.
        if not self._busy.acquire(blocking=False):
            raise AgentRefusal(409, "a contract check is already measuring on this agent; "
                                    "try again when it ends")
        try:
            with tempfile.TemporaryDirectory(prefix="probescope-contract-") as tmp:
                validation = None
                if features is not None:
                    validation = str(Path(tmp) / "validation.csv")
                    _write_validation(validation, features, labels)
                try:
                    # The CPU provider, as the agent's own probe runs it (``probescope agent``
                    # takes no provider); the answer names it, and the check's detail says so.
                    return _measure_in_subprocess(str(self.path), "cpu", validation, runs)
                except ContractError as exc:
                    raise AgentRefusal(422, f"cannot run {self.name} here: {exc}") from None
        finally:
            self._busy.release()


def _validation_rows(spec: object) -> tuple[np.ndarray | None, list[str | None]]:
    import numpy as np

    if spec is None:
        return None, []
    if not isinstance(spec, dict):
        raise AgentRefusal(400, "validation must be null or an object")
    try:
        raw = base64.b64decode(spec.get("features", ""), validate=True)
        _npy_fits(raw)
        features = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, TypeError, OSError) as exc:
        raise AgentRefusal(400, f"validation features are not a .npy array: {exc}") from None
    except MemoryError:
        raise AgentRefusal(413, "validation features are too large for this agent's "
                                "memory") from None
    if features.ndim != 2 or features.dtype.kind not in "fiu" or not len(features):
        raise AgentRefusal(400, "validation features must be a non-empty 2-D numeric array")
    labels = spec.get("labels")
    if (not isinstance(labels, list) or len(labels) != len(features)
            or not all(x is None or isinstance(x, str) for x in labels)):
        raise AgentRefusal(400, "validation labels must be a list of strings or nulls, one "
                                "per row")
    return features, labels


def _npy_fits(raw: bytes) -> None:
    """Refuse a .npy whose header declares more data than ``raw`` carries (ValueError),
    before numpy allocates what it declares: a 100-byte header claiming 1.3e12 values had
    it try to allocate 4.7 TiB."""
    from numpy.lib import format as npy

    stream = io.BytesIO(raw)
    version = npy.read_magic(stream)
    if version == (1, 0):
        shape, _, dtype = npy.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, _, dtype = npy.read_array_header_2_0(stream)
    else:  # 3.0 only differs for structured dtypes' field names: not numeric features
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not read here")
    declared = math.prod(shape) * dtype.itemsize  # Python integers: no overflow
    carried = len(raw) - stream.tell()
    if declared > carried:
        raise ValueError(f"its header declares {declared:,} bytes of data (shape {shape}, "
                         f"{dtype}) but the request carries {carried:,}")


def _write_validation(path: str, features: np.ndarray, labels: list[str | None]) -> None:
    # A CSV, as a user's validation file often is, read back by the same ``load_payload`` a
    # local check uses: float repr round-trips exactly, so both sides see the same rows.
    import pandas as pd

    frame = pd.DataFrame(features, columns=[f"x{i}" for i in range(features.shape[1])])
    frame["label"] = labels
    frame.to_csv(path, index=False)


_USERINFO = re.compile(r"//[^/?#@]*@")


def shown_target(target: str) -> str:
    """``target`` as it may be printed, stored or put in --json: a user:password before the
    host, and the values of parameters an agent target does not take (a credential put in
    the query by mistake), are cut. It is refused all the same; the report must not repeat
    it."""
    head, sep, query = target.partition("?")
    head = _USERINFO.sub("//…@", head)
    if sep:
        query = "&".join(f"{k}={v if k in TARGET_PARAMS else '…'}"
                         for k, v in parse_qsl(query, keep_blank_values=True))
    return head + sep + query


def check_on_agent(model: ModelVersion, contract: Contract, target: str, runs: int, *,
                   version_source: str = "") -> TargetCheck:
    """Measure ``contract`` for ``model`` on the agent at ``target``; never a pass unless the
    agent measured this very file. The target is shown without credentials."""
    check = _check_on_agent(model, contract, target, runs, version_source=version_source)
    shown = shown_target(target)
    reason = _USERINFO.sub("//…@", check.reason.replace(target, shown))
    return dataclasses.replace(check, target=shown, reason=reason)


def _check_on_agent(model: ModelVersion, contract: Contract, target: str, runs: int, *,
                    version_source: str = "") -> TargetCheck:
    from app.core.domain import EndpointUri, UriError
    from probes.base import ProbeError
    from probes.http_common import split_http_target

    try:
        uri = EndpointUri.parse(target)
        base_url, path = split_http_target(uri, "agent+http://HOST:PORT")
        if path:
            raise ProbeError(f"'{target}' should look like agent+http://HOST:PORT")
        unknown = sorted({k for k, _ in uri.params} - TARGET_PARAMS)
        if unknown:
            raise ProbeError(f"unknown parameter {unknown[0]!r} in {target}; an agent target "
                             f"takes {', '.join(sorted(TARGET_PARAMS))}")
        token = read_token(uri.param("token_file"), uri.param("token_env", TOKEN_ENV)
                           or TOKEN_ENV, file_hint="?token_file=PATH in the target")
    except (ProbeError, UriError, ValueError) as exc:
        return TargetCheck(target, UNSUPPORTED, reason=str(exc))
    except TokenError as exc:
        return TargetCheck(target, UNREACHABLE, reason=f"no token for the agent at {base_url}: "
                                                       f"{exc}")
    ca = uri.param("ca")
    try:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else True
    except (OSError, ssl.SSLError) as exc:
        return TargetCheck(target, UNSUPPORTED, reason=f"cannot read the CA bundle {ca}: {exc}")
    try:
        with httpx.Client(base_url=base_url, verify=verify, follow_redirects=False,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            answer = client.get("/v1/info", timeout=INFO_TIMEOUT_S)
            refused = _refused(answer, base_url)
            if refused:
                return TargetCheck(target, UNREACHABLE, reason=refused)
            info = _json(answer)
            if answer.status_code != 200 or not isinstance(info, dict) or \
                    "agent_id" not in info:
                return TargetCheck(target, UNREACHABLE, reason=(
                    f"{base_url} answered HTTP {answer.status_code} to /v1/info, which is not "
                    "a ProbeScope agent's answer"))
            why_not = _not_this_model(info, model, base_url)
            if why_not:
                return TargetCheck(target, UNSUPPORTED, reason=why_not)
            body = json.dumps({"sha256": model.sha256, "runs": runs,
                               "validation": _validation_spec(contract)}).encode()
            answer = client.post(CONTRACT_PATH, content=body, timeout=MEASURE_TIMEOUT_S,
                                 headers={"Content-Type": "application/json"})
    except httpx.TimeoutException:
        return TargetCheck(target, UNREACHABLE, reason=f"the agent at {base_url} did not "
                                                       "answer in time")
    except (httpx.HTTPError, OSError) as exc:
        return TargetCheck(target, UNREACHABLE, reason=f"cannot connect to {base_url}: "
                                                       f"{str(exc) or type(exc).__name__}")
    refused = _refused(answer, base_url)
    if refused:
        return TargetCheck(target, UNREACHABLE, reason=refused)
    measured = _json(answer)
    if answer.status_code != 200:
        said = measured.get("error") if isinstance(measured, dict) else None
        status = UNREACHABLE if answer.status_code >= 500 else UNSUPPORTED
        return TargetCheck(target, status, reason=f"the agent at {base_url} did not measure "
                           f"{model.name}: {said or f'HTTP {answer.status_code}'}")
    if not _plausible(measured):
        return TargetCheck(target, UNREACHABLE, reason=f"the agent at {base_url} answered a "
                                                       "measurement that is not one")
    # Said, not chosen: an agent measures on onnxruntime's CPU provider (its probe and its
    # contract child alike), whatever accelerator the edge box has. An agent that names
    # another provider in its answer is named as it says; one too old to say measured on CPU.
    provider = measured.get("provider") if isinstance(measured.get("provider"), str) else "cpu"
    on = "CPU" if provider == "cpu" else f"{provider} provider"
    return measured_check(model, contract, target, runs, measured,
                          where=f"on the agent at {base_url} (on the agent's {on})",
                          version_source=version_source)


def _refused(answer: httpx.Response, base_url: str) -> str | None:
    if answer.status_code in (401, 403):
        return (f"the agent at {base_url} refused us (HTTP {answer.status_code}); give its "
                f"token: set {TOKEN_ENV} or add ?token_file=PATH to the target")
    return None


def _json(answer: httpx.Response) -> object:
    try:
        return answer.json()
    except ValueError:
        return None


def _not_this_model(info: dict, model: ModelVersion, base_url: str) -> str | None:
    running = info.get("model")
    if not isinstance(running, dict) or not running.get("sha256"):
        sources = info.get("sources") or []
        what = (f"probes {sources[0]}, not a model file of its own" if sources
                else "runs no model file")
        return (f"the agent at {base_url} {what}, so nothing of {model.name} can be measured "
                "there (start an agent with --model on its file)")
    if running["sha256"] != model.sha256:
        return (f"the agent at {base_url} runs {running.get('name', '?')} (sha256 "
                f"{str(running['sha256'])[:12]}…), not {model.name} ({(model.sha256 or '')[:12]}"
                "…): start an agent with --model on this file to measure it there")
    return None


def _validation_spec(contract: Contract) -> dict | None:
    import numpy as np

    from probes.payload import load_payload

    if contract.validation is None:
        return None
    payload = load_payload(contract.validation)
    features = np.ascontiguousarray(payload.features.reshape(len(payload), -1))
    buffer = io.BytesIO()
    np.save(buffer, features, allow_pickle=False)
    labels = list(payload.labels) if payload.labels else [None] * len(payload)
    return {"features": base64.b64encode(buffer.getvalue()).decode("ascii"),
            "labels": [lab or None for lab in labels]}


def _plausible(measured: object) -> bool:
    if not isinstance(measured, dict):
        return False
    numbers = ("latency_p95_ms", "latency_p50_ms", "peak_memory_mb", "process_peak_mb")
    return all(isinstance(measured.get(k), int | float) and math.isfinite(measured[k])
               for k in numbers)
