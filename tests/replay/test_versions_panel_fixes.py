"""Versions panel fixes, driven as a user drives the panel, offscreen, on real workspaces and
real models: Delete beside another panel's Delete, contracts that cannot be used, a cancelled
check's bar, parameter counts as the registry row writes them, a file changed since it was
registered, and the version it was registered with."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QWidget

from app.core.store import Store
from app.core.versions import register
from app.gui.versions_panel import (
    CELL_COLORS,
    CHANGED,
    CONTRACT_ERROR,
    NO_CONTRACT,
    UNREADABLE,
    VersionsPanel,
)
from tests.conftest import DEMO

CHECK_MS = 120_000  # a contract check measures each model in a fresh process


@pytest.fixture
def panels(qtbot):
    """Panels made by a test, shut down (their workers waited for) at its end, before
    pytest-qt closes and deletes its widgets."""
    made: list[VersionsPanel] = []

    def make(db: Path, **kwargs) -> VersionsPanel:
        p = VersionsPanel(db, **kwargs)
        made.append(p)
        return p

    try:
        yield make
    finally:
        for p in made:
            p.shutdown()


def _names(p: VersionsPanel) -> list[str]:
    return [p.table.item(r, 0).text() for r in range(p.table.rowCount())]


def test_delete_unregisters_in_the_focused_table_beside_another_delete(qtbot, tmp_path,
                                                                      versions):
    """Two Delete shortcuts in one window (the main window holds the Replay panel's too): each
    must act for its own widget only. Window-wide, both matched and neither fired."""
    window = QWidget()
    row = QHBoxLayout(window)
    left = VersionsPanel(tmp_path / "a.db", seed_versions=[str(v) for v in versions])
    right = VersionsPanel(tmp_path / "b.db", seed_versions=[str(v) for v in versions])
    row.addWidget(left)
    row.addWidget(right)
    try:
        window.show()
        window.activateWindow()
        qtbot.waitExposed(window)
        left.table.selectRow(1)
        left.table.setFocus()
        qtbot.waitUntil(left.table.hasFocus)
        with qtbot.waitSignal(left.versions_changed, timeout=5_000):
            qtbot.keyClick(left.table, Qt.Key.Key_Delete)
        assert _names(left) == ["wine-v1", "wine-v3"]
        assert _names(right) == ["wine-v1", "wine-v2", "wine-v3"]  # not the focused table
        right.table.selectRow(0)
        right.table.setFocus()
        qtbot.waitUntil(right.table.hasFocus)
        with qtbot.waitSignal(right.versions_changed, timeout=5_000):
            qtbot.keyClick(right.table, Qt.Key.Key_Delete)
        assert _names(right) == ["wine-v2", "wine-v3"]
        assert _names(left) == ["wine-v1", "wine-v3"]
    finally:
        for p in (left, right):
            p.shutdown()
        window.close()


def _own_folder(tmp_path: Path, stem: str, model: Path, contract: str | None) -> Path:
    """``model`` copied as ``stem.onnx`` into a folder of its own (a folder's
    model.contract.toml would otherwise serve its neighbours), with ``contract`` beside it."""
    folder = tmp_path / stem
    folder.mkdir()
    shutil.copy(model, folder / f"{stem}.onnx")
    if contract is not None:
        (folder / f"{stem}.contract.toml").write_text(contract)
        shutil.copy(DEMO / "validation.csv", folder / "validation.csv")
    return folder / f"{stem}.onnx"


def test_a_contract_or_model_that_cannot_be_used_is_an_error_not_no_contract(
        qtbot, workspace, tmp_path, versions, panels):
    demo_contract = (DEMO / "wine-v1.contract.toml").read_text()
    good = _own_folder(tmp_path, "good", versions[0], demo_contract)
    lots = _own_folder(tmp_path, "lots", versions[1],
                       '[contract]\nmax_parameters = "lots"\n')
    bare = _own_folder(tmp_path, "bare", versions[2], None)
    broken = _own_folder(tmp_path, "broken", versions[0], demo_contract)
    p = panels(workspace, targets=("cpu",), runs=20,
               seed_versions=[str(m) for m in (good, lots, bare, broken)])
    assert _names(p) == ["good", "lots", "bare", "broken"]
    # Replaced on disk after it was registered: the file is no model any more.
    broken.write_bytes(np.random.default_rng(0).bytes(3000))
    with qtbot.waitSignal(p.contracts_checked, timeout=CHECK_MS):
        p.check_button.click()
    assert p.cell_status("good", "cpu") in ("pass", "fail")
    cells = [p.contract_table.item(r, 0) for r in range(4)]
    assert [c.text() for c in cells[1:]] == ["contract error", "no contract",
                                             "cannot read model"]
    assert [p.problem(n) for n in _names(p)] == [None, CONTRACT_ERROR, NO_CONTRACT, UNREADABLE]
    # The reason stays in the tooltip; an error does not wear no contract's grey.
    assert "max_parameters must be a number, not 'lots'" in cells[1].toolTip()
    assert "no contract beside" in cells[2].toolTip()
    assert "cannot read" in cells[3].toolTip() and "ONNX model" in cells[3].toolTip()
    grey = CELL_COLORS[NO_CONTRACT]
    assert cells[2].background().color().name() == grey
    assert cells[1].background().color().name() != grey
    assert cells[3].background().color().name() != grey
    status = p.status.text()
    assert status.startswith("checked 1 of 4 versions; 1 has no contract")
    assert "2 could not be checked: lots (contract error), broken (cannot read model)" in status


def test_a_cancelled_check_leaves_the_bar_where_it_stopped(qtbot, workspace, versions, panels):
    p = panels(workspace, targets=("cpu",), runs=20,
               seed_versions=[str(v) for v in versions])
    job = p.check_contracts()
    assert job is not None
    # Cancel once the first version is done: the worker is already on the second, and stops
    # before the third.
    job.signals.progressed.connect(lambda f: p.cancel_button.click())
    with qtbot.waitSignal(p.contracts_checked, timeout=CHECK_MS) as checked:
        pass
    done = len(checked.args[0])
    assert 1 <= done < 3 and "cancelled before the rest" in p.status.text()
    assert p.progress.value() == int(done / 3 * 1000) < 1000
    # A whole check afterwards fills it.
    with qtbot.waitSignal(p.contracts_checked, timeout=CHECK_MS):
        p.check_contracts()
    assert p.progress.value() == 1000 and "cancelled" not in p.status.text()


def _wide_model(path: Path) -> int:
    """A real classifier of the demo's 13 features through 1,024 hidden units: over a million
    parameters, as any real-sized model has. Returns its parameter count."""
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(shape).astype(np.float32) * 0.01
               for shape in ((13, 1024), (1024, 1024), (1024, 3))]
    names = [f"w{k}" for k in range(len(weights))]
    nodes = [helper.make_node("MatMul", ["features", "w0"], ["h0"]),
             helper.make_node("Relu", ["h0"], ["r0"]),
             helper.make_node("MatMul", ["r0", "w1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(
        nodes, "wide", [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                                      ["batch", 13])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, n) for w, n in zip(weights, names, strict=True)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return sum(w.size for w in weights)


def test_parameter_counts_read_with_thousands_separators(qtbot, workspace, tmp_path, panels):
    model = tmp_path / "wide.onnx"
    parameters = _wide_model(model)
    assert parameters > 1_000_000
    (tmp_path / "wide.contract.toml").write_text(
        "[contract]\nmax_parameters = 20000000\n\n[latency_p95_ms]\ncpu = 1000.0\n")
    p = panels(workspace, targets=("cpu",), runs=20, seed_versions=[str(model)])
    with qtbot.waitSignal(p.contracts_checked, timeout=CHECK_MS):
        p.check_button.click()
    assert p.cell_status("wide", "cpu") == "pass"
    shown = f"{parameters:,}"
    assert p.table.item(0, 3).text() == shown  # the registry row above
    cell = p.contract_table.item(0, 0)
    assert f"params {shown}" in cell.text() and "e+" not in cell.text()
    assert f"parameters: {shown} (limit 20,000,000)" in cell.toolTip()


def test_a_file_changed_since_registration_is_refused_never_passed(qtbot, workspace, tmp_path,
                                                                  versions, panels):
    demo_contract = (DEMO / "wine-v1.contract.toml").read_text()
    model = _own_folder(tmp_path, "wine-v1", versions[0], demo_contract)
    p = panels(workspace, targets=("cpu",), runs=20, seed_versions=[str(model)])
    with qtbot.waitSignal(p.contracts_checked, timeout=CHECK_MS):
        p.check_button.click()
    assert p.cell_status("wine-v1", "cpu") == "pass"
    # Re-exported in place after registration: bytes the registry row does not describe, on
    # which every clause would still pass.
    m = onnx.load(model)
    m.producer_version = "2"
    onnx.save(m, model)
    with qtbot.waitSignal(p.contracts_checked, timeout=CHECK_MS):
        p.check_button.click()
    assert p.cell_status("wine-v1", "cpu") is None and p.problem("wine-v1") == CHANGED
    cell = p.contract_table.item(0, 0)
    assert cell.text() == "changed since registered: register it again"
    assert "changed since it was registered" in cell.toolTip()
    assert cell.background().color().name() == CELL_COLORS[CHANGED] != CELL_COLORS["pass"]
    assert "1 could not be checked: wine-v1 (changed since registered" in p.status.text()


def test_the_version_clause_reads_the_registered_version_when_the_file_has_none(
        qtbot, workspace, tmp_path, versions, panels):
    # A latency limit beside it: a contract of a version clause alone measures nothing and
    # is refused.
    model = _own_folder(tmp_path, "mlp", versions[0],
                        '[contract]\nversion = "1.0.0"\n[latency_p95_ms]\ncpu = 1000.0\n')
    m = onnx.load(model)
    kept = [(e.key, e.value) for e in m.metadata_props if e.key != "version"]
    del m.metadata_props[:]
    for key, value in kept:
        m.metadata_props.add(key=key, value=value)
    onnx.save(m, model)
    store = Store(workspace)
    try:
        register(store, str(model), version="1.0.0")  # versions add --version 1.0.0
    finally:
        store.close()
    p = panels(workspace, targets=("cpu",), runs=20)
    assert p.table.item(0, 1).text() == "1.0.0"
    with qtbot.waitSignal(p.contracts_checked, timeout=CHECK_MS):
        p.check_button.click()
    assert p.cell_status("mlp", "cpu") == "pass"
    assert ("version: 1.0.0 (limit 1.0.0) — the version it was registered with (the file "
            "names none)") in p.contract_table.item(0, 0).toolTip()


def test_the_versions_table_marks_a_file_changed_or_gone_since_registration(
        qtbot, workspace, tmp_path, versions, panels):
    """The table showed the registered sha and size beside a file since replaced or deleted,
    with no mark until a contract check was run."""
    model = tmp_path / "mine.onnx"
    shutil.copy(versions[0], model)
    p = panels(workspace, seed_versions=[str(model)])
    assert _names(p) == ["mine"]
    shutil.copy(versions[2], model)  # another model under the registered path
    p.refresh()
    (name,) = _names(p)
    assert name == "⚠ mine [changed since registered: register it again]"
    assert p.table.item(0, 0).font().bold()
    model.unlink()
    p.refresh()
    assert _names(p) == ["⚠ mine [file missing]"]
