"""PDF incident reports read back with pypdf: a demo incident's report, a bare one, page sizes,
cancelling, a worker thread, and paths that cannot be written."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
from pypdf import PdfReader

from app.cli import main
from app.core.domain import Metric
from app.core.incidents import IncidentError
from app.core.store import Store
from app.report import ReportCancelled, ReportError, write_report
from tests.incidents.conftest import NS, T0, write_requests

ROOT = Path(__file__).resolve().parents[2]


def _pages(path: Path) -> list[str]:
    # pypdf reads Qt's word spacing as tabs; words are what matter.
    return [" ".join(page.extract_text().split()) for page in PdfReader(path).pages]


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_a_demo_incident_report_reads_back_as_text(qapp, demo_incident, tmp_path):
    db, incident_id = demo_incident
    progress: list[float] = []
    out = write_report(db, incident_id, tmp_path / "incident.pdf", progress=progress.append)
    pages = _pages(out)
    text = "\n".join(pages)
    store = Store(db, readonly=True)
    endpoint = store.incident(incident_id)["endpoint"]
    store.close()
    assert len(pages) >= 2
    assert f"Incident #{incident_id}: Error-rate burst" in pages[0]
    assert _squash(endpoint) in _squash(pages[0])  # the URI may wrap, but it is all there
    for title in ("Figure 1. Latency per request", "Figure 2. Throughput and failures",
                  "Figure 3. Memory", "Drift by feature", "Failures in the window", "Notes",
                  "Reproducibility", "Model sha256", "onnxruntime"):
        assert title in text, title
    assert "alcohol" in text  # a drifted feature named on the heat map
    # wine-v1's handover contract sits beside it: the clauses a file can answer are checked.
    assert "Contract status" in text and "parameters pass" in text
    assert all(f"Page {i} of {len(pages)}" in p for i, p in enumerate(pages, start=1))
    # The failures table spans pages; its header row is on each of them.
    assert sum("Time (UTC)" in p and "Inputs" in p for p in pages) >= 2
    assert "Opened:" in text  # the rule's own note
    assert progress[-1] == 1.0 and progress == sorted(progress)
    assert PdfReader(out).metadata.title.startswith(f"Incident #{incident_id}")


def test_an_incident_without_failures_drift_or_replay_still_renders(qapp, workspace, tmp_path):
    ep = "onnx:quiet.onnx"
    store = Store(workspace)
    store.set_endpoint_info(ep, slo_ms=5.0)
    write_requests(store, ep, 0, 120, latency_ms=7.0)
    incident_id = store.insert_incident(
        ep, rule="latency", severity="warning", status="open", opened_ns=T0 + 40 * NS,
        trigger_ns=T0 + 45 * NS, value=7.0, threshold=5.0, summary="Latency above SLO",
        details={"detail": "p95 7.00 ms over 30 s; SLO 5 ms", "unit": "ms"})
    store.close()
    pages = _pages(write_report(workspace, "latest", tmp_path / "quiet.pdf"))
    text = "\n".join(pages)
    assert f"Incident #{incident_id}: Latency above SLO" in text
    assert "No failed requests were captured in the incident window." in text
    assert "No notes." in text
    assert "Drift by feature" not in text and "Replay results" not in text
    assert "Figure 3" not in text  # no memory samples, no memory figure
    assert "SLO 5 ms" in text  # the SLO line's legend on the latency plot


def test_letter_paper_is_letter_sized(qapp, demo_incident, tmp_path):
    db, incident_id = demo_incident
    out = write_report(db, incident_id, tmp_path / "letter.pdf", page_size="letter")
    box = PdfReader(out).pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (612, 792)
    a4 = PdfReader(write_report(db, incident_id, tmp_path / "a4.pdf")).pages[0].mediabox
    assert (round(float(a4.width)), round(float(a4.height))) == (595, 842)


def test_a_cancelled_report_leaves_no_file(qapp, demo_incident, tmp_path):
    db, incident_id = demo_incident
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 2  # part-way through the painting

    with pytest.raises(ReportCancelled):
        write_report(db, incident_id, tmp_path / "c.pdf", cancelled=cancelled)
    assert list(tmp_path.glob("*.pdf")) == [] and list(tmp_path.glob(".probescope-*")) == []


def test_a_report_can_be_written_from_a_worker_thread(qapp, demo_incident, tmp_path):
    db, incident_id = demo_incident
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(
        write_report(db, incident_id, tmp_path / "worker.pdf")))
    worker.start()
    worker.join(60)
    assert result and "Error-rate burst" in _pages(tmp_path / "worker.pdf")[0]


def test_unwritable_paths_fail_with_one_clear_line(qapp, demo_incident, tmp_path, capsys):
    db, incident_id = demo_incident
    with pytest.raises(ReportError, match=r"folder .* does not exist"):
        write_report(db, incident_id, tmp_path / "missing" / "r.pdf")
    with pytest.raises(ReportError, match="it is a folder"):
        write_report(db, incident_id, tmp_path)
    if Path("/proc/self").is_dir():  # a folder that says it is writable but takes no new file
        with pytest.raises(ReportError, match=r"cannot write the report to /proc/r\.pdf: ") as e:
            write_report(db, incident_id, Path("/proc/r.pdf"))
        assert ".probescope-report-" not in str(e.value)  # the user's path, not our temp file
    code = main(["report", "--db", str(db), "--incident", str(incident_id),
                 "--out", str(tmp_path / "missing" / "r.pdf")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("probescope: cannot write the report to")
    assert "Traceback" not in err


def test_a_report_never_replaces_a_file_that_is_not_a_pdf(qapp, demo_incident, tmp_path,
                                                           capsys):
    db, incident_id = demo_incident
    before = db.read_bytes()
    assert main(["report", "--db", str(db), "--incident", str(incident_id),
                 "--out", str(db)]) == 2  # the workspace itself, given by mistake
    assert "is not a PDF; give a new file name (nothing was overwritten)" in (
        capsys.readouterr().err)
    assert db.read_bytes() == before
    out = tmp_path / "r.pdf"
    for _ in range(2):  # an earlier report is replaced, and stays readable by others
        write_report(db, incident_id, out)
    assert out.stat().st_mode & 0o777 == 0o644 and out.read_bytes().startswith(b"%PDF-")


def test_an_unknown_incident_is_named_in_the_error(qapp, demo_incident, tmp_path, capsys):
    db, _ = demo_incident
    with pytest.raises(IncidentError, match="no incident 999"):
        write_report(db, 999, tmp_path / "r.pdf")
    assert main(["report", "--db", str(db), "--incident", "999",
                 "--out", str(tmp_path / "r.pdf")]) == 2
    assert "no incident 999" in capsys.readouterr().err


def test_the_cli_writes_the_latest_incident(qapp, demo_incident, tmp_path, capsys):
    db, _ = demo_incident
    store = Store(db, readonly=True)
    latest = store.incidents(limit=1)[0]["id"]
    store.close()
    out = tmp_path / "cli.pdf"
    assert main(["report", "--db", str(db), "--incident", "latest", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert f"Incident #{latest}:" in _pages(out)[0]
    assert Metric.LATENCY_MS in "\n".join(_pages(out))  # the figure's query names its series


def test_replays_of_the_windows_failures_appear_with_their_versions(qapp, demo_incident,
                                                                   tmp_path):
    db, incident_id = demo_incident
    store = Store(db)
    incident = store.incident(incident_id)
    failed = store.captures_between(incident["endpoint"], incident["opened_ns"],
                                    incident["updated_ns"], failed=True, limit=3,
                                    with_tensors=False)
    passing = store.captures_between(incident["endpoint"], incident["opened_ns"],
                                     incident["updated_ns"], failed=False, limit=2,
                                     with_tensors=False)
    from app.core.domain import Capture, CaptureStatus

    store.write_batch([], [Capture(endpoint="onnx:elsewhere", ts_ns=incident["opened_ns"],
                                   latency_ms=1.0, status=CaptureStatus.MISMATCH)])
    (elsewhere,) = store.captures_between("onnx:elsewhere", 0, 2**62, limit=1,
                                          with_tensors=False)
    # Three failures of the window, two passing controls, one failure from elsewhere.
    cases = [(i, sc.id, False, None) for i, sc in enumerate(failed)]
    cases += [(3, passing[0].id, True, None), (4, passing[1].id, True, None),
              (5, elsewhere.id, False, None)]
    # wine-v1 still fails all three and breaks a control; wine-v2 fixes two; far-v3's server
    # was down. Every version fails the failure from elsewhere, which is not this window's.
    results = [(i, 0, "0", 0.5, 0.1, None, int(i != 4), None) for i in range(6)]
    results += [(i, 1, "1", 0.9, 0.1, None, int(i in (2, 5)), None) for i in range(6)]
    results += [(i, 2, None, None, None, "cannot connect", None, None) for i in range(6)]
    store.save_replay({"created_ns": incident["updated_ns"], "title": "bisect", "selection": "{}",
                       "versions": json.dumps([{"name": "wine-v1"}, {"name": "wine-v2"},
                                               {"name": "far-v3"}]),
                       "criteria": "{}"}, cases, results)
    store.close()
    text = "\n".join(_pages(write_report(db, incident_id, tmp_path / "replay.pdf")))
    assert "Replay results" in text
    # Failures of the window, fixed, still failing, no answer; controls newly broken.
    assert "wine-v1 3 0 3 0 1 of 2" in text and "wine-v2 3 2 1 0 0 of 2" in text
    assert "far-v3 3 0 0 3 0 of 2" in text  # not asked: neither failing nor fixed


def test_the_window_s_job_runner_exports_with_progress(qtbot, demo_incident, tmp_path):
    # How File > Export incident report runs it: a Job on a pool thread, progress and the
    # result back through queued signals.
    from app.gui.jobs import Job, JobRunner

    db, incident_id = demo_incident
    out = tmp_path / "from-window.pdf"
    runner = JobRunner()
    job = Job(lambda progress, cancelled: write_report(db, incident_id, out,
                                                       progress=progress, cancelled=cancelled))
    seen: list[float] = []
    job.signals.progressed.connect(seen.append)
    with qtbot.waitSignal(job.signals.finished, timeout=60_000) as finished:
        runner.start(job)
    assert finished.args == [out] and seen[-1] == 1.0
    assert f"Incident #{incident_id}" in _pages(out)[0]
    runner.shutdown()


def test_a_flapping_incident_s_automatic_notes_are_folded(qapp, workspace, tmp_path):
    from app.core.incident_rules import RuleConfig
    from app.core.incidents import evaluate_range

    ep = "onnx:flappy.onnx"
    store = Store(workspace)
    for k in range(10):  # ten bursts, each cleared and then reopened (see test_rules)
        write_requests(store, ep, k * 140, k * 140 + 40, failure_share=0.4)
        write_requests(store, ep, k * 140 + 40, k * 140 + 140)
    evaluate_range(store, T0, T0 + 1400 * NS, defaults=RuleConfig(disabled=("down",)))
    [incident] = store.incidents()
    store.add_incident_note(incident["id"], "upstream labeller restarted", author="ann")
    store.close()
    text = "\n".join(_pages(write_report(workspace, incident["id"], tmp_path / "flap.pdf")))
    # 9 reopenings and 10 clearings: the first three and the last three are shown.
    assert "13 more automatic Cleared/Reopened notes (the rule flapped)" in text
    assert text.count("Reopened:") == 2 and "upstream labeller restarted" in text


def test_the_report_is_the_same_from_any_folder(qapp, demo_incident, tmp_path, monkeypatch):
    from app.core.versions import register, sha256_of

    db, incident_id = demo_incident
    store = Store(db)
    endpoint = store.incident(incident_id)["endpoint"]
    model = endpoint.split(":", 1)[1].split("?", 1)[0]
    assert not Path(model).is_absolute()  # as the demo probes it: relative to where it ran
    register(store, str(Path(model).resolve()))  # the registry keeps it absolute
    store.close()
    monkeypatch.chdir(tmp_path)  # exported from another folder
    text = "\n".join(_pages(write_report(db, incident_id, tmp_path / "r.pdf")))
    assert sha256_of(ROOT / model) in _squash(text)
    assert "not readable here" not in text and "Contract status" in text


def test_an_incident_resolved_by_hand_is_not_still_active(qapp, demo_incident, tmp_path,
                                                          capsys):
    db, incident_id = demo_incident
    store = Store(db, readonly=True)
    assert store.incident(incident_id)["cleared_ns"] is None  # the rule has not cleared it
    store.close()
    assert main(["incidents", "--db", str(db), "resolve", str(incident_id)]) == 0
    text = " ".join(_pages(write_report(db, incident_id, tmp_path / "r.pdf")))
    assert "resolved by hand" in text and "still active" not in text
    assert "not by the rule" in text and "resolved by hand at" in text
    assert "so far" not in text


def test_a_note_longer_than_a_page_breaks_across_pages_and_nothing_is_lost(qapp, demo_incident,
                                                                          tmp_path):
    db, incident_id = demo_incident
    words = [f"w{i:05d}" for i in range(2_400)]  # ~17,000 characters: several pages
    store = Store(db)
    store.add_incident_note(incident_id, "postmortem: " + " ".join(words), author="alice")
    store.close()
    out = write_report(db, incident_id, tmp_path / "long.pdf")
    pages = _pages(out)
    text = " ".join(pages)
    assert all(w in text for w in (words[0], words[1_200], words[-1]))  # every word is there
    holding = [k for k, page in enumerate(pages) if "w0" in page]
    assert len(holding) >= 2  # it went on over a page break
    for page in pages:  # and every page still ends with its own footer
        assert re.search(r"Page \d+ of \d+\s*$", page)
