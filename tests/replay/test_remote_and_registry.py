"""Replay on a real v2 model server (tools/onnx_http_server.py on 127.0.0.1); the version
registry on real ONNX files."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from app.core.replay import NO_ANSWER, Selection, replay, select_cases
from app.core.replay_store import load_replay, save_replay
from app.core.replay_targets import (
    LocalOnnxTarget,
    RemoteTfServingTarget,
    RemoteV2Target,
    ReplayError,
    open_target,
)
from app.core.store import Store
from app.core.versions import (
    VersionError,
    find,
    inspect_onnx,
    register,
    register_all,
    registered,
    verify_unchanged,
)
from tests.conftest import DEMO
from tests.servers.process import free_port


@pytest.mark.parametrize(("uri", "kind", "name"), [
    ("v2+http://{host}/models/wine-v2", RemoteV2Target, "wine-v2"),
    # The test server speaks TF Serving's REST predict too (instances in, predictions out).
    ("tfserving+http://{host}/wine-v2/versions/1", RemoteTfServingTarget, "wine-v2@1"),
])
def test_a_remote_version_answers_like_the_same_model_run_locally(demo_db, v2_server, uri,
                                                                  kind, name):
    cases = _cases(demo_db, 60, 40)
    remote = open_target(uri.format(host=v2_server.removeprefix("http://")))
    assert isinstance(remote, kind) and remote.name == name
    try:
        result = replay(cases, [LocalOnnxTarget(DEMO / "wine-v2.onnx"), remote], batch_size=32)
    finally:
        remote.close()
    local, far = result.runs
    assert not far.errors
    assert np.array_equal(local.prediction, far.prediction)
    finite = np.isfinite(local.confidence)
    assert np.allclose(local.confidence[finite], far.confidence[finite], atol=1e-6)
    a, b = result.summaries()
    assert (a.fixed, a.still_failing, a.newly_broken) == (b.fixed, b.still_failing,
                                                           b.newly_broken)


def _cases(db: Path, failures: int, controls: int) -> list:
    """The workspace's newest failures and controls, as the window lists them."""
    store = Store(db)
    try:
        return select_cases(store, Selection(limit=failures, controls=controls))
    finally:
        store.close()

def test_a_model_the_server_lacks_is_not_asked_and_a_bad_path_is_refused(demo_db, v2_server):
    cases = _cases(demo_db, 5, 0)
    host = v2_server.removeprefix("http://")
    for uri in (f"tfserving+http://{host}/nope", f"v2+http://{host}/models/nope"):
        missing = open_target(uri)
        try:
            gone = replay(cases, [missing])
        finally:
            missing.close()
        assert gone.summaries()[0].unanswered == len(cases)  # a 404: not asked, not failing
    with pytest.raises(ReplayError, match="does not name a model"):
        open_target(f"tfserving+http://{host}/a/b")


def test_an_unreachable_version_gives_no_verdict_and_bisect_passes_over_it(demo_db):
    port = free_port()  # nobody listens there once the probe socket is closed
    cases = _cases(demo_db, 10, 5)
    down = open_target(f"v2+http://127.0.0.1:{port}/models/wine-v2?connect_timeout_s=1")
    result = replay(cases, [down, LocalOnnxTarget(DEMO / "wine-v1.onnx")])
    s, local = result.summaries()
    assert s.unanswered == len(cases) and s.errors == 0
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


def test_a_server_that_stops_answering_is_not_waited_on_for_every_batch(demo_db):
    from tests.remote.fault_server import FaultServer

    cases = _cases(demo_db, 40, 0)
    silent = FaultServer().start()
    silent.mode, silent.delay_s = "hang", 30.0  # takes the request, never answers in time
    try:
        target = open_target(f"v2+http://127.0.0.1:{silent.port}/models/m?timeout_s=0.5")
        result = replay(cases, [target], batch_size=8)
    finally:
        silent.release.set()
        silent.stop()
    (s,) = result.summaries()
    assert s.unanswered == s.cases == len(cases) and "0.5" in s.unanswered_reason
    # One call timed out (the first); the other four batches were not sent to wait again.
    assert len(silent.bodies) <= 1


def test_a_cancel_ends_the_wait_on_a_silent_server_at_once(demo_db, versions):
    import threading
    import time

    from tests.helpers import wait_until
    from tests.remote.fault_server import FaultServer

    cases = _cases(demo_db, 40, 0)
    silent = FaultServer().start()
    silent.mode, silent.delay_s = "hang", 120.0
    stop = threading.Event()
    # The user cancels once the server has taken the first call (wine-v1 is done by then).
    threading.Thread(target=lambda: wait_until(lambda: bool(silent.bodies), timeout_s=60)
                     and stop.set(), daemon=True).start()
    remote = open_target(f"v2+http://127.0.0.1:{silent.port}/models/m?timeout_s=120")
    try:
        t0 = time.monotonic()
        result = replay(cases, [LocalOnnxTarget(versions[0]), remote], batch_size=8,
                        cancelled=stop.is_set)
        waited = time.monotonic() - t0
    finally:
        remote.close()  # as the CLI and the window do: the call left behind ends with it
        silent.release.set()
        silent.stop()
    # Not the server's 120 s: the call under way is left to end by itself.
    assert waited < 60, f"the cancel was waited on for {waited:.0f} s"
    assert result.cancelled and [r.version for r in result.runs] == ["wine-v1"]
    assert result.summaries()[0].cases == len(cases)
    assert remote.cancelled is None  # handed back with the replay


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
        again = register(store, str(DEMO / "wine-v2.onnx"))
        assert again.id == registered(store)[0].id and len(registered(store)) == 3
        # A version that contradicts the one the file names is refused, the row unchanged.
        with pytest.raises(VersionError, match="contradicts"):
            register(store, str(DEMO / "wine-v2.onnx"), version="2.0.1")
        assert registered(store)[0].version == "2.0.0"
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


def test_two_files_with_one_name_do_not_become_one_version(workspace, tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for folder, i in ((a, 1), (b, 2)):
        (folder / "model.onnx").write_bytes((DEMO / f"wine-v{i}.onnx").read_bytes())
    store = Store(workspace)
    try:
        with pytest.raises(VersionError, match="more than one location would be registered as "
                                               "model"):
            register_all(store, [str(a / "model.onnx"), str(b / "model.onnx")])
        assert registered(store) == []  # all or nothing
        monkeypatch.chdir(a)
        first = register(store, "model.onnx")
        assert first.location == str(a / "model.onnx")  # absolute: replays run from anywhere
        taken = re.escape(f"already registered for {a / 'model.onnx'}")
        with pytest.raises(VersionError, match=taken):
            register(store, str(b / "model.onnx"))
        assert find(store, "model").sha256 == first.sha256
        moved = register(store, str(b / "model.onnx"), replace=True)
        assert moved.id == first.id and find(store, "model").location == str(b / "model.onnx")
        with pytest.raises(VersionError, match=r"nope\.onnx does not exist"):
            register_all(store, [str(DEMO / "wine-v1.onnx"), str(tmp_path / "nope.onnx")])
        assert [v.name for v in registered(store)] == ["model"]
        empty = tmp_path / "empty.onnx"
        empty.write_bytes(b"")
        with pytest.raises(VersionError, match=r"is empty \(0 bytes\), not an ONNX model"):
            register(store, str(empty))
        outputless = tmp_path / "outputless.onnx"
        outputless.write_bytes(onnx.helper.make_model(
            onnx.helper.make_graph([], "g", [], [])).SerializeToString())
        with pytest.raises(VersionError, match="has no graph outputs"):
            register(store, str(outputless))
        with pytest.raises(VersionError, match="names no server"):
            register(store, "v2+http:///models/wine")
    finally:
        store.close()


def test_a_registered_file_changed_since_is_refused_by_replay(workspace, tmp_path, demo_db,
                                                               capsys):
    from app.cli import main

    model = tmp_path / "wine-v1.onnx"
    model.write_bytes((DEMO / "wine-v1.onnx").read_bytes())
    store = Store(demo_db)
    try:
        registered_v = register(store, str(model))
        verify_unchanged(registered_v)
    finally:
        store.close()
    model.write_bytes((DEMO / "wine-v3.onnx").read_bytes())  # retrained in place
    with pytest.raises(VersionError, match="version wine-v1 changed since it was registered"):
        verify_unchanged(registered_v)
    assert main(["replay", "--db", str(demo_db), "--versions", "wine-v1", "--no-save"]) == 2
    assert "changed since it was registered" in capsys.readouterr().err
    # Given by its path instead of its name: held to the same registration.
    assert main(["replay", "--db", str(demo_db), "--versions", str(model), "--no-save"]) == 2
    assert "changed since it was registered" in capsys.readouterr().err
    model.unlink()
    with pytest.raises(VersionError, match="does not exist"):
        verify_unchanged(registered_v)


def test_weights_in_an_external_file_are_part_of_the_version(tmp_path):
    import onnx

    model = onnx.load(str(DEMO / "wine-v1.onnx"))
    onnx.save_model(model, str(tmp_path / "ext.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.weights", size_threshold=0)
    before = inspect_onnx(tmp_path / "ext.onnx")
    assert before.parameters == inspect_onnx(DEMO / "wine-v1.onnx").parameters
    weights = tmp_path / "ext.weights"
    assert before.size_bytes == (tmp_path / "ext.onnx").stat().st_size + weights.stat().st_size
    data = bytearray(weights.read_bytes())
    data[0] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert inspect_onnx(tmp_path / "ext.onnx").sha256 != before.sha256
    weights.unlink()
    with pytest.raises(VersionError, match=r"keeps weights in ext\.weights"):
        inspect_onnx(tmp_path / "ext.onnx")


def test_weights_inside_subgraphs_are_counted(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def branch(name: str, size: int) -> onnx.GraphProto:
        w = numpy_helper.from_array(np.ones((size,), np.float32), f"{name}_w")
        out = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [size])
        return helper.make_graph([helper.make_node("Identity", [f"{name}_w"], [f"{name}_y"])],
                                 name, [], [out], [w])

    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    top = numpy_helper.from_array(np.ones((3,), np.float32), "top")
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", 5),
                            else_branch=branch("else", 7))
    model = helper.make_model(helper.make_graph([node], "g", [cond], [y], [top]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "if.onnx"))
    assert inspect_onnx(tmp_path / "if.onnx").parameters == 3 + 5 + 7


@pytest.mark.parametrize(("uri", "said"), [
    ("v2+http://[::1/models/x", "is not a valid URL"),
    ("v2+http://127.0.0.1:9/x", "does not name a model"),
    ("tfserving+http://[::1/v1/models/x", "is not a valid URL"),
])
def test_a_server_uri_the_replay_would_refuse_is_not_registered(workspace, uri, said):
    # Registered, it would have failed every replay it was ticked in (a malformed IPv6 host
    # even as "internal error: ValueError").
    store = Store(workspace)
    try:
        with pytest.raises(VersionError, match=re.escape(said)):
            register(store, uri)
        assert registered(store) == []
    finally:
        store.close()


def test_a_folder_given_as_a_version_is_said_to_be_a_folder(workspace, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.onnx").write_bytes((DEMO / "wine-v1.onnx").read_bytes())
    store = Store(workspace)
    try:
        with pytest.raises(VersionError, match=r"is a folder, not a model file; e\.g\. .*m\.onnx"):
            register(store, str(tmp_path / "models"))
    finally:
        store.close()


def test_a_server_registered_without_a_version_is_told_how_to_give_one(workspace, capsys):
    from app.cli import main

    bare = "tfserving+http://127.0.0.1:9/v1/models/foo"
    assert main(["versions", "add", "--db", str(workspace), bare]) == 0
    assert "foo is registered without a version: give the one its server serves with " \
           "--version V" in capsys.readouterr().out
    assert main(["versions", "add", "--db", str(workspace), "--version", "3",
                 "tfserving+http://127.0.0.1:9/v1/models/bar"]) == 0
    assert "without a version" not in capsys.readouterr().out


@pytest.mark.parametrize("query", ["accesstoken=SECRETVALUE", "bearer_value=SECRETVALUE"])
def test_a_remote_version_with_a_key_it_does_not_read_is_refused_without_echoing_it(query):
    """It was stored and shown with the version (and never sent): a credential put in the
    query by mistake leaked into the workspace and the lists, and did not even work."""
    for scheme, path in (("v2+http", "/models/m"), ("tfserving+http", "/m")):
        with pytest.raises(ReplayError, match=r"is not a parameter of a \S+ version; it takes "
                           r".*connect_timeout_s") as caught:
            open_target(f"{scheme}://127.0.0.1:1{path}?timeout_s=2&{query}")
        assert "SECRETVALUE" not in str(caught.value)
    # The keys its live probe takes are taken: a URI that `watch` records can be replayed.
    assert open_target("v2+http://127.0.0.1:1/models/m?input=features&timeout_s=2").name == "m"
