"""Report defects found by the incident-report audit, each read back from the real PDF: the SLO
an incident was judged against, the resolve time, the machine that wrote the report, dated
failure times, throughput before the probe started, and an output path naming a folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pypdf import PdfReader
from pypdf.generic import ContentStream

from app.cli import main
from app.core.domain import Capture, CaptureStatus, Metric, Sample
from app.core.incident_rules import RuleConfig
from app.core.incidents import evaluate_range
from app.core.store import Store
from app.report import ReportError, write_report
from app.report.data import figures, gather
from tests.incidents.conftest import NS, T0, write_requests

ROOT = Path(__file__).resolve().parents[2]


def _text(path: Path) -> str:
    # pypdf reads Qt's word spacing as tabs; words are what matter.
    return " ".join(" ".join(page.extract_text().split()) for page in PdfReader(path).pages)


def _utc(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _between(text: str, first: str, last: str) -> str:
    return text[text.index(first):text.index(last, text.index(first))]


# -- 1: the SLO the incident was judged against ----------------------------------------------

def test_a_latency_incident_shows_and_plots_the_slo_its_rule_judged(qapp, workspace, tmp_path):
    ep = "onnx:strict.onnx"
    store = Store(workspace)
    store.set_endpoint_info(ep, slo_ms=5.0)
    # The rules hold this endpoint to 0.5 ms: 1 ms requests breach that, not the 5 ms SLO.
    store.set_incident_rules(ep, {"slo_ms": 0.5})
    write_requests(store, ep, 0, 120, latency_ms=1.0)
    evaluate_range(store, T0, T0 + 120 * NS, defaults=RuleConfig(disabled=("down",)))
    [incident] = store.incidents()
    assert incident["rule"] == "latency" and incident["details"]["config"]["slo_ms"] == 0.5
    data = gather(store, incident, "test")
    store.close()
    assert data.figures[0].hlines == {"rule's SLO": 0.5}  # the line drawn on Figure 1

    text = _text(write_report(workspace, incident["id"], tmp_path / "slo.pdf"))
    assert "SLO 0.5 ms (this incident's rule; the endpoint's is 5 ms)" in text
    assert "rule's SLO 0.5 ms" in text  # Figure 1's legend for the dashed line
    assert "SLO 5 ms" not in text  # the endpoint's SLO is never passed off as the judged one


def test_without_a_rule_override_the_endpoint_s_slo_is_shown_alone(qapp, workspace, tmp_path):
    ep = "onnx:plain.onnx"
    store = Store(workspace)
    store.set_endpoint_info(ep, slo_ms=0.5)
    write_requests(store, ep, 0, 120, latency_ms=1.0)
    evaluate_range(store, T0, T0 + 120 * NS, defaults=RuleConfig(disabled=("down",)))
    [incident] = store.incidents()
    store.close()
    text = _text(write_report(workspace, incident["id"], tmp_path / "plain.pdf"))
    assert "SLO 0.5 ms Figures" in text and "rule's" not in text


# -- 2: the resolve time is the status change's, not a later note's --------------------------

def test_a_later_note_beginning_with_resolved_does_not_move_the_resolve(qapp, demo_incident,
                                                                        tmp_path):
    db, incident_id = demo_incident
    assert main(["incidents", "--db", str(db), "resolve", str(incident_id),
                 "--note", "fixed by rolling back"]) == 0
    store = Store(db)
    incident = store.incident(incident_id)
    [resolve] = [n for n in store.incident_notes(incident_id)
                 if n["text"] == "Resolved: fixed by rolling back"]
    # People write about it afterwards, in words that begin the same way.
    for minutes, text in ((5, "Resolved upstream in wine-v2.1, see the postmortem"),
                          (9, "Resolved: the postmortem is written")):
        store.add_incident_note(incident_id, text, author="ann",
                                ts_ns=resolve["ts_ns"] + minutes * 60 * NS)
    store.close()
    text = _text(write_report(db, incident_id, tmp_path / "r.pdf"))
    assert f"resolved by hand at {_utc(resolve['ts_ns'])}" in text
    # The demo recording had ended before the resolve: the incident's span stops there, and
    # the time from then to the resolve is said, not counted.
    assert incident["opened_ns"] < resolve["ts_ns"]
    assert "(to the end of the recording; the " in text
    assert "from then to the resolve was not observed)" in text
    assert "Resolved upstream in wine-v2.1" in text  # the notes themselves are all kept


def test_a_recorded_resolve_time_wins_over_any_note(qapp, demo_incident, tmp_path):
    # The store records the status change itself (incidents.resolved_ns); the notes are the
    # record only in workspaces from before it did.
    db, incident_id = demo_incident
    assert main(["incidents", "--db", str(db), "resolve", str(incident_id)]) == 0
    store = Store(db)
    incident = store.incident(incident_id)
    assert incident["resolved_ns"] is not None
    recorded = incident["trigger_ns"] + 20 * NS  # moved, so the note's time cannot pass
    with store.db.conn:
        store.db.execute("UPDATE incidents SET resolved_ns = ? WHERE id = ?",
                         [recorded, incident_id])
    store.close()
    text = _text(write_report(db, incident_id, tmp_path / "r.pdf"))
    assert f"resolved by hand at {_utc(recorded)}" in text


# -- 4: the machine that wrote the report is not the one that served the model ---------------

def test_a_remote_endpoint_s_report_does_not_pass_this_machine_off_as_its_server(
        qapp, workspace, tmp_path):
    ep = "v2+http://10.1.2.3:8000/models/wine?payload=rows.csv&rate=20"
    store = Store(workspace)
    store.set_endpoint_info(ep, slo_ms=5.0)
    write_requests(store, ep, 0, 120, latency_ms=7.0)
    store.insert_incident(
        ep, rule="latency", severity="warning", status="open", opened_ns=T0 + 40 * NS,
        trigger_ns=T0 + 45 * NS, value=7.0, threshold=5.0, summary="Latency above SLO",
        details={"detail": "p95 7.00 ms over 30 s; SLO 5 ms", "unit": "ms"})
    store.close()
    text = _text(write_report(workspace, "latest", tmp_path / "remote.pdf"))
    model = _between(text, "Model and endpoint", "Figures")
    assert "Served by a server at 10.1.2.3:8000" in model
    for key in ("CPU", "Platform", "onnxruntime", "logical cores"):
        assert key not in model, key  # nothing of this machine where the model is described
    machine = _between(text, "Machine this report was written on", "Reproducibility")
    assert "this is the machine that wrote the report" in machine
    assert "served outside ProbeScope" in machine and "none of this says what ran it" in machine
    assert "logical cores" in machine and "onnxruntime" in machine


# -- 6: failure times carry their date when the window spans days ----------------------------

def _failures_at(store: Store, ep: str, *seconds: float) -> None:
    store.write_batch([], [Capture(endpoint=ep, ts_ns=T0 + int(s * NS), latency_ms=1.0,
                                   status=CaptureStatus.MISMATCH, prediction="1", label="0")
                           for s in seconds])


def test_failure_times_carry_the_date_when_the_window_crosses_midnight(qapp, workspace,
                                                                      tmp_path):
    assert _utc(T0).startswith("2023-11-14 22:13")  # the synthetic series start near midnight
    night, evening = "onnx:night.onnx", "onnx:evening.onnx"
    store = Store(workspace)
    for ep, end_s in ((night, 7_500), (evening, 600)):
        write_requests(store, ep, 0, end_s, rate_hz=1.0, failure_share=0.3)
        _failures_at(store, ep, 100, 7_000 if ep == night else 300)
        store.insert_incident(
            ep, rule="error_rate", severity="critical", status="open", opened_ns=T0 + 60 * NS,
            trigger_ns=T0 + 65 * NS, value=0.3, threshold=0.15, summary="Error-rate burst",
            details={"detail": "30% failures", "unit": ""})
    ids = {i["endpoint"]: i["id"] for i in store.incidents()}
    store.close()
    text = _text(write_report(workspace, ids[night], tmp_path / "night.pdf"))
    # The window runs from the 14th into the 15th: each row says which day it is.
    assert "2023-11-14 22:15:00.000" in text  # 100 s after T0, the evening it opened
    assert "2023-11-15 00:10:00.000" in text  # 7,000 s after T0, past midnight
    text = _text(write_report(workspace, ids[evening], tmp_path / "evening.pdf"))
    assert "22:15:00.000" in text and "2023-11-14 22:15:00" not in text  # one day: no date


# -- 13: no throughput line before the probe started or after it stopped ---------------------

def _stroked(path: Path, page: int = 0) -> tuple[list[tuple[float, float, float, float]],
                                                  list[np.ndarray]]:
    """Frames (rectangles stroked: x, y, width, height) and polylines of more than two points
    stroked on a page, in the page's content-stream coordinates."""
    reader = PdfReader(path)
    ops = ContentStream(reader.pages[page].get_contents(), reader).operations
    frames, lines, points, rect = [], [], [], None
    for args, op in ops:
        if op == b"re":
            rect = tuple(float(a) for a in args)
        elif op in (b"m", b"l"):
            points.append((float(args[0]), float(args[1])))
        elif op == b"S":
            if rect is not None:
                frames.append(rect)
            if len(points) > 2:
                lines.append(np.array(points))
            points, rect = [], None
        elif op in (b"f", b"f*", b"n", b"B", b"b"):
            points, rect = [], None
    return frames, lines


def test_throughput_is_not_plotted_as_zero_before_the_probe_started(qapp, workspace, tmp_path):
    ep = "onnx:late.onnx"
    store = Store(workspace)
    store.set_endpoint_info(ep, slo_ms=5.0)
    # The probe starts at 60 s, is paused from 90 s to 100 s, and stops at 130 s.
    write_requests(store, ep, 60, 90, latency_ms=7.0)
    write_requests(store, ep, 100, 130, latency_ms=7.0)
    incident_id = store.insert_incident(
        ep, rule="latency", severity="warning", status="open", opened_ns=T0 + 70 * NS,
        trigger_ns=T0 + 75 * NS, value=7.0, threshold=5.0, summary="Latency above SLO",
        details={"detail": "p95 7.00 ms over 30 s; SLO 5 ms", "unit": "ms"})
    store.update_incident(incident_id, cleared_ns=T0 + 120 * NS, status="resolved")
    incident = store.incident(incident_id)
    data = gather(store, incident, "test")
    store.close()
    # The 30 s of context before the opening and the margin after the clearing are cut to
    # the recording (60 s to 129.9 s) with 2 s of padding, on whole seconds.
    assert (data.start_ns, data.end_ns) == (T0 + 58 * NS, T0 + 132 * NS)
    assert data.clipped == (True, True)
    rate = data.figures[1].lines["requests/s"]
    t = (data.figures[1].ts_ns - T0) / NS
    assert np.isnan(rate[t < 59]).all() and np.isnan(rate[t >= 130]).all()  # nothing measured
    assert (rate[(t >= 91) & (t < 99)] == 0).all()  # paused while probing: a real zero
    assert (rate[(t >= 61) & (t < 89)] == 10).all()

    out = write_report(workspace, incident_id, tmp_path / "late.pdf")
    frames, lines = _stroked(out)
    x0, y0, width, height = frames[1]  # Figure 2, throughput and failures
    inside = [p for p in lines if y0 <= p[0, 1] <= y0 + height]
    assert len(inside) == 2  # requests/s and failures/s
    for points in inside:  # each starts where the probe started and ends where it stopped
        assert points[:, 0].min() == pytest.approx(x0 + width * 2 / 74, abs=width * 0.02)
        assert points[:, 0].max() == pytest.approx(x0 + width * 72 / 74, abs=width * 0.02)


# -- 14: an output path that names a folder --------------------------------------------------

def test_an_out_path_ending_with_a_separator_is_refused(qapp, demo_incident, tmp_path):
    db, incident_id = demo_incident
    for out in (f"{tmp_path / 'newdir'}/", f"{tmp_path / 'newdir'}/."):
        with pytest.raises(ReportError, match=re.escape(f"cannot write the report to {out}: "
                                                        "it names a folder")) as e:
            write_report(db, incident_id, out)
        assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.db"]  # no file named newdir


def test_steady_traffic_reads_steady_up_to_the_newest_sample(workspace):
    # An open incident's window ends one past the newest sample. Buckets rounded down left
    # that sample in a sliver bucket of its own, which overwrote the last bucket's count:
    # the throughput line dropped to almost nothing at the right edge.
    store = Store(workspace)
    try:
        write_requests(store, "onnx:a.onnx", 0, 90, rate_hz=10)
        store.insert_incident(
            "onnx:a.onnx", rule="error_rate", severity="warning", status="open",
            opened_ns=T0 + 30 * NS, trigger_ns=T0 + 30 * NS, value=0.2, threshold=0.15,
            summary="s", details={}, note="Opened: x.")
        data = gather(store, store.incident(1), "test")
    finally:
        store.close()
    throughput = next(f for f in data.figures if "requests/s" in getattr(f, "lines", {}))
    rate = throughput.lines["requests/s"]
    finite = rate[np.isfinite(rate)]
    assert finite.size > 10
    assert abs(finite[-1] - 10.0) < 2.5  # the last bucket is a full one, not a sliver


def test_an_incident_resolved_by_hand_is_shaded_only_up_to_the_resolve(demo_incident):
    from app.report.writer import shaded_span

    db, incident_id = demo_incident
    assert main(["incidents", "--db", str(db), "resolve", str(incident_id)]) == 0
    store = Store(db)
    try:
        incident = store.incident(incident_id)
        data = gather(store, incident, "test")
    finally:
        store.close()
    assert data.resolved_ns == incident["resolved_ns"] is not None
    assert shaded_span(incident, data.resolved_ns) == (incident["opened_ns"],
                                                       incident["resolved_ns"])


# -- a disk that refuses the PDF's bytes -------------------------------------------------------

def test_a_report_the_disk_cannot_hold_is_an_error_and_the_earlier_one_stays(
        qapp, demo_incident, tmp_path):
    """Files over 40 KB (past the workspace's 32 KB shared-memory file) are refused to the
    CLI (RLIMIT_FSIZE: EFBIG, the same failed write as a full disk's ENOSPC, without root).
    Qt's PDF writer ignored failed writes: the CLI printed "wrote", exited 0 and left a
    truncated PDF in place of the good one."""
    db, incident_id = demo_incident
    out = tmp_path / "report.pdf"
    write_report(db, incident_id, out)
    good = out.read_bytes()
    assert len(good) > 40_000
    limit = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
             "resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000)); "
             "from app.cli import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run(
        [sys.executable, "-c", limit, "report", "--db", str(db), "--incident",
         str(incident_id), "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == f"probescope: cannot write the report to {out}: File too large"
    assert "wrote" not in done.stdout and "Traceback" not in done.stderr
    assert out.read_bytes() == good
    assert not [p.name for p in tmp_path.iterdir() if p.suffix == ".pdf" and p != out]


# -- the plotted window's context before the incident -----------------------------------------

def test_the_report_plots_the_context_asked_for_before_the_incident(qapp, workspace, tmp_path,
                                                                    capsys):
    """Drift built up minutes before the rule tripped could not be put in the report: the
    window before opening was always 30 s (or a fifth of the incident)."""
    store = Store(workspace)
    write_requests(store, "onnx:a.onnx", 0, 600)
    write_requests(store, "onnx:a.onnx", 600, 700, failure_share=0.5)
    store.close()
    assert main(["incidents", "--db", str(workspace), "evaluate"]) == 0
    out = tmp_path / "r.pdf"
    assert main(["report", "--db", str(workspace), "--out", str(out), "--context", "5m"]) == 0
    text = " ".join(" ".join(p.extract_text().split()) for p in PdfReader(out).pages)
    store = Store(workspace, readonly=True)
    (incident,) = store.incidents()
    store.close()
    start = datetime.fromtimestamp((incident["opened_ns"] - 300 * NS) / NS, UTC)
    assert f"Plotted window {start:%Y-%m-%d %H:%M:%S} UTC" in text
    with pytest.raises(SystemExit) as refused:
        main(["report", "--db", str(workspace), "--out", str(out), "--context", "soon"])
    assert refused.value.code == 2
    assert "'soon' is not a duration; use e.g. 90s, 10m, 2h" in capsys.readouterr().err


# -- a context longer than the recording (e2e audit, finding 3) --------------------------------

def _opened_at(store: Store, ep: str, seconds: float) -> int:
    return store.insert_incident(
        ep, rule="error_rate", severity="warning", status="open", opened_ns=T0 + int(seconds * NS),
        trigger_ns=T0 + int(seconds * NS), value=0.5, threshold=0.15, summary="Error-rate burst",
        details={"detail": "failures over 30 s", "unit": ""})


def test_a_context_longer_than_the_recording_is_cut_to_it_and_said(qapp, workspace, tmp_path):
    """A 5-day context over 90 s of data said "in the 120 h 00 min before it opened" and drew
    the data into a one-pixel sliver at the right edge of five empty days."""
    ep = "onnx:short.onnx"
    store = Store(workspace)
    write_requests(store, ep, 0, 90, failure_share=0.1)
    incident_id = _opened_at(store, ep, 50)
    store.close()
    out = tmp_path / "ctx.pdf"
    assert main(["report", "--db", str(workspace), "--incident", str(incident_id), "--out",
                 str(out), "--context", "5d"]) == 0
    text = _text(out)
    # The quantiles before the opening are over the 50 s recorded before it.
    assert "in the 50 s before it opened (from the recording's start)" in text
    assert "120 h" not in text
    # The window starts a little (1.8 s, on a whole second) before the first request and runs
    # whole seconds to the last one, at 89.9 s.
    assert (f"Plotted window {_utc(T0 - 2 * NS)} to {_utc(T0 + 90 * NS)} "
            "(clipped to the recording's start)") in text

    store = Store(workspace, readonly=True)
    data = gather(store, store.incident(incident_id), "test", context_s=5 * 86400)
    store.close()
    assert (data.start_ns, data.clipped) == (T0 - 2 * NS, (True, False))
    rate = data.figures[1].lines["requests/s"]
    assert np.isfinite(rate).sum() >= 85 and np.nanmin(rate) == np.nanmax(rate) == 10


def test_latency_before_the_opening_is_said_over_the_requests_there(qapp, workspace, tmp_path):
    """The probe was stopped for most of the 30 s before the opening: "in the 30 s before it
    opened" claimed a half-minute of requests that were never sent."""
    ep = "onnx:gap.onnx"
    store = Store(workspace)
    write_requests(store, ep, 0, 20)
    write_requests(store, ep, 52, 90, failure_share=0.1)
    incident_id = _opened_at(store, ep, 60)
    store.close()
    text = _text(write_report(workspace, incident_id, tmp_path / "gap.pdf"))
    assert "in the 8 s before it opened (from its first request in the plotted window)" in text
    assert "clipped" not in text  # the window itself starts at the 30 s asked for


def test_throughput_counts_a_bucket_over_the_part_the_probe_ran(workspace):
    """Buckets of 15 s over a probe that ran from 0 to 90 s at a steady 10/s: the first and
    last bucket, each only partly inside that, read 7.3/s and 2.7/s (4/s for a steady 50/s
    in a 5-day window, where one bucket held the whole recording)."""
    ep = "onnx:steady.onnx"
    store = Store(workspace)
    write_requests(store, ep, 0, 90)
    try:
        [_, throughput] = figures(store, {"uri": ep}, T0 - 3004 * NS, T0 + 2996 * NS)
    finally:
        store.close()
    rate = throughput.lines["requests/s"]
    t = (throughput.ts_ns - T0) / NS
    assert list(t[np.isfinite(rate)]) == [-4, 11, 26, 41, 56, 71, 86]  # 0 s to 90 s
    assert rate[np.isfinite(rate)] == pytest.approx(10)
    assert throughput.lines["failures/s"][np.isfinite(rate)] == pytest.approx(0)


def test_top_errors_dates_are_not_broken_mid_date(qapp, workspace, tmp_path):
    """A window over midnight dates its times, and "2026-12-06 07:41:30" in a narrow column
    wrapped as "2026-12-0" / "6" / "07:41:30"."""
    ep = "onnx:midnight.onnx"
    midnight_s = 6400  # T0 is 2023-11-14 22:13:20 UTC
    store = Store(workspace)
    write_requests(store, ep, midnight_s - 60, midnight_s + 60, failure_share=0.5)
    store.write_batch([], [Capture(endpoint=ep, ts_ns=T0 + (midnight_s + s) * NS,
                                   latency_ms=1.0, status=CaptureStatus.MISMATCH)
                           for s in range(-20, 20)])
    incident_id = _opened_at(store, ep, midnight_s)
    store.close()
    text = _text(write_report(workspace, incident_id, tmp_path / "midnight.pdf"))
    errors = _between(text, "Top errors", "Model and endpoint")
    assert "E1 mismatch 40 2023-11-14 23:59:40 2023-11-15 00:00:19" in errors


# -- an endpoint no request reached (e2e audit, finding 12) ------------------------------------

def test_an_endpoint_that_refused_every_connection_is_said_to_be_unreached(qapp, workspace,
                                                                           tmp_path):
    """It read "every request failed" in the peak reading, then "no requests were recorded":
    the probe sent none. What it keeps of its tries is an ``up`` 0 sample each."""
    ep = "v2+http://127.0.0.1:9/models/x"
    store = Store(workspace)
    store.write_batch([Sample(ep, T0 + t * NS, Metric.UP, 0.0) for t in range(0, 21, 2)], [])
    evaluate_range(store, T0, T0 + 20 * NS)
    [incident] = store.incidents()
    store.close()
    assert incident["rule"] == "down"
    text = _text(write_report(workspace, incident["id"], tmp_path / "down.pdf"))
    assert ("Impact the probe could not reach the endpoint from opening to the last sample "
            "(20 s): 11 attempts, none answered, so no requests were sent; the endpoint was "
            "down for 20 s (100% of it)") in text
    assert (f"Peak reading: the probe reports the endpoint down since {_utc(T0)} (its "
            "attempts to reach it got no answer)") in text
    assert ("No failed requests were captured in the incident window: the probe could not "
            "reach the endpoint, so it sent none") in text
    assert "every request failed" not in text and "no requests were recorded" not in text
