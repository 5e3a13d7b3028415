"""The handover contract (``<model stem>.contract.toml`` or ``model.contract.toml`` beside a
model): parse it, measure each clause on each hardware target, give verdicts.
Thread: the caller's; each target's measurement runs in a fresh child interpreter.

A target is ``cpu``, ``cuda`` or any other onnxruntime provider name (``probes.onnx_local``),
or ``agent+http(s)://HOST:PORT``: an agent started with ``--model`` on this very file measures
it on its own hardware (``app.core.contract_agent``). A provider that is not installed, or an
agent that cannot be reached, is *unreachable*; an agent that runs no model file, or another
version, is *unsupported*; neither is ever a pass.

The file is read in ``contract_file`` and each target measured in ``contract_measure``; this
module draws the clauses and verdicts, and re-exports both.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from app.core.classes import class_names
from app.core.contract_file import (
    Contract,
    ContractError,
    ModelChanged,
    ModelUnreadable,
    NoContract,
    contract_path_for,
    load_contract,
    target_key,
)

# ``_measure_in_subprocess`` is imported from here by ``contract_agent`` (and tests);
# ``_child_main`` is what ``python -m app.core.contract`` runs, below.
from app.core.contract_measure import _child_main, _measure_in_subprocess
from app.core.versions import (
    ModelVersion,
    VersionChanged,
    VersionError,
    inspect_onnx,
    verify_unchanged,
)

__all__ = ["FAIL", "LATENCY_RUNS", "MIN_RUNS", "NO_LIMIT", "PASS", "UNREACHABLE", "UNSUPPORTED",
           "VERSION_FROM_FILE", "VERSION_FROM_REGISTRY", "Clause", "Contract", "ContractError",
           "ContractReport", "ModelChanged", "ModelUnreadable", "NoContract", "PreparedCheck",
           "TargetCheck", "check_contract", "check_registered", "check_target",
           "contract_path_for", "load_contract", "measure", "measured_check", "prepare_check",
           "static_clauses", "target_key", "unchecked_limits"]

PASS, FAIL, UNREACHABLE, UNSUPPORTED, NO_LIMIT = (
    "pass", "fail", "unreachable", "unsupported", "no_limit")

LATENCY_RUNS = 300
MIN_RUNS = 20  # below this a p95 is the slowest run


@dataclass(frozen=True, slots=True)
class Clause:
    name: str  # accuracy, latency_p95_ms, peak_memory_mb, parameters, framework, version
    status: str  # pass | fail | no_limit
    measured: float | str | None
    limit: float | str | None
    detail: str = ""
    # The figure's confidence interval (low, high, confidence), where the figure has one
    # (the latency p95); ``within_spread``: the limit lies inside it, so another check of the
    # same model could give the other verdict.
    interval: tuple[float, float, float] | None = None
    within_spread: bool = False

    def to_json(self) -> dict:
        interval = None if self.interval is None else {
            "low": self.interval[0], "high": self.interval[1],
            "confidence": round(self.interval[2], 4), "method": "order statistics"}
        return {"clause": self.name, "status": self.status, "measured": self.measured,
                "limit": self.limit, "detail": self.detail, "interval": interval,
                "within_spread": self.within_spread}


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
    # The contract's latency keys that applied on none of the targets (``unchecked_limits``).
    not_checked: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """Every target was measured and passed."""
        return all(t.status == PASS for t in self.targets)

    def to_json(self) -> dict:
        return {"model": self.model.location, "name": self.model.name,
                "version": self.model.version, "contract": str(self.contract.path),
                "status": "passed" if self.passed else "failed", "passed": self.passed,
                "targets": [t.to_json() for t in self.targets],
                "not_checked": list(self.not_checked)}


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


def _latency_clause(measured: dict, limit: float | None, runs: int, where: str) -> Clause:
    """The p95 with its spread: the order-statistics interval the child measured
    (``contract_measure.quantile_interval``) in the detail, and a limit inside it said, since
    identical checks then pass and fail by turns. The verdict is the figure's, as ever."""
    clause = _limit_clause("latency_p95_ms", measured["latency_p95_ms"], limit, at_most=True,
                           digits=4)
    detail = f"p50 {measured['latency_p50_ms']:.4f} ms"
    bounds = measured.get("latency_p95_interval_ms")  # absent from an older agent's answer
    interval = None
    if isinstance(bounds, list) and len(bounds) == 2:
        low, high = float(bounds[0]), float(bounds[1])
        confidence = float(measured.get("latency_p95_interval_level") or 0.0)
        interval = (low, high, confidence)
        detail += (f", p95 between {low:.4f} and {high:.4f} ms at {int(confidence * 100)}% "
                   f"confidence (order statistics of the {runs} runs)")
    detail += f", {runs} single-row runs" + (f" {where}" if where else "")
    within = interval is not None and limit is not None and interval[0] <= limit <= interval[1]
    if within:
        detail += (f"; the limit {limit:g} ms is within the measurement's spread: run again "
                   "with more runs (--runs) before trusting this verdict")
    return dataclasses.replace(clause, detail=detail, interval=interval, within_spread=within)


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


def _limit_key(contract: Contract, target: str) -> str | None:
    """The ``[latency_p95_ms]`` key whose limit applies on ``target``: the agent's own address,
    else ``agent`` for any agent; a provider's name. None when none applies."""
    limits = contract.max_latency_p95_ms
    if not target.startswith("agent+"):
        return target if target in limits else None
    key = target_key(target)
    own = next((k for k in limits if k.startswith("agent+") and target_key(k) == key), None)
    return own or ("agent" if "agent" in limits else None)


def _latency_limit(contract: Contract, target: str) -> float | None:
    key = _limit_key(contract, target)
    return None if key is None else contract.max_latency_p95_ms[key]


def unchecked_limits(contract: Contract, targets: list[str]) -> tuple[str, ...]:
    """The contract's latency keys that apply on none of ``targets``, in the contract's order:
    a limit the check did not judge, which the report must say rather than drop."""
    used = {_limit_key(contract, t) for t in targets}
    return tuple(k for k in contract.max_latency_p95_ms if k not in used)


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
    clauses: list[Clause] = []  # the measured clauses first, in one order whatever the contract
    if measured.get("accuracy") is not None:
        no_class = measured.get("no_class", 0)
        # A blank label is a row with no ground truth: left out of the share, and said, since
        # leaving rows out moves the figure.
        unlabelled = measured.get("unlabelled_rows", 0)
        rows = measured["validation_rows"]
        clauses.append(_limit_clause(
            "accuracy", measured["accuracy"], contract.min_accuracy, at_most=False,
            digits=4, detail=(f"{rows} of {rows + unlabelled} validation rows; {unlabelled} "
                              "without a label skipped" if unlabelled
                              else f"{rows} validation rows")
            + (f"; {no_class} gave no class (a non-finite output) and count as wrong"
               if no_class else "")))
    elif contract.min_accuracy is not None:
        clauses.append(Clause("accuracy", FAIL, None, contract.min_accuracy,
                                 "the validation file has no labels"))
    clauses.append(_latency_clause(measured, _latency_limit(contract, target), runs, where))
    clauses.append(_limit_clause(
        "peak_memory_mb", measured["peak_memory_mb"], contract.max_peak_memory_mb,
        at_most=True, digits=1, detail=f"process peak {measured['process_peak_mb']:.0f} MB"))
    clauses += static_clauses(model, contract, version_source)
    if any(c.status == FAIL for c in clauses):
        return TargetCheck(target, FAIL, tuple(clauses))
    if _latency_limit(contract, target) is None:
        # The latency limit is the one clause written per target: without it the target is
        # judged only on what holds everywhere (the file's parameters, framework, version), and
        # a gate would certify hardware it never held to anything.
        others = ", ".join(contract.max_latency_p95_ms) or "none"
        return TargetCheck(target, UNSUPPORTED, tuple(clauses), reason=(
            f"not judged: the contract sets no latency limit for {target} (its latency limits "
            f"are for: {others}); a target passes only on a limit of its own under "
            "[latency_p95_ms]"))
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
                     version_source=prepared.version_source) for t in targets),
        unchecked_limits(prepared.contract, targets))


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
