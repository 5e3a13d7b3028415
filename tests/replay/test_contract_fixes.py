"""Contract and registry fixes from the audit, on real models built with ``onnx``, real
onnxruntime in the measuring child and real workspaces: a registered version's own version,
validation files that cannot be judged fairly, contract values of the wrong type, outputs that
are not tensors, sparse weights, fixed batches, several models at once, and a shared contract
file in a folder of several models."""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from app.cli import main
from app.core.contract import (
    FAIL,
    PASS,
    UNSUPPORTED,
    ContractError,
    ModelChanged,
    _measure_in_subprocess,
    check_contract,
    check_registered,
    contract_path_for,
    load_contract,
)
from app.core.store import Store
from app.core.versions import inspect_onnx, register
from tests.conftest import DEMO

RUNS = 20  # latency runs; no figure here is judged against a time


def clauses(check) -> dict:
    return {c.name: c for c in check.clauses}


def _model(path: Path, *, inputs: list, outputs: list, nodes: list, initializers=(),
           sparse=(), meta: dict | None = None) -> Path:
    graph = helper.make_graph(nodes, "m", inputs, outputs, list(initializers),
                              sparse_initializer=list(sparse))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, path)
    return path


def _wine_without_version(path: Path) -> Path:
    """wine-v1 with no version in its metadata (as many exporters leave it)."""
    m = onnx.load(DEMO / "wine-v1.onnx")
    kept = [(p.key, p.value) for p in m.metadata_props if p.key != "version"]
    del m.metadata_props[:]
    for k, v in kept:
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, path)
    return path


def _copy_validation(folder: Path) -> Path:
    shutil.copy(DEMO / "validation.csv", folder / "validation.csv")
    return folder / "validation.csv"


# A target passes only on a latency limit of its own; 1 s is no test of speed.
CPU_LIMIT = '[latency_p95_ms]\ncpu = 1000.0\n'
VERSION_ONLY = '[contract]\nversion = "1.0.0"\n' + CPU_LIMIT
ACCURACY = '[accuracy]\nvalidation = "validation.csv"\nmin = 0.9\n' + CPU_LIMIT


def test_a_registered_version_stands_in_when_the_file_names_none(tmp_path, capsys):
    model = _wine_without_version(tmp_path / "mlp.onnx")
    (tmp_path / "mlp.contract.toml").write_text(VERSION_ONLY)
    store = Store(tmp_path / "w.db")
    try:
        version = register(store, str(model), version="1.0.0")  # versions add --version 1.0.0
    finally:
        store.close()
    (check,) = check_registered(version, ["cpu"], runs=RUNS).targets
    clause = clauses(check)["version"]
    assert check.status == PASS and clause.measured == "1.0.0"
    assert "registered with" in clause.detail
    # A bare file on the command line has no registration: the file's own (none) is judged.
    assert main(["contract", "check", str(model), "--runs", str(RUNS)]) == 1
    assert "fail     version         None (limit 1.0.0)" in capsys.readouterr().out
    # A file that names its version is judged on it, and says so.
    (check,) = check_contract(DEMO / "wine-v1.onnx", ["cpu"], runs=RUNS).targets
    assert clauses(check)["version"].detail == "read from the file"


def test_a_registered_file_that_changed_is_refused_not_measured(tmp_path):
    model = tmp_path / "wine-v1.onnx"
    shutil.copy(DEMO / "wine-v1.onnx", model)
    (tmp_path / "wine-v1.contract.toml").write_text(VERSION_ONLY)
    store = Store(tmp_path / "w.db")
    try:
        version = register(store, str(model))
    finally:
        store.close()
    assert check_registered(version, ["cpu"], runs=RUNS).targets[0].status == PASS
    m = onnx.load(model)
    m.producer_version = "2"  # the version clause would still pass on these bytes
    onnx.save(m, model)
    with pytest.raises(ModelChanged, match=r"changed since it was registered.*register it again"):
        check_registered(version, ["cpu"], runs=RUNS)


def test_a_cell_that_is_not_a_number_is_an_error_naming_its_row_and_column(tmp_path, capsys):
    model = tmp_path / "wine-v1.onnx"
    shutil.copy(DEMO / "wine-v1.onnx", model)
    (tmp_path / "wine-v1.contract.toml").write_text(ACCURACY)
    lines = _copy_validation(tmp_path).read_text().splitlines()
    header = lines[0].split(",")
    row = lines[6].split(",")  # the sixth row after the header
    row[header.index("hue")] = "abc"
    lines[6] = ",".join(row)
    # A blank cell stays a missing value (the demo's stream sends some on purpose).
    blank = lines[2].split(",")
    blank[header.index("ash")] = ""
    lines[2] = ",".join(blank)
    (tmp_path / "validation.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ContractError, match=r"row 6, column hue: 'abc' is not a number"):
        check_contract(model, ["cpu"], runs=RUNS)
    assert main(["contract", "check", str(model), "--runs", str(RUNS)]) == 2
    captured = capsys.readouterr()  # said once: the model's FAILED line
    assert captured.out.count("\n") == 1 and "row 6, column hue" in captured.out
    assert captured.out.startswith(f"{model}: FAILED") and captured.err == ""
    # Without the bad cell the file is measured, the blank row counted as a row with no class.
    row[header.index("hue")] = "0.9"
    lines[6] = ",".join(row)
    (tmp_path / "validation.csv").write_text("\n".join(lines) + "\n")
    acc = clauses(check_contract(model, ["cpu"], runs=RUNS).targets[0])["accuracy"]
    assert "1 gave no class" in acc.detail


def test_a_minimum_accuracy_without_ground_truth_is_bad_input(tmp_path, capsys):
    model = tmp_path / "wine-v1.onnx"
    shutil.copy(DEMO / "wine-v1.onnx", model)
    (tmp_path / "wine-v1.contract.toml").write_text(ACCURACY)
    validation = _copy_validation(tmp_path)
    lines = [",".join(line.split(",")[:-1]) for line in validation.read_text().splitlines()]
    validation.write_text("\n".join(lines) + "\n")
    assert main(["contract", "check", str(model), "--runs", str(RUNS)]) == 2
    out = capsys.readouterr().out
    assert "has no 'label' column" in out and "[accuracy] min" in out
    # Without a minimum the same file is only rows to time on: no ground truth is needed.
    (tmp_path / "wine-v1.contract.toml").write_text(
        '[accuracy]\nvalidation = "validation.csv"\n[latency_p95_ms]\ncpu = 1000.0\n')
    assert check_contract(model, ["cpu"], runs=RUNS).targets[0].status == PASS


def test_integer_labels_outside_the_models_classes_are_refused(tmp_path):
    # wine-v1 declares classes 0,1,2 in its metadata.
    model = tmp_path / "wine-v1.onnx"
    shutil.copy(DEMO / "wine-v1.onnx", model)
    (tmp_path / "wine-v1.contract.toml").write_text(ACCURACY)
    validation = _copy_validation(tmp_path)
    lines = validation.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",7"
    validation.write_text("\n".join(lines) + "\n")
    with pytest.raises(ContractError, match=r"label 7 is not among wine-v1's classes; its "
                                            r"classes are 0\.\.2 \(0, 1, 2\)"):
        check_contract(model, ["cpu"], runs=RUNS)
    # No class names: the width of its scores says how many classes it answers.
    folder = tmp_path / "plain"
    folder.mkdir()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])
    p = helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch", 2])
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [-1.0, 1.0, 1.0, -1.0])
    plain = _model(folder / "plain.onnx", inputs=[x], outputs=[p], initializers=[w],
                   nodes=[helper.make_node("MatMul", ["x", "w"], ["d"]),
                          helper.make_node("Softmax", ["d"], ["p"], axis=1)])
    (folder / "plain.contract.toml").write_text(ACCURACY)
    rows = [(a, b, int(a > b)) for a in range(4) for b in range(4) if a != b]
    (folder / "validation.csv").write_text(
        "a,b,label\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    assert check_contract(plain, ["cpu"], runs=RUNS).targets[0].status == PASS
    (folder / "validation.csv").write_text(
        "a,b,label\n" + "".join(f"{a},{b},{c + 1}\n" for a, b, c in rows))  # shifted by one
    with pytest.raises(ContractError, match=r"label 2 is not among plain's classes; its "
                                            r"classes are 0\.\.1 \(from its output's width\)"):
        check_contract(plain, ["cpu"], runs=RUNS)


@pytest.mark.parametrize(("text", "words"), [
    ("[contract]\nversion = 1.10\n", r"version must be a string in quotes .* not 1\.1$"),
    ("[contract]\nframework = 123\n", "framework must be a string in quotes"),
    ("[contract]\nmax_parameters = 165.9\n", "max_parameters must be a whole number, not 165.9"),
])
def test_contract_values_of_the_wrong_type_are_refused(tmp_path, text, words):
    path = tmp_path / "m.contract.toml"
    path.write_text(text)
    with pytest.raises(ContractError, match=words):
        load_contract(path)


def test_whole_numbers_written_as_floats_are_still_limits(tmp_path):
    path = tmp_path / "m.contract.toml"
    path.write_text('[contract]\nmax_parameters = 2e6\nversion = "1.10"\n')
    contract = load_contract(path)
    assert contract.max_parameters == 2_000_000 and contract.version == "1.10"


def test_outputs_that_are_not_tensors_and_sparse_weights_are_described(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])
    # skl2onnx's ZipMap output: one {class: probability} map per row.
    probs = helper.make_value_info("probs", helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64,
                                   helper.make_tensor_type_proto(TensorProto.FLOAT, []))))
    zipmap = _model(tmp_path / "zipmap.onnx", inputs=[x], outputs=[label, probs], nodes=[
        helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0),
        helper.make_node("ZipMap", ["x"], ["probs"], domain="ai.onnx.ml",
                         classlabels_int64s=[0, 1, 2])])
    assert inspect_onnx(zipmap).signature() == (
        "x float[N,3] -> label int64[N], probs seq(map(int64,float))")
    # A 10x10 weight stored sparse (3 values): counted at its dense size.
    sparse = helper.make_sparse_tensor(
        helper.make_tensor("w", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0]),
        helper.make_tensor("w_idx", TensorProto.INT64, [3], [0, 11, 99]), [10, 10])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    dense = helper.make_tensor("b", TensorProto.FLOAT, [10], [0.0] * 10)
    model = _model(tmp_path / "sparse.onnx",
                   inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
                   outputs=[y], initializers=[dense], sparse=[sparse],
                   nodes=[helper.make_node("MatMul", ["x", "w"], ["h"]),
                          helper.make_node("Add", ["h", "b"], ["y"])])
    described = inspect_onnx(model)
    assert described.parameters == 110
    assert described.signature() == "x float[N,10] -> y float[N,10]"
    (tmp_path / "sparse.contract.toml").write_text("[contract]\nmax_parameters = 50\n")
    (check,) = check_contract(model, ["cpu"], runs=RUNS).targets
    assert check.status == FAIL and clauses(check)["parameters"].measured == 110


def test_a_fixed_batch_above_one_is_unsupported_and_runtime_errors_are_kept_whole(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    model = _model(tmp_path / "batch2.onnx", inputs=[x], outputs=[y],
                   nodes=[helper.make_node("Relu", ["x"], ["y"])])
    (tmp_path / "batch2.contract.toml").write_text("[latency_p95_ms]\ncpu = 1000.0\n")
    (check,) = check_contract(model, ["cpu"], runs=RUNS).targets
    assert check.status == UNSUPPORTED
    assert "fixed batch of 2 rows ([2, 4]); the latency runs send one row" in check.reason
    # What onnxruntime says when one row is sent anyway: every line of it, on one line.
    with pytest.raises(ContractError) as refused:
        _measure_in_subprocess(str(model), "cpu", None, RUNS)
    text = str(refused.value)
    assert "\n" not in text
    assert "for the following indices index: 0 Got: 1 Expected: 2" in text


def test_every_model_and_contract_is_vetted_before_any_is_measured(tmp_path, capsys):
    """One bad model among several is its one error line, said before anything is measured;
    the good ones are still measured and reported (a CI step reading --json gets every
    model's entry), and the exit status says one failed."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    contacted = threading.Event()
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            contacted.set()
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    bare = tmp_path / "bare.onnx"
    shutil.copy(DEMO / "wine-v1.onnx", bare)
    try:
        code = main(["contract", "check", str(DEMO / "wine-v1.onnx"), str(bare),
                     "--targets", f"agent+http://127.0.0.1:{port}", "--runs", str(RUNS)])
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    captured = capsys.readouterr()
    assert code == 2
    # Said at once, before the measuring, and its reason once, in its place in the report.
    assert captured.err == (f"probescope: cannot check {bare} (the reason is in the report); "
                            "measuring the other models first\n")
    assert f"{bare}: FAILED — no contract beside {bare}" in captured.out
    # wine-v1 was still checked against its contract on the target (here: no token for it).
    assert "wine-v1 (1.0.0) against" in captured.out
    assert f"agent+http://127.0.0.1:{port}: UNREACHABLE" in captured.out


def test_a_folder_contract_is_refused_for_a_folder_of_several_models(tmp_path, capsys):
    for v in (1, 3):
        shutil.copy(DEMO / f"wine-v{v}.onnx", tmp_path / f"wine-v{v}.onnx")
    shutil.copy(DEMO / "wine-v1.contract.toml", tmp_path / "model.contract.toml")
    _copy_validation(tmp_path)
    with pytest.raises(ContractError, match=r"also holds wine-v1\.onnx; write wine-v3\.onnx's "
                                            r"contract as wine-v3\.contract\.toml"):
        contract_path_for(tmp_path / "wine-v3.onnx")
    assert main(["contract", "check", str(tmp_path / "wine-v3.onnx")]) == 2
    assert "wine-v3.contract.toml" in capsys.readouterr().out
    # Its own file beside it is found first, as before.
    shutil.copy(DEMO / "wine-v3.contract.toml", tmp_path / "wine-v3.contract.toml")
    assert contract_path_for(tmp_path / "wine-v3.onnx") == tmp_path / "wine-v3.contract.toml"


def test_payload_files_keep_blank_cells_missing_and_refuse_text():
    import pandas as pd

    from probes.base import ProbeError
    from probes.payload import payload_from_frame

    payload = payload_from_frame(pd.DataFrame({"a": [1.0, None, 3.0], "b": ["1", " ", "2.5"]}))
    assert np.isnan(payload.features[1]).all() and payload.features[2].tolist() == [3.0, 2.5]
    with pytest.raises(ProbeError, match=r"rows\.csv: row 2, column b: 'x' is not a number "
                                         r"\(1 more such cell\)"):
        payload_from_frame(pd.DataFrame({"a": [1, 2, 3], "b": ["1", "x", "y"]}),
                           source="rows.csv")
