"""The model-version registry: what an ONNX file or a remote endpoint is, kept in the workspace.
Thread: any (one Store per thread, as always).

An ONNX version is described from the file itself: sha256, parameter count (the sum of the
initializers' element counts), opset, producer, input/output signature, size. A remote version
is an endpoint URI plus the version its owner gives it. Registry order is registration order;
bisect walks versions in that order.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from app.core.domain import EndpointUri, UriError
from app.core.store import Store

KIND_ONNX = "onnx"
KIND_REMOTE = "remote"
_CHUNK = 1 << 20


class VersionError(Exception):
    """A model version that cannot be registered or found; the message says what to do."""


@dataclass(frozen=True, slots=True)
class ModelVersion:
    name: str
    kind: str  # onnx | remote
    location: str  # a file path, or an endpoint URI
    version: str | None = None
    sha256: str | None = None
    parameters: int | None = None
    opset: int | None = None
    producer: str | None = None
    inputs: tuple[dict, ...] = ()  # {"name", "type", "shape"}
    outputs: tuple[dict, ...] = ()
    size_bytes: int | None = None
    id: int | None = None

    def to_row(self) -> dict:
        return {"name": self.name, "kind": self.kind, "location": self.location,
                "version": self.version, "sha256": self.sha256, "parameters": self.parameters,
                "opset": self.opset, "producer": self.producer,
                "inputs": json.dumps(list(self.inputs)), "outputs": json.dumps(list(self.outputs)),
                "size_bytes": self.size_bytes, "registered_ns": time.time_ns()}

    @classmethod
    def from_row(cls, row: dict) -> ModelVersion:
        return cls(name=row["name"], kind=row["kind"], location=row["location"],
                   version=row["version"], sha256=row["sha256"], parameters=row["parameters"],
                   opset=row["opset"], producer=row["producer"],
                   inputs=tuple(json.loads(row["inputs"] or "[]")),
                   outputs=tuple(json.loads(row["outputs"] or "[]")),
                   size_bytes=row["size_bytes"], id=row["id"])

    def signature(self) -> str:
        """``features float[batch,13] -> probabilities float[batch,3]``."""
        def one(specs: tuple[dict, ...]) -> str:
            return ", ".join(f"{s['name']} {s['type']}[{','.join(map(str, s['shape']))}]"
                             for s in specs)
        return f"{one(self.inputs)} -> {one(self.outputs)}" if self.inputs else ""

    def to_json(self) -> dict:
        row = self.to_row()
        row.pop("registered_ns")
        row["inputs"], row["outputs"], row["id"] = list(self.inputs), list(self.outputs), self.id
        return row


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _specs(values: list) -> tuple[dict, ...]:
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in t.shape.dim] if t.HasField("shape") else []
        out.append({"name": v.name,
                    "type": onnx.TensorProto.DataType.Name(t.elem_type).lower(),
                    "shape": dims})
    return tuple(out)


def inspect_onnx(path: str | Path, name: str | None = None,
                 version: str | None = None) -> ModelVersion:
    """Describe an ONNX file; VersionError when it is missing or not ONNX."""
    path = Path(path)
    if not path.is_file():
        raise VersionError(f"model file {path} does not exist")
    try:
        # Weights kept in external files are not loaded: their count is read from the dims.
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise VersionError(f"cannot read {path} as an ONNX model: "
                           f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
                           ) from exc
    graph = model.graph
    initializer_names = {i.name for i in graph.initializer}
    parameters = sum(math.prod(i.dims) for i in graph.initializer)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    props = {p.key: p.value for p in model.metadata_props}
    producer = " ".join(x for x in (model.producer_name, model.producer_version) if x) or None
    return ModelVersion(
        name=name or path.stem, kind=KIND_ONNX, location=str(path),
        version=version or props.get("version") or model.model_version or None,
        sha256=sha256_of(path), parameters=int(parameters), opset=opset, producer=producer,
        # Old exporters list initializers among the inputs; they are weights, not inputs.
        inputs=_specs([i for i in graph.input if i.name not in initializer_names]),
        outputs=_specs(list(graph.output)), size_bytes=path.stat().st_size)


def remote_version(uri: str, name: str | None = None, version: str | None = None
                   ) -> ModelVersion:
    try:
        parsed = EndpointUri.parse(uri)
    except UriError as exc:
        raise VersionError(str(exc)) from None
    if "+" not in parsed.scheme:
        raise VersionError(f"'{uri}' is neither an ONNX file nor a remote endpoint; expected a "
                           "path to a .onnx file or a URI like v2+http://HOST:PORT/models/NAME")
    # .../models/NAME[/versions/V] names the model (and maybe its version); else the last part.
    parts = [p for p in parsed.target.split("?")[0].split("/") if p]
    model, path_version = (parts[-1] if parts else parsed.scheme), None
    if "models" in parts and parts.index("models") + 1 < len(parts):
        at = parts.index("models")
        model = parts[at + 1]
        if parts[at + 2:at + 3] == ["versions"] and at + 3 < len(parts):
            path_version = parts[at + 3]
    version = version or path_version
    return ModelVersion(name=name or (f"{model}@{version}" if version else model),
                        kind=KIND_REMOTE, location=str(parsed), version=version)


def describe(location: str, name: str | None = None, version: str | None = None
             ) -> ModelVersion:
    """An ONNX path or a remote URI, described."""
    if location.endswith(".onnx") or Path(location).is_file():
        return inspect_onnx(location, name, version)
    return remote_version(location, name, version)


def register(store: Store, location: str, name: str | None = None,
             version: str | None = None) -> ModelVersion:
    described = describe(location, name, version)
    vid = store.upsert_version(described.to_row())
    return ModelVersion(**{**{f: getattr(described, f) for f in described.__slots__},
                           "id": vid})


def registered(store: Store) -> list[ModelVersion]:
    return [ModelVersion.from_row(r) for r in store.versions()]


def find(store: Store, name_or_location: str) -> ModelVersion | None:
    for v in registered(store):
        if name_or_location in (v.name, v.location):
            return v
    return None
