"""``replay --versions``: the versions to replay, as targets. Files, URIs and registered names
resolved (a registered file held to its registration), each model once, and a name per target
that no other holds. Apart from the command's run: it is about the registry and model files,
not about cases or verdicts.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import numpy as np

from app.core.domain import EndpointUri, not_a_file
from app.core.replay_targets import (
    LocalOnnxTarget,
    ReplayError,
    Target,
    TargetDown,
    open_target,
)
from app.core.store import Store
from app.core.versions import (
    KIND_ONNX,
    ModelVersion,
    VersionError,
    find,
    free_name,
    inspect_onnx,
    registered,
    verify_unchanged,
)


def locations(store: Store, wanted: list[str] | None,
               provider: str) -> list[tuple[str, str | None]]:
    """(location, name) per version: files and URIs as given, names looked up. A registered
    file, given by its path or in an ``onnx:`` URI, is held to its registration like its
    name, and keeps that name."""
    if not wanted:
        found = registered(store)
        if not found:
            raise ReplayError("no versions given and none registered; pass --versions A.onnx "
                              "B.onnx ... or register them with `probescope versions add`")
        for v in found:
            if _missing(v) is None:  # a missing one is replayed unanswered (``open_version``)
                verify_unchanged(v)
        found, again = _registered_once(found)
        for note in again:
            print(f"probescope: {note}", file=sys.stderr)
        return [(v.location, v.name) for v in found]
    out = []
    for w in wanted:
        path = EndpointUri.parse(w).target if w.startswith("onnx:") else w
        if Path(path).is_file():
            v = find(store, str(Path(path).resolve()))
            if v is not None:
                verify_unchanged(v)
            out.append((w, v.name if v is not None else None))
            continue
        if "://" in w or w.startswith("onnx:"):
            out.append((w, None))
            continue
        v = find(store, w)
        if v is None:
            if Path(w).is_dir():
                models = sorted(Path(w).glob("*.onnx"))
                raise ReplayError(f"'{w}' is a folder, not a model file; "
                                  + (f"give the .onnx file in it, e.g. {models[0]}" if models
                                     else "it holds no .onnx file"))
            if w.lower().endswith(".onnx") or "/" in w or os.sep in w:
                # A path, not a name: said as contract check and versions add say it.
                raise ReplayError(not_a_file(Path(w).resolve(), "model file")
                                  or f"cannot read {w}")
            known = [r.name for r in registered(store)]
            raise ReplayError(f"'{w}' is neither a model file, an endpoint nor a registered "
                              "version (registered: "
                              + (", ".join(known) if known else "none") + ")")
        if (gone := _missing(v)) is not None:
            # Named on purpose: replaying the others without it would answer another
            # question than the one asked.
            raise ReplayError(f"version {v.name}: {gone}; {_restore_hint(v.name)}")
        verify_unchanged(v)
        out.append((v.location, v.name))
    seen: dict[str, str] = {}
    for (location, _), given in zip(out, wanted, strict=True):
        key = _identity(location, provider)
        if key in seen:
            raise ReplayError(f"'{given}' and '{seen[key]}' are one version; give it once")
        seen[key] = given
    return out


class MissingFile(Target):
    """A registered version whose file is gone: asked nothing, every case gets no answer and
    so no verdict, as for a server that is down, and the other versions are replayed."""

    def __init__(self, location: str, name: str, why: str) -> None:
        self.location, self.name, self.why = location, name, why

    def run(self, feeds: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        raise TargetDown(self.why)  # down: not asked again, not even to time a case alone

    def hint(self) -> str:
        return _restore_hint(self.name)


def open_version(location: str, name: str | None, provider: str) -> Target:
    """The target for one of ``locations``: a registered file that is gone (only the default
    set lets one through) answers nothing (``MissingFile``)."""
    if name is not None and "://" not in location and not location.startswith("onnx:"):
        gone = not_a_file(Path(location), "model file")
        if gone is not None:
            return MissingFile(location, name, gone)
    return open_target(location, provider=provider, name=name)


def _missing(v: ModelVersion) -> str | None:
    """Why a registered ONNX file cannot be read where it was registered (gone, or a folder
    now), as ``versions list`` marks it missing; None when it is there, or v is a server."""
    if v.kind != KIND_ONNX:
        return None
    return not_a_file(Path(v.location), "model file")


def _restore_hint(name: str) -> str:
    return f"restore the file, or `probescope versions remove {shlex.quote(name)}`"


def twins(located: list[tuple[str, str | None]], store: Store,
           provider: str) -> list[tuple[list[int], str]]:
    """Model files given under different names that hold the same bytes (and run on the
    same provider): each group's places in ``located``, and its sha256. Files are hashed only
    where another file given has the same size, so a replay of distinct models reads none."""
    by_size: dict[tuple[int, str], list[tuple[int, Path]]] = {}
    for k, (location, _) in enumerate(located):
        if "://" in location:
            continue
        path = Path(EndpointUri.parse(location).target if location.startswith("onnx:")
                    else location)
        try:
            size = path.stat().st_size
        except OSError:
            continue
        by_size.setdefault((size, _identity(location, provider).rpartition("?")[2]),
                           []).append((k, path))
    groups: list[tuple[list[int], str]] = []
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        by_sha: dict[str, list[int]] = {}
        for k, path in same_size:
            known = find(store, str(path.resolve()))
            try:
                sha = known.sha256 if known and known.sha256 else inspect_onnx(path).sha256
            except VersionError:
                continue  # opening it says what is wrong with it
            if sha:
                by_sha.setdefault(sha, []).append(k)
        groups += [(ks, sha) for sha, ks in by_sha.items() if len(ks) > 1]
    return groups


def _registered_once(found: list[ModelVersion]) -> tuple[list[ModelVersion], list[str]]:
    """The registered versions with each model once (by its bytes' sha256, a server by its
    URI), and a note per model registered under more than one name: run twice, it would
    double the replay's time, and bisect would credit the first name anyway."""
    kept: dict[str, ModelVersion] = {}
    again: dict[str, list[str]] = {}
    for v in found:
        # A file gone is told apart from its twins still there: it is replayed unanswered,
        # so that it is said, not folded into another name.
        key = v.location if _missing(v) is not None else v.sha256 or v.location
        if key in kept:
            again.setdefault(key, []).append(v.name)
        else:
            kept[key] = v
    notes = [f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} {kept[key].name} "
             f"registered again (the same model); replaying it once, as {kept[key].name}"
             for key, names in again.items()]
    return list(kept.values()), notes


def _where(location: str) -> str:
    """Where a version lives, as the registry writes it: a file's absolute path (also for an
    ``onnx:`` URI), a server's URI."""
    if location.startswith("onnx:"):
        location = EndpointUri.parse(location).target
    elif "://" in location:
        return location
    return str(Path(location).resolve())


def _identity(location: str, provider: str) -> str:
    """What makes two versions one: the same file on the same provider, or the same URI (one
    file on two providers is a fair comparison to ask for)."""
    if location.startswith("onnx:"):
        provider = EndpointUri.parse(location).param("provider", provider) or provider
    elif "://" in location:
        return location
    return f"{_where(location)}?provider={provider}"


def name_apart(targets: list[Target], store: Store) -> None:
    """A name per target that no other version in this replay, nor another registered one,
    holds: rows, bisect, CSV columns and JSON are told apart by name. A name held elsewhere
    becomes NAME@folder (a server's: NAME@HOST:PORT), as the Versions panel registers it;
    the same file again (on another provider) becomes NAME@provider."""
    taken = {v.name: _where(v.location) for v in registered(store)}
    used: set[str] = set()
    for t in targets:
        where = _where(t.location)
        name = free_name(t.name, where, taken)
        if name in used:
            base, n = name, 2
            name = f"{base}@{t.provider}" if isinstance(t, LocalOnnxTarget) else base
            while name in used or taken.get(name, where) != where:
                name, n = f"{base}-{n}", n + 1
        t.name = name
        taken[name] = where
        used.add(name)
