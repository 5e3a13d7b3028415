"""Labels given by class name (as production logs often hold them) are read through each
version's ``classes`` metadata, as the contract's accuracy reads them; a version without
class names says how many labels it cannot match."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from app.core.domain import Capture, CaptureStatus, TensorBlob
from app.core.replay import Selection, replay, select_case_set
from app.core.replay_store import load_replay, save_replay
from app.core.replay_targets import LocalOnnxTarget
from app.core.store import Store
from probes.payload import load_payload
from tests.conftest import DEMO

NAMES = ["barolo", "grignolino", "barbera"]


def with_classes(model: Path, out: Path) -> Path:
    proto = onnx.load(model)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "classes", ",".join(NAMES)
    onnx.save(proto, out)
    return out


@pytest.fixture
def named_workspace(tmp_path: Path) -> Path:
    """wine-v1's answers to 400 demo rows, labelled by name; a mismatch where it was wrong."""
    payload = load_payload(DEMO / "production.csv")
    rows = np.nan_to_num(payload.features[:400].astype(np.float32))
    labels = [NAMES[int(x)] for x in payload.labels[:400]]
    session = ort.InferenceSession(DEMO / "wine-v1.onnx")
    probs = session.run(None, {session.get_inputs()[0].name: rows})[0]
    captures = [Capture(
        endpoint="log:prod", ts_ns=i + 1, latency_ms=1.0,
        status=CaptureStatus.OK if NAMES[int(probs[i].argmax())] == labels[i]
        else CaptureStatus.MISMATCH,
        inputs=(TensorBlob.from_array("features", rows[i:i + 1]),),
        outputs=(TensorBlob.from_array("probabilities", probs[i:i + 1]),),
        label=labels[i], model_version="1") for i in range(400)]
    db = tmp_path / "named.db"
    store = Store(db)
    try:
        store.write_batch([], captures)
    finally:
        store.close()
    return db


def test_labels_by_name_are_matched_through_the_models_class_names(named_workspace, tmp_path):
    named = with_classes(DEMO / "wine-v1.onnx", tmp_path / "wine-v1-named.onnx")
    store = Store(named_workspace)
    try:
        cases = select_case_set(store, Selection(limit=1000, controls=1000))
        result = replay(cases, [LocalOnnxTarget(named), LocalOnnxTarget(DEMO / "wine-v1.onnx")])
        (producer, nameless) = result.summaries()
        # The model that made these answers: every failure still fails, no control breaks.
        assert producer.failures > 0 and producer.controls > 0
        assert producer.still_failing == producer.failures and producer.newly_broken == 0
        assert producer.unmatched_labels == 0
        # The same model without class names cannot match a label by name, and says so.
        assert nameless.unmatched_labels == 400
        assert result.to_json()["versions"][1]["unmatched_labels"] == 400
        save_replay(store, result)
        reopened = load_replay(store, result.replay_id)
        assert [s.unmatched_labels for s in reopened.summaries()] == [0, 400]
    finally:
        store.close()


def test_the_json_says_where_each_failure_first_fails(named_workspace, tmp_path):
    named = with_classes(DEMO / "wine-v1.onnx", tmp_path / "wine-v1-named.onnx")
    store = Store(named_workspace)
    try:
        cases = select_case_set(store, Selection(limit=1000, controls=1000))
    finally:
        store.close()
    result = replay(cases, [LocalOnnxTarget(named)])
    doc = result.to_json()
    failures = doc["versions"][0]["failures"]
    assert doc["first_failing"] == {"wine-v1-named": failures}
    assert doc["failing_on_no_version"] == 0


def test_the_cli_says_which_version_cannot_match_labels_and_keeps_columns_for_long_names(
        named_workspace, tmp_path, capsys):
    from app.cli import main

    named = with_classes(DEMO / "wine-v1.onnx",
                         tmp_path / "wine-v1-with-a-rather-long-release-name.onnx")
    main(["replay", "--db", str(named_workspace), "--no-save", "--versions", str(named),
          str(DEMO / "wine-v1.onnx")])
    out = capsys.readouterr().out.splitlines()
    header, rows = out[0], out[1:3]
    end_of_cases = header.index("cases") + len("cases")
    assert all(row[:end_of_cases].rstrip()[-1].isdigit() and row[end_of_cases] == " "
               for row in rows)  # each count ends under its heading
    cases = int(rows[1].split()[1])
    assert f"wine-v1: {cases} labels name no class of its model" in "\n".join(out)
