"""Replay on a real v2 model server (tools/onnx_http_server.py on 127.0.0.1); the version
registry on real ONNX files."""

from __future__ import annotations

import hashlib
import importlib.util
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.core.replay import NO_ANSWER, Selection, replay, select_cases
from app.core.replay_store import load_replay, save_replay
from app.core.replay_targets import LocalOnnxTarget, RemoteV2Target, open_target
from app.core.store import Store
from app.core.versions import VersionError, find, inspect_onnx, register, registered
from tests.conftest import DEMO, ROOT


def _server_module():
    spec = importlib.util.spec_from_file_location("onnx_http_server",
                                                  ROOT / "tools" / "onnx_http_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def v2_server() -> Iterator[str]:
    """wine-v2 behind a real v2 HTTP server on an ephemeral port; yields its base URL."""
    server = _server_module().ModelServer(("127.0.0.1", 0), DEMO / "wine-v2.onnx")
    import threading

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_remote_v2_version_answers_like_the_same_model_run_locally(demo_db, v2_server):
    store = Store(demo_db)
    try:
        cases = select_cases(store, Selection(limit=60, controls=40))
    finally:
        store.close()
    remote = open_target(f"v2+http://{v2_server.removeprefix('http://')}/models/wine-v2")
    assert isinstance(remote, RemoteV2Target) and remote.name == "wine-v2"
    try:
        result = replay(cases, [LocalOnnxTarget(DEMO / "wine-v2.onnx"), remote], batch_size=32)
    finally:
        remote.close()
    local, far = result.runs
    assert not far.errors
    assert np.array_equal(local.prediction, far.prediction)
    finite = np.isfinite(local.outputs["probabilities"])
    assert np.allclose(local.outputs["probabilities"][finite], far.outputs["probabilities"][finite],
                       atol=1e-6)
    a, b = result.summaries()
    assert (a.fixed, a.still_failing, a.newly_broken) == (b.fixed, b.still_failing,
                                                           b.newly_broken)


def test_an_unreachable_version_gives_no_verdict_and_bisect_passes_over_it(demo_db):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = Store(demo_db)
    try:
        cases = select_cases(store, Selection(limit=10, controls=5))
    finally:
        store.close()
    down = open_target(f"v2+http://127.0.0.1:{port}/models/wine-v2?connect_timeout_s=1")
    result = replay(cases, [down, LocalOnnxTarget(DEMO / "wine-v1.onnx")])
    s, local = result.summaries()
    assert s.errors == s.unanswered == len(cases)
    assert (s.fixed, s.still_failing, s.newly_broken) == (0, 0, 0)
    assert "cannot connect" in s.unanswered_reason
    assert {result.verdict(i, 0) for i in range(len(cases))} == {NO_ANSWER}
    # Bisect blames the first version known to fail, never the one that was not asked.
    assert local.still_failing > 0
    assert set(result.first_failing()) <= {"wine-v1", None}
    store = Store(demo_db)
    try:
        reopened = load_replay(store, save_replay(store, result))
    finally:
        store.close()
    assert reopened.summaries()[0] == s
    assert reopened.first_failing() == result.first_failing()


def test_inspecting_an_onnx_file_reads_its_identity_from_the_file():
    v = inspect_onnx(DEMO / "wine-v1.onnx")
    data = (DEMO / "wine-v1.onnx").read_bytes()
    assert v.sha256 == hashlib.sha256(data).hexdigest()
    assert v.size_bytes == len(data)
    # 13 means + 13 stds + the MLP's weights and biases, counted from the initializers.
    import onnx

    model = onnx.load(str(DEMO / "wine-v1.onnx"))
    assert v.parameters == sum(int(np.prod(i.dims)) for i in model.graph.initializer) > 26
    assert (v.name, v.version, v.opset) == ("wine-v1", "1.0.0", 17)
    assert v.inputs == ({"name": "features", "type": "float", "shape": ["batch", 13]},)
    assert v.outputs[0]["name"] == "probabilities"


def test_the_registry_keeps_registration_order_and_updates_in_place(workspace, tmp_path):
    store = Store(workspace)
    try:
        for i in (2, 1, 3):
            register(store, str(DEMO / f"wine-v{i}.onnx"))
        assert [v.name for v in registered(store)] == ["wine-v2", "wine-v1", "wine-v3"]
        again = register(store, str(DEMO / "wine-v2.onnx"), version="2.0.1")
        assert again.id == registered(store)[0].id and registered(store)[0].version == "2.0.1"
        remote = register(store, "v2+http://127.0.0.1:8000/models/wine/versions/4")
        assert (remote.kind, remote.name, remote.version) == ("remote", "wine@4", "4")
        assert find(store, "wine-v3").location.endswith("wine-v3.onnx")
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(b"not a model")
        with pytest.raises(VersionError, match="cannot read"):
            register(store, str(bad))
        with pytest.raises(VersionError, match="neither an ONNX file nor a remote"):
            register(store, "system:")
    finally:
        store.close()


def test_registry_survives_reopening(workspace: Path):
    store = Store(workspace)
    register(store, str(DEMO / "wine-v1.onnx"))
    store.close()
    store = Store(workspace, readonly=True)
    try:
        assert [v.parameters for v in registered(store)] == [
            inspect_onnx(DEMO / "wine-v1.onnx").parameters]
    finally:
        store.close()
