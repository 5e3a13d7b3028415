"""A handover contract file: finding it beside a model (``<model stem>.contract.toml``, else
``model.contract.toml``), reading its TOML into a ``Contract`` and refusing what would make a
limit silently unchecked, and the errors a check meets before it measures anything::

    ContractError          a contract file missing or malformed; the message says what to fix
    ├── NoContract         no contract beside the model
    ├── ModelUnreadable    the model file itself cannot be read
    └── ModelChanged       a registered version whose file changed since it was registered

Thread: the caller's. Apart from ``contract`` because reading the file measures nothing (the
report lists a contract's clauses without measuring them); ``contract`` re-exports it.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["Contract", "ContractError", "ModelChanged", "ModelUnreadable", "NoContract",
           "contract_path_for", "load_contract", "target_key"]


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


def target_key(target: str) -> str:
    """The address a latency limit is matched on. A provider is its name; an agent is
    ``agent+http(s)://host:port[/path]``: host lower-cased, the default port written out, no
    trailing slash, no user:password and no query, since ``?token_file=`` and ``?ca=`` say how
    to reach a box, not which box it is. Names are not resolved: ``localhost`` and
    ``127.0.0.1`` are two keys."""
    if not target.startswith(("agent+http://", "agent+https://")):
        return target
    parts = urlsplit(target)
    try:
        port = parts.port
    except ValueError:  # not a port: kept as written, and the agent check says why
        return target
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = port or (443 if scheme == "agent+https" else 80)
    return f"{scheme}://{host}:{port}{parts.path.rstrip('/')}"


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
    seen: dict[str, str] = {}
    for key in latency:
        # Two spellings of one agent (a trailing slash, a ?token_file=) would leave which limit
        # applies to the order of the file.
        address = target_key(key)
        if address in seen:
            raise ContractError(f'{path}: [latency_p95_ms] "{seen[address]}" and "{key}" are '
                                f"one agent ({address}); give its limit once")
        seen[address] = key


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
    if min_accuracy is None and all(v is None for v in limits):
        # framework and version are labels, not figures: framework = "onnx" holds for every
        # ONNX file, so a contract of labels alone would pass a model nothing was measured of.
        labels = [k for k in ("framework", "version") if k in head]
        raise ContractError(f"{path} sets no limit on a measured figure"
                            + (f" (only {' and '.join(labels)})" if labels else "")
                            + ", so it would pass a model on nothing measured; set at least one "
                            "of [contract] max_parameters, max_peak_memory_mb, [accuracy] min, "
                            "[latency_p95_ms] cpu")
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
