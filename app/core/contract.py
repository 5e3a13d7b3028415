"""The handover contract (``<model stem>.contract.toml`` or ``model.contract.toml`` beside a
model): parse it, measure each clause on each hardware target, give verdicts.
Thread: the caller's; each target's measurement runs in a fresh child interpreter.

Why a child process: peak memory is only honest in a process that has loaded nothing else, and
latency is steadier away from a GUI's or a test runner's other threads. The child reports the
rise of its peak RSS (``ru_maxrss``) over its RSS just before loading the model.

A target is ``cpu``, ``cuda`` or any other onnxruntime provider name (``probes.onnx_local``),
or ``agent+http(s)://HOST:PORT``: an agent started with ``--model`` on this very file measures
it on its own hardware (``app.core.contract_agent``). A provider that is not installed, or an
agent that cannot be reached, is *unreachable*; an agent that runs no model file, or another
version, is *unsupported*; neither is ever a pass.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.classes import class_names, label_index
from app.core.versions import (
    ModelVersion,
    VersionChanged,
    VersionError,
    inspect_onnx,
    verify_unchanged,
)

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

PASS, FAIL, UNREACHABLE, UNSUPPORTED, NO_LIMIT = (
    "pass", "fail", "unreachable", "unsupported", "no_limit")

LATENCY_RUNS = 300
MIN_RUNS = 20  # below this a p95 is the slowest run
WARMUP_RUNS = 20
CHILD_TIMEOUT_S = 120.0
ACCURACY_BATCH = 256


class ContractError(Exception):
    """A contract file that is missing or malformed; the message says what to fix."""


class NoContract(ContractError):
    """No contract beside the model: nothing was promised (a choice, not a mistake)."""


class ModelUnreadable(ContractError):
    """The model file itself cannot be read."""


class ModelChanged(ContractError):
    """A registered version whose file changed since it was registered: measuring it would
    certify, under that version's name, bytes that were never registered."""


@dataclass(frozen=True, slots=True)
class Contract:
    path: Path
    framework: str | None = None
    version: str | None = None
    max_parameters: int | None = None
    max_peak_memory_mb: float | None = None
    min_accuracy: float | None = None
    validation: Path | None = None
    max_latency_p95_ms: dict[str, float] = field(default_factory=dict)  # per target kind


def contract_path_for(model: str | Path) -> Path | None:
    """``<stem>.contract.toml`` beside the model, else ``model.contract.toml`` there when the
    model is the only one in its folder; ContractError when the folder holds other models,
    since model.contract.toml cannot say which of them it was written for."""
    model = Path(model)
    own = model.with_name(f"{model.stem}.contract.toml")
    if own.is_file():
        return own
    shared = model.with_name("model.contract.toml")
    if not shared.is_file():
        return None
    others = sorted(p.name for p in model.parent.iterdir()
                    if p.suffix.lower() == ".onnx" and p.name != model.name and p.is_file())
    if others:
        raise ContractError(
            f"{shared} is for a folder holding one model, and {model.parent} also holds "
            f"{', '.join(others[:3])}{', …' if len(others) > 3 else ''}; write {model.name}'s "
            f"contract as {own.name}")
    return shared


def _number(doc: dict, key: str, where: str, path: Path) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(f"{path}: {where}{key} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise ContractError(f"{path}: {where}{key} must be a finite number, not {value!r}")
    return float(value)


_KNOWN_KEYS = {
    "contract": {"framework", "version", "max_parameters", "max_peak_memory_mb"},
    "accuracy": {"validation", "min"},
}


def _refuse_unknown(path: Path, doc: dict, latency: dict) -> None:
    """A misspelt key would otherwise be a limit silently never checked."""
    from probes.onnx_local import PROVIDERS

    def complain(key: str, where: str, known: set[str]) -> None:
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(sorted(known))}"
        raise ContractError(f"{path}: unknown key {where}{key}; {hint}")

    for key in doc:
        if key not in {*_KNOWN_KEYS, "latency_p95_ms"}:
            complain(key, "", {*_KNOWN_KEYS, "latency_p95_ms"})
    for table, known in _KNOWN_KEYS.items():
        for key in doc.get(table, {}):
            if key not in known:
                complain(key, f"[{table}] ", known)
    targets = {*PROVIDERS, "agent"}
    for key in latency:
        if key not in targets and not key.startswith(("agent+http://", "agent+https://")):
            complain(key, "[latency_p95_ms] ", targets)


def load_contract(path: str | Path) -> Contract:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(f"no contract file at {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(f"{path} is not valid TOML: {exc}") from None
    head = doc.get("contract", {})
    acc = doc.get("accuracy", {})
    lat = doc.get("latency_p95_ms", {})
    if not all(isinstance(t, dict) for t in (head, acc, lat)):
        raise ContractError(f"{path}: [contract], [accuracy] and [latency_p95_ms] must be tables")
    _refuse_unknown(path, doc, lat)
    validation = acc.get("validation")
    min_accuracy = _number(acc, "min", "[accuracy] ", path)
    if min_accuracy is not None and validation is None:
        raise ContractError(f"{path}: [accuracy] min needs a validation file "
                            "(validation = \"validation.csv\", relative to the contract)")
    if validation is not None and not (path.parent / str(validation)).is_file():
        raise ContractError(f"{path}: the validation file {path.parent / str(validation)} does "
                            "not exist (the path is relative to the contract)")
    if min_accuracy is not None and not 0 <= min_accuracy <= 1:
        raise ContractError(f"{path}: [accuracy] min is a share from 0 to 1, not {min_accuracy:g}")
    for key in ("framework", "version"):
        # A bare number is read as a float: version = 1.10 would be judged as "1.1".
        if key in head and not isinstance(head[key], str):
            raise ContractError(f'{path}: {key} must be a string in quotes ({key} = "1.10"), '
                                f"not {head[key]!r}")
    max_params = _number(head, "max_parameters", "", path)
    if max_params is not None and not max_params.is_integer():
        raise ContractError(f"{path}: max_parameters must be a whole number, not "
                            f"{head['max_parameters']!r}")
    limits = [max_params, _number(head, "max_peak_memory_mb", "", path),
              *(_number(lat, k, "[latency_p95_ms] ", path) for k in lat)]
    if any(v is not None and v < 0 for v in limits):
        raise ContractError(f"{path}: limits cannot be negative")
    if min_accuracy is None and all(v is None for v in limits) and not (
            {"framework", "version"} & set(head)):
        raise ContractError(f"{path} sets no limit, so every model would pass it; set at least "
                            "one of [contract] max_parameters, max_peak_memory_mb, framework, "
                            "version, [accuracy] min, [latency_p95_ms] cpu")
    return Contract(
        path=path,
        framework=head.get("framework"),
        version=head.get("version"),
        max_parameters=int(max_params) if max_params is not None else None,
        max_peak_memory_mb=_number(head, "max_peak_memory_mb", "", path),
        min_accuracy=min_accuracy,
        validation=(path.parent / validation) if validation else None,
        max_latency_p95_ms={str(k): float(_number(lat, k, "[latency_p95_ms] ", path) or 0)
                            for k in lat},
    )


@dataclass(frozen=True, slots=True)
class Clause:
    name: str  # accuracy, latency_p95_ms, peak_memory_mb, parameters, framework, version
    status: str  # pass | fail | no_limit
    measured: float | str | None
    limit: float | str | None
    detail: str = ""

    def to_json(self) -> dict:
        return {"clause": self.name, "status": self.status, "measured": self.measured,
                "limit": self.limit, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class TargetCheck:
    target: str
    status: str  # pass | fail | unreachable | unsupported
    clauses: tuple[Clause, ...] = ()
    reason: str = ""

    def to_json(self) -> dict:
        return {"target": self.target, "status": self.status, "reason": self.reason or None,
                "clauses": [c.to_json() for c in self.clauses]}


@dataclass(frozen=True, slots=True)
class ContractReport:
    model: ModelVersion
    contract: Contract
    targets: tuple[TargetCheck, ...]

    @property
    def passed(self) -> bool:
        """Every target was measured and passed."""
        return all(t.status == PASS for t in self.targets)

    def to_json(self) -> dict:
        return {"model": self.model.location, "name": self.model.name,
                "version": self.model.version, "contract": str(self.contract.path),
                "passed": self.passed, "targets": [t.to_json() for t in self.targets]}


def _limit_clause(name: str, measured: float, limit: float | None, *, at_most: bool,
                  detail: str = "", digits: int | None = None) -> Clause:
    """Judged on the figure as measured; shown rounded to ``digits``, unless the rounded one
    would read as the other verdict (0.94996 shown as 0.95 against a 0.95 minimum)."""
    shown = measured if digits is None else round(measured, digits)
    if limit is None:
        return Clause(name, NO_LIMIT, shown, None, detail)
    ok = measured <= limit if at_most else measured >= limit
    if ok != (shown <= limit if at_most else shown >= limit):
        shown = measured
    return Clause(name, PASS if ok else FAIL, shown, limit, detail)


# The producer an exporter writes, per framework a contract may name.
_CONVERTERS = {"pytorch": ("pytorch", "torch"), "tensorflow": ("tf2onnx", "tensorflow"),
               "keras": ("tf2onnx", "keras2onnx"), "sklearn": ("skl2onnx",),
               "scikit-learn": ("skl2onnx",), "lightgbm": ("onnxmltools",),
               "xgboost": ("onnxmltools",), "paddle": ("paddle2onnx",)}


VERSION_FROM_FILE = "read from the file"
VERSION_FROM_REGISTRY = "the version it was registered with (the file names none)"


def static_clauses(model: ModelVersion, contract: Contract,
                   version_source: str = "") -> list[Clause]:
    """Clauses read from the file itself: parameters, framework, version (``version_source``
    says where ``model.version`` came from, in the version clause's detail)."""
    out = [_limit_clause("parameters", int(model.parameters or 0), contract.max_parameters,
                         at_most=True)]
    if contract.framework is not None:
        # An ONNX file is framework "onnx"; the producer names the framework it came from.
        name = (model.producer or "").lower().split(" ", 1)[0]
        wanted = contract.framework.lower()
        ok = wanted == "onnx" or name == wanted or name in _CONVERTERS.get(wanted, ())
        out.append(Clause("framework", PASS if ok else FAIL,
                          f"onnx ({model.producer})" if model.producer else "onnx",
                          contract.framework))
    if contract.version is not None:
        out.append(Clause("version", PASS if model.version == contract.version else FAIL,
                          model.version, contract.version,
                          version_source if model.version is not None else
                          "the file names no version"))
    return out


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


def _latency_limit(contract: Contract, target: str) -> float | None:
    kind = "agent" if target.startswith("agent+") else target
    return contract.max_latency_p95_ms.get(target, contract.max_latency_p95_ms.get(kind))


def check_target(model: ModelVersion, contract: Contract, target: str,
                 runs: int = LATENCY_RUNS, *, version_source: str = "") -> TargetCheck:
    """Measure every clause of ``contract`` for ``model`` on one target."""
    from probes.onnx_local import PROVIDERS, available_providers

    if target.startswith(("agent+http://", "agent+https://")):
        from app.core.contract_agent import check_on_agent

        return check_on_agent(model, contract, target, runs, version_source=version_source)
    if target not in PROVIDERS:
        return TargetCheck(target, UNSUPPORTED, reason=f"unknown target '{target}'; use a "
                           f"provider ({', '.join(PROVIDERS)}) or agent+http://HOST:PORT")
    if target not in available_providers():
        return TargetCheck(target, UNREACHABLE, reason=f"provider '{target}' is not available "
                           f"here (available: {', '.join(available_providers())})")
    shape_problem = _input_problem(model)
    if shape_problem:
        return TargetCheck(target, UNSUPPORTED, reason=shape_problem)
    validation = str(contract.validation) if contract.validation else None
    try:
        measured = _measure_in_subprocess(model.location, target, validation, runs)
    except ContractError as exc:
        return TargetCheck(target, UNREACHABLE, reason=f"cannot run {model.name} on {target}: "
                           f"{exc}")
    return measured_check(model, contract, target, runs, measured,
                          version_source=version_source)


def measured_check(model: ModelVersion, contract: Contract, target: str, runs: int,
                   measured: dict, where: str = "", *, version_source: str = "") -> TargetCheck:
    """The verdict of every clause from what a target measured (``_measure_in_child``'s
    figures, here or on an agent); ``where`` says where, in the latency clause's detail."""
    clauses = static_clauses(model, contract, version_source)
    if measured.get("accuracy") is not None:
        no_class = measured.get("no_class", 0)
        clauses.insert(0, _limit_clause(
            "accuracy", measured["accuracy"], contract.min_accuracy, at_most=False,
            digits=4, detail=f"{measured['validation_rows']} validation rows"
            + (f"; {no_class} gave no class (a non-finite output) and count as wrong"
               if no_class else "")))
    elif contract.min_accuracy is not None:
        clauses.insert(0, Clause("accuracy", FAIL, None, contract.min_accuracy,
                                 "the validation file has no labels"))
    clauses.insert(1, _limit_clause(
        "latency_p95_ms", measured["latency_p95_ms"], _latency_limit(contract, target),
        at_most=True, digits=4,
        detail=f"p50 {measured['latency_p50_ms']:.4f} ms, {runs} single-row runs"
        + (f" {where}" if where else "")))
    clauses.insert(2, _limit_clause(
        "peak_memory_mb", measured["peak_memory_mb"], contract.max_peak_memory_mb,
        at_most=True, digits=1, detail=f"process peak {measured['process_peak_mb']:.0f} MB"))
    if any(c.status == FAIL for c in clauses):
        return TargetCheck(target, FAIL, tuple(clauses))
    if all(c.status == NO_LIMIT for c in clauses):
        # Nothing was asked of this target (the contract's limits are for others): not a pass.
        others = ", ".join(sorted(contract.max_latency_p95_ms)) or "none"
        return TargetCheck(target, UNSUPPORTED, tuple(clauses), reason=(
            f"the contract sets no limit that applies on {target} (latency limits are for: "
            f"{others})"))
    return TargetCheck(target, PASS, tuple(clauses))


@dataclass(frozen=True, slots=True)
class PreparedCheck:
    """A model and its contract, read and found usable: what is left is to measure."""

    model: ModelVersion
    contract: Contract
    version_source: str = VERSION_FROM_FILE


def prepare_check(model_path: str | Path, *, contract_path: str | Path | None = None,
                  registered: ModelVersion | None = None) -> PreparedCheck:
    """Read the model, find and parse its contract and vet its validation file; ContractError
    (NoContract, ModelUnreadable) when any of it cannot be used. Nothing is measured, so a
    caller with several models can refuse a bad one before spending minutes on the others.

    ``registered``: the registry's entry for this file; its name is the model's, and its
    version stands in when the file names none (``versions add --version``)."""
    try:
        model = inspect_onnx(model_path, registered.name if registered else None)
    except VersionError as exc:
        raise ModelUnreadable(str(exc)) from None
    version_source = VERSION_FROM_FILE
    if model.version is None and registered is not None and registered.version:
        model = dataclasses.replace(model, version=registered.version)
        version_source = VERSION_FROM_REGISTRY
    found = Path(contract_path) if contract_path else contract_path_for(model_path)
    if found is None:
        stem = Path(model_path).stem
        raise NoContract(f"no contract beside {model_path}: write {stem}.contract.toml or "
                            "model.contract.toml in the same folder")
    contract = load_contract(found)
    if contract.validation is not None:
        _check_validation(model, contract.validation, contract.min_accuracy is not None)
    return PreparedCheck(model, contract, version_source)


def measure(prepared: PreparedCheck, targets: list[str], *,
            runs: int = LATENCY_RUNS) -> ContractReport:
    """Measure a prepared check on each target, in order."""
    return ContractReport(prepared.model, prepared.contract, tuple(
        check_target(prepared.model, prepared.contract, t, runs,
                     version_source=prepared.version_source) for t in targets))


def check_contract(model_path: str | Path, targets: list[str], *,
                   contract_path: str | Path | None = None,
                   runs: int = LATENCY_RUNS) -> ContractReport:
    """Check one model file against its contract on each target, in order."""
    return measure(prepare_check(model_path, contract_path=contract_path), targets, runs=runs)


def check_registered(version: ModelVersion, targets: list[str], *,
                     runs: int = LATENCY_RUNS) -> ContractReport:
    """Check a registered ONNX version: ModelChanged when its file is no longer the one
    registered (as replay refuses it), since the report would carry the version's name."""
    try:
        verify_unchanged(version)
    except VersionChanged as exc:
        raise ModelChanged(str(exc)) from None
    except VersionError as exc:
        raise ModelUnreadable(str(exc)) from None
    return measure(prepare_check(version.location, registered=version), targets, runs=runs)


def _input_problem(model: ModelVersion) -> str | None:
    """Why the contract's measurements cannot feed this model, if they cannot: they send
    rows of numbers to one input of shape [batch, width]."""
    inputs = model.inputs or ()
    if len(inputs) != 1:
        names = ", ".join(i["name"] for i in inputs) or "none"
        return (f"{model.name} takes {len(inputs)} inputs ({names}); a contract is measured "
                "on models with one input of rows of numbers")
    shape = inputs[0]["shape"]
    if len(shape) != 2:
        return (f"{model.name} takes {inputs[0]['name']} of shape "
                f"[{', '.join(map(str, shape))}]; a contract is measured on "
                "models taking [batch, width]")
    if isinstance(shape[0], int) and shape[0] > 1:
        # The target itself is fine: the latency clause is about one request, one row.
        return (f"{model.name} takes {inputs[0]['name']} in a fixed batch of {shape[0]} rows "
                f"([{', '.join(map(str, shape))}]); the latency runs send one row per call, so "
                "a contract is measured on models exported with a batch of 1 or a dynamic one")
    return None


def _check_validation(model: ModelVersion, path: Path, labels_needed: bool) -> None:
    """A validation file that cannot give a fair accuracy is bad input, said once before any
    target is measured: empty, of another width than the model takes (often a label column
    under another name), or labelled with names the model does not know."""
    import onnx

    from probes.base import ProbeError
    from probes.payload import LABEL_COLUMN, load_payload

    try:
        payload = load_payload(path)
    except ProbeError as exc:
        text = str(exc).removeprefix(f"{path}: ")  # named once, not twice
        raise ContractError(f"validation file {path}: {text}") from None
    if len(payload) == 0:
        raise ContractError(f"validation file {path} holds no rows")
    inputs = model.inputs or ()
    width = inputs[0]["shape"][1] if len(inputs) == 1 and len(inputs[0]["shape"]) == 2 else None
    columns = payload.features.reshape(len(payload), -1).shape[1]
    if isinstance(width, int) and width > 0 and columns != width:
        raise ContractError(f"validation file {path} has {columns} feature columns; "
                            f"{model.name} takes {width} (the ground truth belongs in a column "
                            f"named '{LABEL_COLUMN}')")
    if not labels_needed:
        return
    # A minimum accuracy with no ground truth is a contract that cannot be judged, not a
    # model that failed it.
    if payload.labels is None:
        raise ContractError(f"validation file {path} has no '{LABEL_COLUMN}' column, and "
                            "[accuracy] min needs the ground truth in it")
    if not any(payload.labels):
        raise ContractError(f"validation file {path}: every row's '{LABEL_COLUMN}' is blank, "
                            "and [accuracy] min needs the ground truth")
    meta = {p.key: p.value for p in onnx.load(str(model.location),
                                              load_external_data=False).metadata_props}
    names = class_names(meta)
    texts = {lab for lab in payload.labels if lab and not lab.lstrip("-").isdigit()}
    unknown = sorted(texts - set(names))
    if unknown:
        raise ContractError(
            f"validation file {path}: labels such as {unknown[0]!r} are neither class "
            f"indices nor among {model.name}'s class names (metadata 'classes': "
            f"{meta.get('classes') or 'none'})")
    # A class index the model cannot answer would count as wrong on every row that has it:
    # a file for another model, or labels shifted by one, not the model's mistake.
    count = len(names) or _output_classes(model)
    indices = {int(lab) for lab in payload.labels if lab and lab.lstrip("-").isdigit()}
    outside = sorted(i for i in indices if i < 0 or (count is not None and i >= count))
    if outside:
        known = (f"its classes are 0..{count - 1}" + (f" ({', '.join(names)})" if names else
                                                      " (from its output's width)")
                 if count is not None else "a class is never negative")
        raise ContractError(f"validation file {path}: label {outside[0]} is not among "
                            f"{model.name}'s classes; {known}")


def _output_classes(model: ModelVersion) -> int | None:
    """How many classes the model's scores cover, read as ``predicted_classes`` reads them:
    the first float output of shape [batch, k] gives k (one column: two classes, by its
    threshold); None when no such width is fixed."""
    for out in model.outputs:
        if out["type"] in ("float", "double", "float16", "bfloat16"):
            shape = out["shape"]
            last = shape[-1] if len(shape) >= 2 else None
            if isinstance(last, int) and last > 0:
                return 2 if last == 1 else last
            return None
    return None


if __name__ == "__main__":
    sys.exit(_child_main())
