"""Report findings of the incident write-up audit (H1, H2, M2, M3, M5, M6, L4, L6, L8-L11), each
read back from a real PDF of a real workspace (Store or CLI), or from a real painting: an
incident resolved after the recording ended, shading inside the frame, an outage's impact, the
model version of an imported log, the workspace and other endpoints' incidents, the SLO breach
of a rules SLO, the acknowledge time, a down endpoint's figure, and the CLI's --out/--incident."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pypdf import PdfReader
from PySide6.QtCore import QRectF
from PySide6.QtGui import QColor, QImage, QPainter

from app.cli import main
from app.core.domain import Capture, CaptureStatus, Metric, Sample
from app.core.incident_rules import RuleConfig
from app.core.incidents import evaluate_range
from app.core.store import Store
from app.report import write_report
from app.report.data import SeriesFigure, figures, gather
from app.report.layout import PT
from app.report.plots import draw_series
from app.report.writer import shaded_span
from tests.incidents.conftest import NS, T0, write_requests
from tests.incidents.test_report_audit import _burst


def _text(path: Path) -> str:
    # pypdf reads Qt's word spacing as tabs; words are what matter.
    return " ".join(" ".join(page.extract_text().split()) for page in PdfReader(path).pages)


def _utc(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _down_for(store: Store, ep: str, seconds: int) -> None:
    """A probe that never got through: one unanswered try every 2 s for ``seconds``."""
    store.write_batch([Sample(ep, T0 + t * NS, Metric.UP, 0.0)
                       for t in range(0, seconds + 1, 2)], [])


# -- H1: resolved by hand after the recording ended ------------------------------------------

def test_a_resolve_after_the_recording_ended_does_not_lengthen_the_incident(qapp, workspace,
                                                                            tmp_path):
    """Resolved years after its last sample (the workspace opened the morning after, say),
    it read "3 min 35 s (to the resolve)" and "down for 3 min 35 s (100%)" of 41 s seen."""
    ep = "v2+http://127.0.0.1:9/models/x"
    store = Store(workspace)
    _down_for(store, ep, 20)
    evaluate_range(store, T0, T0 + 20 * NS)
    [incident] = store.incidents()
    store.close()
    assert main(["incidents", "--db", str(workspace), "resolve", str(incident["id"]),
                 "--note", "server was never deployed"]) == 0
    store = Store(workspace)
    resolved = store.incident(incident["id"])["resolved_ns"]
    store.close()
    assert resolved > T0 + 3600 * NS  # long after the recording

    text = _text(write_report(workspace, incident["id"], tmp_path / "late.pdf"))
    assert (f"the recording ended at {_utc(T0 + 20 * NS)}, 20 s after it opened, with the "
            f"incident still open; resolved by hand at {_utc(resolved)}") in text
    assert "Duration 20 s (to the end of the recording; the " in text
    assert ("Impact the probe could not reach the endpoint from opening to the end of the "
            "recording (20 s): 11 attempts, none answered, so no requests were sent; the "
            "endpoint was down for 20 s (100% of it)") in text
    assert "(to the resolve)" not in text


def test_the_shading_of_a_late_resolve_stops_at_the_last_observation(demo_incident):
    db, incident_id = demo_incident
    assert main(["incidents", "--db", str(db), "resolve", str(incident_id)]) == 0
    store = Store(db)
    try:
        incident = store.incident(incident_id)
        data = gather(store, incident, "test")
        last = store.last_sample_ns(incident["endpoint"])
    finally:
        store.close()
    assert data.impact is not None and data.impact.until == "recording ended"
    assert data.impact.end_ns == last < incident["resolved_ns"]
    assert shaded_span(incident, data.resolved_ns, data.impact.end_ns) == (
        incident["opened_ns"], last)


# -- H2: the incident's tint stays inside the plot's frame ------------------------------------

def test_the_incident_tint_never_leaves_the_plot_frame(qapp):
    """A span ending after the plotted window was shaded past the frame's right border,
    through the page margin to the paper's edge."""
    start, end = T0, T0 + 60 * NS
    ts = start + np.arange(60, dtype=np.int64) * NS
    fig = SeriesFigure("Latency", "q", ts, {"mean latency": np.ones(60)}, None, "ms")
    image = QImage(900 * 4, 260 * 4, QImage.Format.Format_ARGB32)
    image.fill(QColor("white"))
    rect = QRectF(20 * PT, 20 * PT, 200 * PT, 175 * PT)  # the image runs far right of it
    painter = QPainter(image)
    draw_series(painter, rect, fig, start, end, (start + 30 * NS, end + 600 * NS))
    painter.end()
    right_of_frame = rect.right() + 20 * PT
    y = int(rect.top() + 100 * PT)  # the plot's middle, below the legend
    tinted = [x for x in range(int(right_of_frame), image.width(), 25)
              if image.pixelColor(x, y) != QColor("white")]
    assert tinted == []
    inside = image.pixelColor(int(rect.left() + 150 * PT), y)
    assert inside != QColor("white")  # the incident is still shaded inside the frame


# -- M2: an outage leads with its downtime ----------------------------------------------------

def test_an_outage_leads_with_its_downtime_counts_its_refused_request_and_estimates_the_rest(
        qapp, workspace, tmp_path):
    """It read "0 of 16 requests failed (0.0%)": the refused connection that began the outage
    came 2 ms before the opening and was counted before it."""
    ep = "v2+http://127.0.0.1:9/models/out"
    store = Store(workspace)
    write_requests(store, ep, 0, 30, rate_hz=10)
    refused = T0 + 30 * NS - 2_000_000
    store.write_batch(
        [Sample(ep, T0, Metric.UP, 1.0), Sample(ep, refused, Metric.LATENCY_MS, 1.0),
         Sample(ep, refused, Metric.FAILURE, 1.0),
         *[Sample(ep, T0 + t * NS, Metric.UP, 0.0) for t in range(30, 61, 2)],
         Sample(ep, T0 + 61 * NS, Metric.UP, 1.0)], [])
    write_requests(store, ep, 61, 63, rate_hz=10)
    incident_id = store.insert_incident(
        ep, rule="down", severity="critical", status="open", opened_ns=T0 + 30 * NS,
        trigger_ns=T0 + 45 * NS, value=15.0, threshold=15.0, summary="Endpoint down",
        details={"detail": f"the probe reports the endpoint down since {_utc(T0 + 30 * NS)}",
                 "unit": "s"})
    store.update_incident(incident_id, cleared_ns=T0 + 62 * NS, status="resolved",
                          resolved_ns=None)
    store.close()
    text = _text(write_report(workspace, incident_id, tmp_path / "outage.pdf"))
    assert ("Impact the probe found the endpoint down for 31 s of the 32 s from opening to its "
            "clearing (97%); 1 of 12 requests failed (8.3%), counted from the failed request "
            "that began the outage 2 ms before the opening; about 310 requests were not sent "
            "while it was down (an estimate: 10/s before the outage") in text


# -- M3: an imported log's model version ------------------------------------------------------

def test_the_model_version_falls_back_to_the_captures_in_the_incident(qapp, workspace,
                                                                      tmp_path):
    ep = "log:prod-wine"
    caps = [Capture(ep, T0 + int(t * NS), 1.0, CaptureStatus.OK,
                    model_version="2.3.1" if t < 75 else "2.4.0") for t in range(0, 150, 2)]
    store = Store(workspace)
    store.write_batch([], caps)
    incident_id = _burst(store, ep)
    store.close()
    text = _text(write_report(workspace, incident_id, tmp_path / "v.pdf"))
    assert ("Model version 2.3.1 (8 captures), 2.4.0 (7 captures) (from the endpoint's "
            "captures in the incident)") in text
    assert "Model version unknown" not in text


# -- M5: the workspace, and what else was affected -------------------------------------------

def test_the_report_names_its_workspace_and_incidents_on_other_endpoints(qapp, tmp_path):
    workspace = tmp_path / "night-shift.db"
    store = Store(workspace)
    first = _burst(store, "onnx:a.onnx")
    other = _burst(store, "onnx:b.onnx", cleared=False)
    store.close()
    text = _text(write_report(workspace, first, tmp_path / "a.pdf"))
    assert "Workspace night-shift.db (the failures' capture ids" in text
    assert str(tmp_path) not in text  # the file's name, not the user's folders
    assert (f"Related #{other} Error-rate burst on onnx:b.onnx (open, opened "
            f"{_utc(T0 + 60 * NS)})") in text


# -- M6: a latency incident's impact is its requests over the SLO it was judged with ----------

def test_a_rules_slo_latency_incident_counts_the_requests_over_that_slo(qapp, workspace,
                                                                        tmp_path):
    ep = "onnx:slow.onnx"
    store = Store(workspace)
    store.set_incident_rules(ep, {"slo_ms": 0.5})
    write_requests(store, ep, 0, 120, latency_ms=1.0, failure_share=0.1)
    evaluate_range(store, T0, T0 + 120 * NS,
                   defaults=RuleConfig(disabled=("down", "error_rate")))
    [incident] = [i for i in store.incidents() if i["rule"] == "latency"]
    store.close()
    text = _text(write_report(workspace, incident["id"], tmp_path / "lat.pdf"))
    impact = text[text.index("Impact "):text.index("Latency p95")]
    assert "requests (100.0%) took longer than the incident rules' 0.5 ms SLO, the one this " \
           "incident was judged with" in impact
    assert "(10.0%) failed (see Top errors)" in impact


# -- L6: time to acknowledge on page 1 --------------------------------------------------------

def test_page_one_says_when_and_by_whom_the_incident_was_acknowledged(qapp, workspace,
                                                                      tmp_path):
    store = Store(workspace)
    incident_id = _burst(store, "onnx:ack.onnx", cleared=False)
    store.close()
    assert main(["incidents", "--db", str(workspace), "ack", str(incident_id)]) == 0
    store = Store(workspace)
    [ack] = [n for n in store.incident_notes(incident_id) if n["text"].startswith("Acknow")]
    store.close()
    first = " ".join(PdfReader(write_report(workspace, incident_id, tmp_path / "ack.pdf"))
                     .pages[0].extract_text().split())
    assert f"Acknowledged {_utc(ack['ts_ns'])} (" in first
    assert f"after opening) by {getpass.getuser()}" in first


# -- L9: an endpoint never reached gets a figure of its probe's tries -------------------------

def test_an_unreached_endpoint_gets_a_probe_state_figure_and_says_no_error_text_is_kept(
        qapp, workspace, tmp_path):
    ep = "v2+http://127.0.0.1:9/models/never"
    store = Store(workspace)
    _down_for(store, ep, 20)
    evaluate_range(store, T0, T0 + 20 * NS)
    [incident] = store.incidents()
    store.close()
    text = _text(write_report(workspace, incident["id"], tmp_path / "never.pdf"))
    assert "Figure 1. Probe state (1 = the endpoint answered, 0 = no answer)" in text
    assert "No requests, memory or drift were recorded" not in text
    assert "The workspace keeps no error text for these attempts" in text


# -- L11: the endpoint label in Reproducibility -----------------------------------------------

def test_the_reproducibility_endpoint_label_is_not_in_capitals(qapp, workspace, tmp_path):
    store = Store(workspace)
    incident_id = _burst(store, "onnx:label.onnx")
    store.close()
    text = _text(write_report(workspace, incident_id, tmp_path / "l.pdf"))
    repro = text[text.index("Reproducibility"):]
    assert "Endpoint onnx:label.onnx (ENDPOINT in the queries below)" in repro
    assert "ENDPOINT onnx:label.onnx" not in repro


# -- L8: a steady rate over a long window draws flat ------------------------------------------

def test_a_steady_rate_over_hours_draws_flat(workspace):
    """One request every 5 s over 6 h: buckets of 54 s held 10 or 11 of them, a comb between
    0.185/s and 0.204/s."""
    ep = "log:steady"
    store = Store(workspace)
    write_requests(store, ep, 0, 6 * 3600, rate_hz=0.2)
    try:
        [_, throughput] = figures(store, {"uri": ep}, T0, T0 + 6 * 3600 * NS)
    finally:
        store.close()
    rate = throughput.lines["requests/s"]
    assert rate[np.isfinite(rate)] == pytest.approx(0.2, rel=1e-9)


# -- L4 / L10: the CLI's --incident twice and --out without an extension ----------------------

def test_incident_given_twice_is_refused_in_one_line(qapp, workspace, tmp_path, capsys):
    store = Store(workspace)
    first = _burst(store, "onnx:a.onnx")
    second = _burst(store, "onnx:b.onnx")
    store.close()
    out = tmp_path / "two.pdf"
    assert main(["report", "--db", str(workspace), "--incident", str(first), "--incident",
                 str(second), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"probescope: --incident was given 2 times ({first}, {second}); a report "
                   "covers one incident: run report once for each")
    assert not out.exists()


def test_an_out_name_without_an_extension_gets_pdf(qapp, workspace, tmp_path, capsys):
    store = Store(workspace)
    incident_id = _burst(store, "onnx:a.onnx")
    store.close()
    assert main(["report", "--db", str(workspace), "--incident", str(incident_id), "--out",
                 str(tmp_path / "noext")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'noext.pdf'}"
    assert (tmp_path / "noext.pdf").read_bytes().startswith(b"%PDF-")
    assert not (tmp_path / "noext").exists()
