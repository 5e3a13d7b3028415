"""``probescope drift`` as a user runs it: files or a workspace, fast or Evidently, and errors."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from app.cli import main
from app.core.domain import Capture, CaptureStatus, TensorBlob
from app.core.store import Store

T0_NS = 1_700_000_000_000_000_000
STEP_NS = 10_000_000  # 10 ms between captures
FEATURES_END = -1  # production.csv: id, 13 features, label


@pytest.fixture
def halves(tmp_path, demo_dir):
    """Unshifted and shifted stretches of the demo's production stream, as files."""
    production = pd.read_csv(demo_dir / "production.csv")
    calm, shifted = tmp_path / "calm.csv", tmp_path / "shifted.csv"
    production.iloc[:500].to_csv(calm, index=False)
    production.iloc[1000:2000].to_csv(shifted, index=False)
    return demo_dir / "reference.csv", calm, shifted


def _json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _verdicts(report: dict) -> dict:
    return {c["name"]: (c["method"], c["threshold"], c["drifted"]) for c in report["columns"]}


def test_files_fast_and_evidently_agree_on_shifted_and_unshifted_data(halves, capsys):
    reference, calm, shifted = halves
    for current, drifted in ((calm, set()), (shifted, {"alcohol", "color_intensity"})):
        argv = ["drift", "--reference", str(reference), "--current", str(current), "--json"]
        fast = _json(capsys, argv)
        full = _json(capsys, [*argv, "--evidently"])
        assert set(fast) >= {"columns", "share_drifted"}
        assert set(fast["columns"][0]) >= {"name", "method", "score", "threshold", "drifted"}
        assert _verdicts(fast) == _verdicts(full)
        assert fast["share_drifted"] == pytest.approx(full["share_drifted"])
        for f, e in zip(fast["columns"], full["columns"], strict=True):
            assert f["score"] == pytest.approx(e["score"], rel=1e-9, abs=1e-300)
        assert drifted <= {c["name"] for c in fast["columns"] if c["drifted"]}
        if not drifted:
            assert fast["share_drifted"] == 0.0


def test_an_html_report_never_replaces_a_file_that_is_not_one(halves, capsys):
    reference, calm, _ = halves
    before = calm.read_bytes()
    argv = ["drift", "--reference", str(reference), "--current", str(calm), "--evidently"]
    assert main([*argv, "--html", str(calm)]) == 2  # the data file, given by mistake
    assert "is not an HTML report; give a new file name" in capsys.readouterr().err
    assert calm.read_bytes() == before
    out = calm.with_name("drift.html")
    for _ in range(2):  # an earlier report is replaced
        assert main([*argv, "--html", str(out)]) == 0
    assert out.read_text()[:200].lower().lstrip().startswith(("<!doctype html", "<html"))


def test_time_and_index_columns_are_not_features(halves, capsys, tmp_path):
    reference, calm, _ = halves
    for path, start in ((reference, 1.7e9), (calm, 1.8e9)):  # epoch times: always "drift"
        frame = pd.read_csv(path)
        frame.insert(0, "time", start + np.arange(len(frame)))
        frame.to_csv(tmp_path / path.name)  # with pandas' index, as to_csv() writes it
    report = _json(capsys, ["drift", "--reference", str(tmp_path / reference.name),
                            "--current", str(tmp_path / calm.name), "--json"])
    names = {c["name"] for c in report["columns"]}
    assert "time" not in names and "Unnamed: 0" not in names and "alcohol" in names


def test_files_as_a_table_for_people(halves, capsys):
    reference, _, shifted = halves
    assert main(["drift", "--reference", str(reference), "--current", str(shifted)]) == 0
    out = capsys.readouterr().out
    assert "alcohol" in out and "DRIFT" in out and "share drifted:" in out


@pytest.fixture
def recorded(tmp_path, demo_dir):
    """A workspace holding 1,000 captures of the demo stream's drifted stretch, 10 ms apart."""
    rows = pd.read_csv(demo_dir / "production.csv").iloc[1000:2000]
    features = rows.iloc[:, 1:FEATURES_END].to_numpy(np.float32)
    uri = "onnx:wine-v1.onnx?provider=cpu"
    captures = [Capture(uri, T0_NS + i * STEP_NS, 1.0, CaptureStatus.OK,
                        inputs=(TensorBlob.from_array("input", f.reshape(1, -1)),),
                        prediction=str(label))
                for i, (f, label) in enumerate(zip(features, rows["label"], strict=True))]
    db = tmp_path / "ws.db"
    store = Store(db)
    store.write_batch([], captures)
    store.close()
    return db, uri


def test_an_endpoints_window_fast_and_evidently(recorded, capsys):
    db, uri = recorded
    assert main(["drift", "--db", str(db), "--endpoint", "wine-v1", "--set-reference",
                 "demo"]) == 0
    assert "demo reference" in capsys.readouterr().out
    base = ["drift", "--db", str(db), "--endpoint", "wine-v1", "--window", "10m", "--json"]
    fast = _json(capsys, base)
    assert fast["endpoint"] == uri and fast["rows"]["current"] == 1000
    assert {"alcohol", "color_intensity"} <= {c["name"] for c in fast["columns"] if c["drifted"]}
    full = _json(capsys, [*base, "--evidently"])
    assert _verdicts(fast) == _verdicts(full)
    html = db.parent / "ws-drift-reports"
    assert full["html"].startswith(str(html)) and len(list(html.glob("*.html"))) == 1
    store = Store(db)
    (saved,) = store.drift_evaluations(uri, source="evidently")
    assert saved["share_drifted"] == pytest.approx(full["share_drifted"])
    assert saved["report_path"] == full["html"]
    store.close()


def test_the_window_counts_back_from_the_last_capture(recorded, capsys):
    db, _ = recorded
    main(["drift", "--db", str(db), "--endpoint", "wine", "--set-reference", "demo"])
    capsys.readouterr()
    report = _json(capsys, ["drift", "--db", str(db), "--endpoint", "wine", "--window", "2s",
                            "--json"])
    assert report["rows"]["current"] == 201  # both ends included, 10 ms apart


def test_a_reference_from_the_endpoints_own_captures(recorded, capsys):
    db, _ = recorded
    main(["drift", "--db", str(db), "--endpoint", "wine", "--set-reference", "demo"])
    first = datetime.fromtimestamp(T0_NS / 1e9, UTC)
    until = datetime.fromtimestamp((T0_NS + 499 * STEP_NS) / 1e9, UTC)
    spec = f"captures:{first.isoformat()}..{until.isoformat()}"
    assert main(["drift", "--db", str(db), "--endpoint", "wine", "--set-reference", spec]) == 0
    assert "captures of" in capsys.readouterr().out
    report = _json(capsys, ["drift", "--db", str(db), "--endpoint", "wine", "--window", "4.9s",
                            "--json"])
    assert report["rows"] == {"reference": 500, "current": 491}  # both ends included
    names = [c["name"] for c in report["columns"]]
    assert names[0] == "alcohol" and names[-1] == "prediction"  # names kept from the demo


@pytest.mark.parametrize(("argv", "message"), [
    (["--reference", "nope.csv", "--current", "nope.csv"], "does not exist"),
    (["--current", "x.csv"], "give --reference FILE and --current FILE"),
    (["--db", "{db}"], "--db needs --endpoint"),
    (["--db", "{db}", "--endpoint", "resnet"], "no endpoint matching 'resnet'"),
    (["--db", "{db}", "--endpoint", "wine"], "has no drift reference"),
    (["--db", "{db}", "--endpoint", "wine", "--window", "soon"], "not a duration"),
    (["--db", "{db}.typo", "--endpoint", "wine"], "no workspace at"),
    (["--db", "{db}", "--endpoint", "wine", "--set-reference", "{narrow}"],
     "the reference has 2 input columns (alcohol, malic_acid)"),
    (["--db", "{db}", "--endpoint", "wine", "--set-reference", "{header_only}"],
     "holds no rows"),
    (["--db", "{db}", "--endpoint", "wine", "--set-reference",
      "captures:2024-03-01T12:00Z..2024-03-01T06:00Z"], "FROM is after TO"),
    (["--db", "{db}", "--endpoint", "wine", "--set-reference", "captures:0001-01-01.."],
     "outside the times a workspace holds"),
    (["--db", "{db}", "--endpoint", "wine", "--set-reference", "captures:9999-12-31T23:59.."],
     "outside the times a workspace holds"),
    (["--reference", "{narrow}", "--current", "{narrow}", "--html", "x.html"],
     "add --evidently"),
    (["--reference", "{header_only}", "--current", "{narrow}"], "the reference holds no rows"),
])
def test_mistakes_print_one_line_and_exit_2(recorded, capsys, argv, message, demo_dir):
    db, _ = recorded
    reference = pd.read_csv(demo_dir / "reference.csv")
    narrow, header_only = db.parent / "narrow.csv", db.parent / "header.csv"
    reference[["alcohol", "malic_acid"]].to_csv(narrow, index=False)
    reference.iloc[:0].to_csv(header_only, index=False)
    assert main(["drift", *[a.format(db=db, narrow=narrow, header_only=header_only)
                            for a in argv]]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_the_gui_entry_points_report_progress_and_store_the_report(recorded):
    from app.core.drift_window import endpoint_drift, endpoint_report
    from app.core.references import demo_reference, set_reference

    db, uri = recorded
    store = Store(db)
    set_reference(store, uri, demo_reference())
    store.close()
    fast = endpoint_drift(db, "wine", 600)
    assert fast.result.column("prediction").note.startswith("not tested: the reference has no")
    seen: list[float] = []
    full = endpoint_report(db, "wine", 600, progress=seen.append)
    assert seen[-1] == 1.0 and full.html_path.is_file()
    assert [c.drifted for c in full.result.columns] == [c.drifted for c in fast.result.columns]
    store = Store(db)
    assert store.drift_evaluations(uri, source="evidently")[0]["id"] == full.evaluation_id
    store.close()
    assert not (db.parent / "ws.db.typo").exists()


def test_times_without_a_zone_are_utc_as_import_reads_them(recorded, capsys, monkeypatch):
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        db, uri = recorded
        first = datetime.fromtimestamp(T0_NS / 1e9, UTC).replace(tzinfo=None)
        until = datetime.fromtimestamp((T0_NS + 99 * STEP_NS) / 1e9, UTC).replace(tzinfo=None)
        spec = f"captures:{first.isoformat()}..{until.isoformat()}"  # no zone
        assert main(["drift", "--db", str(db), "--endpoint", "wine", "--set-reference",
                     spec]) == 0
        store = Store(db)
        try:
            saved = store.drift_reference(uri)
        finally:
            store.close()
        assert (saved["start_ns"], saved["end_ns"]) == (T0_NS // 1000 * 1000,
                                                        (T0_NS + 99 * STEP_NS) // 1000 * 1000)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_columns_only_one_file_has_are_listed_as_not_tested(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    cur = pd.DataFrame({"a": rng.normal(size=200), "extra": rng.normal(size=200)})
    ref_path, cur_path = tmp_path / "ref.csv", tmp_path / "cur.csv"
    ref.to_csv(ref_path, index=False)
    cur.to_csv(cur_path, index=False)
    for evidently in ([], ["--evidently"]):  # the same columns listed either way
        report = _json(capsys, ["drift", "--reference", str(ref_path), "--current",
                                str(cur_path), "--json", *evidently])
        notes = {c["name"]: c.get("note") for c in report["columns"]}
        assert notes["b"] == "not tested: not in the current data"
        assert notes["extra"] == "not tested: not in the reference"
        assert notes["a"] is None


def test_numbers_on_one_side_and_text_on_the_other_are_set_aside_not_fatal(tmp_path, capsys):
    """Evidently itself fails the whole report on such a column (a numpy TypeError): both
    paths set it aside, saying why, and test the rest."""
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"a": rng.normal(size=300), "mixed": [f"v{i % 7}" for i in range(300)]})
    cur = pd.DataFrame({"a": rng.normal(size=300), "mixed": rng.normal(size=300)})
    ref_path, cur_path = tmp_path / "ref.csv", tmp_path / "cur.csv"
    ref.to_csv(ref_path, index=False)
    cur.to_csv(cur_path, index=False)
    for evidently in ([], ["--evidently"]):
        report = _json(capsys, ["drift", "--reference", str(ref_path), "--current",
                                str(cur_path), "--json", *evidently])
        notes = {c["name"]: c.get("note") for c in report["columns"]}
        assert notes["mixed"] == "not tested: numerical in current data but not in reference"
        assert notes["a"] is None


def test_huge_values_still_show_a_shift_and_print_no_warnings(tmp_path, capsys):
    """Near 1e200 the std's squares overflowed to inf: a 5-sigma shift read as score 0."""
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"v": rng.normal(size=2000) * 1e200})
    cur = pd.DataFrame({"v": (rng.normal(size=2000) + 5) * 1e200})
    ref_path, cur_path = tmp_path / "ref.parquet", tmp_path / "cur.npy"
    ref.to_parquet(ref_path)
    np.save(cur_path, cur.to_numpy())  # .npy columns are x0, ...: rename the reference's too
    ref.rename(columns={"v": "x0"}).to_parquet(ref_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning fails the run
        report = _json(capsys, ["drift", "--reference", str(ref_path), "--current",
                                str(cur_path), "--json"])
    (column,) = report["columns"]
    assert column["method"] == "wasserstein" and column["drifted"]


def test_a_reference_in_another_column_order_is_matched_by_name_to_the_payloads(
        tmp_path, demo_dir, capsys):
    """Captures carry values by position; a probe sending a payload file knows their names.
    A reference file with the same columns in another order must not compare alcohol with
    proline: its columns are kept in the order the payload sends them."""
    production = pd.read_csv(demo_dir / "production.csv")
    payload = tmp_path / "payload.csv"
    production.to_csv(payload, index=False)
    features = production.iloc[1000:2000, 1:FEATURES_END]
    uri = f"onnx:wine-v1.onnx?provider=cpu&payload={payload}"
    store = Store(tmp_path / "ws.db")
    store.write_batch([], [Capture(uri, T0_NS + i * STEP_NS, 1.0, CaptureStatus.OK,
                                   inputs=(TensorBlob.from_array(
                                       "input", f.reshape(1, -1).astype(np.float32)),))
                           for i, f in enumerate(features.to_numpy())])
    store.close()
    reference = pd.read_csv(demo_dir / "reference.csv")
    shuffled = tmp_path / "shuffled.csv"
    reference[["id", *reversed(features.columns), "label"]].to_csv(shuffled, index=False)
    db = str(tmp_path / "ws.db")
    window = ["drift", "--db", db, "--endpoint", "wine", "--window", "10m", "--json"]

    assert main(["drift", "--db", db, "--endpoint", "wine", "--set-reference",
                 str(demo_dir / "reference.csv")]) == 0
    assert "matched by name" not in capsys.readouterr().out  # already in the payload's order
    in_order = _json(capsys, window)
    assert main(["drift", "--db", db, "--endpoint", "wine", "--set-reference",
                 str(shuffled)]) == 0
    assert "matched by name to the order the probe's payload sends them: alcohol, malic_acid" \
        in capsys.readouterr().out
    store = Store(tmp_path / "ws.db")
    assert tuple(store.drift_reference(uri)["columns"]) == tuple(features.columns)
    store.close()
    reordered = _json(capsys, window)
    by_name = {c["name"]: c["drifted"] for c in in_order["columns"]}
    assert {c["name"]: c["drifted"] for c in reordered["columns"]} == by_name
    assert 0 < sum(by_name.values()) < len(features.columns)  # some drift, not every column


def test_a_payload_given_as_a_flag_names_the_inputs_for_references_and_overrides(
        tmp_path, demo_dir, capsys):
    """``watch --payload FILE`` leaves the file out of the endpoint's URI; its probe records
    the names it sends. A reversed reference set or given once (--reference) is matched to
    them, and a reference of the endpoint's own captures is named by them, not x0, x1..."""
    payload = tmp_path / "calm.csv"
    pd.read_csv(demo_dir / "production.csv").iloc[:300].to_csv(payload, index=False)
    db = str(tmp_path / "ws.db")
    model = demo_dir / "wine-v1.onnx"
    assert main(["watch", f"onnx:{model}?provider=cpu", "--payload", str(payload),
                 "--rate", "0", "--seconds", "1", "--db", db, "--json"]) == 0
    capsys.readouterr()
    reference = pd.read_csv(demo_dir / "reference.csv")
    features = [c for c in reference.columns if c not in ("id", "label")]
    reversed_file = tmp_path / "reversed.csv"
    reference[["id", *reversed(features), "label"]].to_csv(reversed_file, index=False)
    window = ["drift", "--db", db, "--endpoint", "wine", "--window", "1h", "--json"]

    in_order = _json(capsys, [*window, "--reference", str(demo_dir / "reference.csv")])
    given_reversed = _json(capsys, [*window, "--reference", str(reversed_file)])
    assert main(["drift", "--db", db, "--endpoint", "wine", "--set-reference",
                 str(reversed_file)]) == 0
    assert "matched by name" in capsys.readouterr().out
    set_reversed = _json(capsys, window)
    by_name = {c["name"]: c["drifted"] for c in in_order["columns"]}
    assert {c["name"]: c["drifted"] for c in given_reversed["columns"]} == by_name
    assert {c["name"]: c["drifted"] for c in set_reversed["columns"]} == by_name

    other = tmp_path / "own.db"
    assert main(["watch", f"onnx:{model}?provider=cpu", "--payload", str(payload),
                 "--rate", "0", "--seconds", "1", "--db", str(other), "--json"]) == 0
    capsys.readouterr()
    assert main(["drift", "--db", str(other), "--endpoint", "wine", "--set-reference",
                 "captures:..", ]) == 0
    capsys.readouterr()
    own = _json(capsys, ["drift", "--db", str(other), "--endpoint", "wine", "--window", "1h",
                         "--json"])
    assert [c["name"] for c in own["columns"]][:2] == ["alcohol", "malic_acid"]


def test_a_recorded_run_leaves_drift_history_for_the_window(tmp_path, demo_dir, capsys):
    """``watch`` into a workspace whose endpoint has a reference evaluates drift as the window
    does (and once more at the end), so the window's Drift tab shows the run."""
    db = tmp_path / "ws.db"
    model = f"onnx:{demo_dir / 'wine-v1.onnx'}?provider=cpu"
    payload = str(demo_dir / "production.csv")
    argv = ["watch", model, "--payload", payload, "--rate", "200", "--seconds", "1",
            "--db", str(db), "--json"]
    assert main(argv) == 0
    assert main(["drift", "--db", str(db), "--endpoint", "wine", "--set-reference", "demo"]) == 0
    store = Store(db)
    assert store.drift_evaluations(model) == []  # none before a reference was set
    store.close()
    assert main(argv) == 0
    capsys.readouterr()
    store = Store(db)
    try:
        (evaluation, *_) = store.drift_evaluations(model, source="fast")
    finally:
        store.close()
    assert 0 <= evaluation["share_drifted"] <= 1 and evaluation["rows_current"] > 0


def test_an_endpoint_of_metrics_only_gets_no_reference(tmp_path, capsys):
    db = tmp_path / "ws.db"
    store = Store(db)
    store.endpoint_id("system:")
    store.close()
    assert main(["drift", "--db", str(db), "--endpoint", "system:", "--set-reference",
                 "demo"]) == 2
    err = capsys.readouterr().err
    assert "records metrics, not model inputs" in err and len(err.strip().splitlines()) == 1
    store = Store(db)
    assert store.drift_reference("system:") is None
    store.close()


def test_a_folder_given_as_the_workspace_is_refused_in_every_commands_words(recorded, capsys):
    folder = recorded[0].parent
    assert main(["drift", "--db", str(folder), "--endpoint", "wine"]) == 2
    err = capsys.readouterr().err
    assert err == (f"probescope: {folder} is a folder; give a workspace file such as "
                   f"{folder / 'workspace.db'}\n")
    assert main(["replay", "--db", str(folder), "--endpoint", "wine", "--no-save"]) == 2
    assert capsys.readouterr().err == err
    assert main(["drift", "--db", str(folder), "--endpoint", "wine", "--set-reference",
                 "demo"]) == 2
    assert capsys.readouterr().err == err
    assert not (folder / "workspace.db").exists()
