"""The model-version registry: what an ONNX file or a remote endpoint is, kept in the workspace.
Thread: any (one Store per thread, as always).

An ONNX version is described from the file itself: sha256, parameter count
(``count_parameters``: the weights' element counts, in initializers and ``Constant`` nodes),
opset, producer, input/output signature, size. A remote version is an endpoint URI plus the
version its owner gives it.
Registry order is registration order; bisect walks versions in that order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from app.core.domain import EndpointUri, UriError, not_a_file
from app.core.replay_targets import ReplayError, open_target

if TYPE_CHECKING:  # an edge agent describes its model file without the store's sqlite-utils
    from app.core.store import Store

KIND_ONNX = "onnx"
KIND_REMOTE = "remote"
REPLAYABLE_SCHEMES = frozenset({"v2", "tfserving"})  # the servers a replay can ask
_CHUNK = 1 << 20


class VersionError(Exception):
    """A model version that cannot be registered or found; the message says what to do."""


class VersionChanged(VersionError):
    """A registered file whose bytes are no longer those registered (``verify_unchanged``)."""


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
        """``features float[batch,13] -> probabilities float[batch,3]``; a value that is no
        tensor has no shape to show (``probs seq(map(int64,float))``)."""
        def spec(s: dict) -> str:
            if s["type"].startswith(("seq(", "map(", "optional(")):  # see _type_text
                return f"{s['name']} {s['type']}"
            return f"{s['name']} {s['type']}[{','.join(map(str, s['shape']))}]"

        def one(specs: tuple[dict, ...]) -> str:
            return ", ".join(spec(s) for s in specs)
        return f"{one(self.inputs)} -> {one(self.outputs)}" if self.inputs else ""

    def to_json(self) -> dict:
        row = self.to_row()
        row.pop("registered_ns")
        row["inputs"], row["outputs"], row["id"] = list(self.inputs), list(self.outputs), self.id
        return row


def sha256_of(*paths: Path) -> str:
    """One digest over the files' bytes, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _elem_text(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type).lower()


def _type_text(t: onnx.TypeProto) -> str:
    """An ONNX type as one word: a tensor's element type (``float``), else its structure with
    tensors inside written by element type, as skl2onnx's ZipMap output reads
    ``seq(map(int64,float))``."""
    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        return _elem_text(t.tensor_type.elem_type)
    if kind == "sequence_type":
        return f"seq({_type_text(t.sequence_type.elem_type)})"
    if kind == "map_type":
        return f"map({_elem_text(t.map_type.key_type)},{_type_text(t.map_type.value_type)})"
    if kind == "optional_type":
        return f"optional({_type_text(t.optional_type.elem_type)})"
    if kind == "sparse_tensor_type":
        return f"sparse({_elem_text(t.sparse_tensor_type.elem_type)})"
    return "undefined"


def _specs(values: list) -> tuple[dict, ...]:
    out = []
    for v in values:
        # Only a tensor (dense or sparse) has a shape; a sequence or map has none to show.
        kind = v.type.WhichOneof("value")
        t = getattr(v.type, kind) if kind in ("tensor_type", "sparse_tensor_type") else None
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in t.shape.dim] if t is not None and t.HasField("shape") else []
        out.append({"name": v.name, "type": _type_text(v.type), "shape": dims})
    return tuple(out)


def _external_files(model: onnx.ModelProto, folder: Path) -> list[Path]:
    """Files holding weights stored outside the model file, in name order."""
    stored = _initializers(model.graph) + [
        part for sparse in _sparse_initializers(model.graph)
        for part in (sparse.values, sparse.indices)]
    names = {entry.value for init in stored
             if init.data_location == onnx.TensorProto.EXTERNAL
             for entry in init.external_data if entry.key == "location"}
    return [folder / n for n in sorted(names)]


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """The graph and its subgraphs (If branches, Loop and Scan bodies), depth first."""
    found = [graph]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found += _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    found += _graphs(sub)
    return found


def _initializers(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """The graph's weights and those of its subgraphs."""
    return [init for g in _graphs(graph) for init in g.initializer]


def _sparse_initializers(graph: onnx.GraphProto) -> list[onnx.SparseTensorProto]:
    return [init for g in _graphs(graph) for init in g.sparse_initializer]


# Element types that hold weights: floats, and the small integers of quantized weights. int64
# is what ONNX writes shapes, axes and indices in (Reshape's shape must be int64), and bool a
# condition: neither is a weight a training framework would count.
_WEIGHT_TYPES = frozenset(
    getattr(onnx.TensorProto, n) for n in (
        "FLOAT", "DOUBLE", "FLOAT16", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
        "FLOAT8E5M2FNUZ", "INT8", "UINT8", "INT16", "UINT16", "INT32", "UINT32", "INT4", "UINT4")
    if hasattr(onnx.TensorProto, n))


def _weights(dims: list[int] | tuple[int, ...], data_type: int) -> int:
    return math.prod(dims) if data_type in _WEIGHT_TYPES else 0


def count_parameters(graph: onnx.GraphProto) -> int:
    """The model's weights, in the graph and its subgraphs (If branches, Loop and Scan bodies):
    the element count of every initializer and of every ``Constant`` node's tensor (``value``;
    ``sparse_value``, ``value_float``, ``value_floats``), since exporters and constant folding
    put weights in either. A sparse tensor counts at its dense size (the product of its dims),
    not its stored values: pruning must not slip a model under ``max_parameters``. Only float
    and small-integer (quantized) tensors count; int64 (shapes, axes, indices), bool and string
    tensors do not, and neither does ``ConstantOfShape``'s fill value. Unused tensors count:
    the file carries them."""
    total = 0
    for g in _graphs(graph):
        total += sum(_weights(i.dims, i.data_type) for i in g.initializer)
        total += sum(_weights(i.dims, i.values.data_type) for i in g.sparse_initializer)
        for node in g.node:
            if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
                continue
            for attr in node.attribute:
                if attr.name == "value":
                    total += _weights(attr.t.dims, attr.t.data_type)
                elif attr.name == "sparse_value":
                    total += _weights(attr.sparse_tensor.dims,
                                      attr.sparse_tensor.values.data_type)
                elif attr.name == "value_float":
                    total += 1
                elif attr.name == "value_floats":
                    total += len(attr.floats)
    return total


def inspect_onnx(path: str | Path, name: str | None = None,
                 version: str | None = None) -> ModelVersion:
    """Describe an ONNX file; VersionError when it is missing or not ONNX.

    The location is kept absolute, so a replay started elsewhere finds the same file. When
    weights live in external files, the sha256 covers the model file and then each of them in
    name order, and the size is their sum: a retrained weights file is a new version."""
    path = Path(path).resolve()
    if problem := not_a_file(path, "model file"):
        raise VersionError(problem)
    if path.stat().st_size == 0:  # protobuf reads no bytes as an empty model, not an error
        raise VersionError(f"{path} is empty (0 bytes), not an ONNX model; was its copy cut "
                           "short?")
    try:
        # Weights kept in external files are not loaded: their count is read from the dims.
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise VersionError(f"cannot read {path} as an ONNX model: "
                           f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
                           ) from exc
    graph = model.graph
    if not graph.output:
        raise VersionError(f"{path} has no graph outputs, so it is not a model a replay can run")
    files = [path, *_external_files(model, path.parent)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise VersionError(f"{path} keeps weights in {', '.join(missing)}, which is not beside "
                           "it; copy the weights file next to the model")
    initializer_names = {i.name for i in graph.initializer} | {
        i.values.name for i in graph.sparse_initializer}
    parameters = count_parameters(graph)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    props = {p.key: p.value for p in model.metadata_props}
    producer = " ".join(x for x in (model.producer_name, model.producer_version) if x) or None
    return ModelVersion(
        name=name or path.stem, kind=KIND_ONNX, location=str(path),
        version=version or props.get("version") or (str(model.model_version)
                                                    if model.model_version else None),
        sha256=sha256_of(*files), parameters=int(parameters), opset=opset, producer=producer,
        # Old exporters list initializers among the inputs; they are weights, not inputs.
        inputs=_specs([i for i in graph.input if i.name not in initializer_names]),
        outputs=_specs(list(graph.output)), size_bytes=sum(f.stat().st_size for f in files))


def verify_unchanged(version: ModelVersion) -> None:
    """VersionError when a registered ONNX file is gone or no longer what was registered:
    a replay would otherwise report under the old name whatever the file holds now."""
    if version.kind != KIND_ONNX or not version.sha256:
        return
    try:
        now = inspect_onnx(version.location).sha256
    except VersionError as exc:
        raise VersionError(f"version {version.name}: {exc}") from None
    if now != version.sha256:
        raise VersionChanged(f"version {version.name} changed since it was registered: "
                           f"{version.location} now has sha256 {now[:12]}…, registered "
                           f"{version.sha256[:12]}…; register it again with `probescope "
                           f"versions add` (under a new --name to keep both)")


CHANGED, MISSING = "changed", "missing"
# File times come from the kernel's coarse clock, a few ms behind time.time_ns(): a file
# written just after it was registered can carry a time just before. Within this margin of
# the registration the bytes are hashed, never trusted.
_CLOCK_SLACK_NS = 2_000_000_000


def file_state(version: ModelVersion, registered_ns: int | None, *,
               hash_when_unsure: bool = True) -> str | None:
    """Whether a registered ONNX file is still the bytes registered: None when it is (or the
    version is a server's), CHANGED or MISSING. Cheap for big files: sizes, then the files'
    times against ``registered_ns`` (its registration); the bytes are hashed only when those
    leave it open. The change time counts too, since a copy that keeps an older modification
    time (``cp -p``, ``rsync -t``) is a change all the same."""
    if version.kind != KIND_ONNX or not version.sha256:
        return None
    path = Path(version.location)
    if not path.is_file():
        return MISSING
    files = [path]
    try:
        stats = [path.stat()]
        if stats[0].st_size != version.size_bytes:
            # Weights beside it count in the registered size: read which (the model file
            # alone, then small) before calling it changed.
            model = onnx.load(str(path), load_external_data=False)
            files += _external_files(model, path.parent)
            stats += [f.stat() for f in files[1:]]
    except Exception:  # unreadable as a model, or a weights file gone: not what was registered
        return CHANGED
    if sum(st.st_size for st in stats) != version.size_bytes:
        return CHANGED
    touched_ns = max(max(st.st_mtime_ns, st.st_ctime_ns) for st in stats)
    if registered_ns is not None and touched_ns < registered_ns - _CLOCK_SLACK_NS:
        return None  # untouched since it was registered: nothing to read
    if not hash_when_unsure:
        return None  # the caller cannot wait for the bytes (a GUI thread): not known here
    try:
        now = sha256_of(*files)
    except OSError:
        return MISSING
    return None if now == version.sha256 else CHANGED


def registered_with_state(store: Store, *, hash_when_unsure: bool = True
                          ) -> list[tuple[ModelVersion, str | None]]:
    """The registered versions in registry order, each with ``file_state``."""
    out = []
    for row in store.versions():
        v = ModelVersion.from_row(row)
        out.append((v, file_state(v, row.get("registered_ns"),
                                  hash_when_unsure=hash_when_unsure)))
    return out


def remote_version(uri: str, name: str | None = None, version: str | None = None
                   ) -> ModelVersion:
    try:
        parsed = EndpointUri.parse(uri)
    except UriError as exc:
        raise VersionError(str(exc)) from None
    if "+" not in parsed.scheme:
        raise VersionError(f"'{uri}' is neither an ONNX file nor a remote endpoint; expected a "
                           "path to a .onnx file or a URI like v2+http://HOST:PORT/models/NAME")
    # //HOST:PORT/... : the host, then .../models/NAME[/versions/V] names the model (and
    # maybe its version); else the last part.
    parts = [p for p in parsed.target.split("?")[0].split("/") if p]
    if not parsed.target.startswith("//") or parsed.target.startswith("///") or not parts:
        raise VersionError(f"'{uri}' names no server; expected {parsed.scheme}://HOST:PORT/...")
    model, path_version = (parts[-1] if parts else parsed.scheme), None
    if "models" in parts and parts.index("models") + 1 < len(parts):
        at = parts.index("models")
        model = parts[at + 1]
        if parts[at + 2:at + 3] == ["versions"] and at + 3 < len(parts):
            path_version = parts[at + 3]
    elif "versions" in parts[2:-1]:  # .../NAME/versions/V (TF Serving's form, host first)
        at = parts.index("versions", 2)
        model, path_version = parts[at - 1], parts[at + 1]
    if parsed.scheme.partition("+")[0] in REPLAYABLE_SCHEMES:
        # Checked now with the replay's own rule: a URI the replay refuses would otherwise
        # be registered, then fail every replay it is ticked in.
        try:
            open_target(str(parsed)).close()
        except ReplayError as exc:
            raise VersionError(str(exc)) from None
    version = version or path_version
    return ModelVersion(name=name or (f"{model}@{version}" if version else model),
                        kind=KIND_REMOTE, location=str(parsed), version=version)


def describe(location: str, name: str | None = None, version: str | None = None
             ) -> ModelVersion:
    """An ONNX path or a remote URI, described."""
    if Path(location).is_dir():
        inside = sorted(Path(location).glob("*.onnx"))
        raise VersionError(f"'{location}' is a folder, not a model file"
                           + (f"; e.g. {inside[0]}" if inside else ""))
    if location.endswith(".onnx") or Path(location).is_file():
        described = inspect_onnx(location, name)
        if version and described.version and version != described.version:
            # Refused, not warned: the contract check and the Versions tab judge the version
            # the file names, so the registry would show one version above a verdict on another.
            raise VersionError(
                f"{described.location} names its own version {described.version} (its "
                f"metadata), which --version {version} contradicts; drop --version, or write "
                f"{version} into the file's metadata 'version' and add it again")
        return dataclasses.replace(described, version=version or described.version)
    return remote_version(location, name, version)


def register(store: Store, location: str, name: str | None = None,
             version: str | None = None, *, replace: bool = False) -> ModelVersion:
    return register_all(store, [location], name, version, replace=replace)[0]


def register_all(store: Store, locations: list[str], name: str | None = None,
                 version: str | None = None, *, replace: bool = False) -> list[ModelVersion]:
    """Describe every location first, then register them: one bad file registers none.

    Registering a name again for the same location updates it in place (a re-exported file).
    A name already taken by another location is refused unless ``replace``: two files called
    model.onnx in different folders must not silently become one version."""
    described = [describe(loc, name, version) for loc in locations]
    names = [d.name for d in described]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise VersionError(f"more than one location would be registered as {', '.join(twice)}; "
                           "register them one at a time with --name")
    if not replace:
        taken = {v.name: v.location for v in registered(store)}
        clashes = [d for d in described if taken.get(d.name, d.location) != d.location]
        if clashes:
            d = clashes[0]
            raise VersionError(f"a version named {d.name} is already registered for "
                               f"{taken[d.name]}; give {d.location} another --name, or "
                               "--replace to point the name at it")
    return [dataclasses.replace(d, id=store.upsert_version(d.to_row())) for d in described]


def free_name(name: str, location: str, taken: Mapping[str, str]) -> str:
    """``name``, unless another location already holds it (``taken``: name -> location): then
    name@folder, name@folder-2, ... (a server's model: name@HOST:PORT). A window has no --name
    to ask for, so it picks one."""
    if taken.get(name, location) == location:
        return name
    if "://" in location:
        folder = location.split("://", 1)[1].split("/", 1)[0]
    else:
        folder = Path(location).resolve().parent.name
    candidate, n = f"{name}@{folder}", 2
    while taken.get(candidate, location) != location:
        candidate, n = f"{name}@{folder}-{n}", n + 1
    return candidate


def seed(store: Store, locations: list[str]) -> int:
    """Register these versions when the workspace has none yet (the demo's three); how many
    it registered. A workspace someone has already registered versions in is left as it is."""
    if registered(store):
        return 0
    return len(register_all(store, locations))


def unregister(store: Store, names: list[str]) -> None:
    """Remove these versions from the registry (the files stay); all or none when one is
    not registered."""
    known = {v.name for v in registered(store)}
    missing = [n for n in names if n not in known]
    if missing:
        raise VersionError(f"no version named {', '.join(missing)}; registered: "
                           f"{', '.join(sorted(known)) or 'none'}")
    for name in names:
        store.remove_version(name)


def registered(store: Store) -> list[ModelVersion]:
    return [ModelVersion.from_row(r) for r in store.versions()]


def find(store: Store, name_or_location: str) -> ModelVersion | None:
    for v in registered(store):
        if name_or_location in (v.name, v.location):
            return v
    return None
