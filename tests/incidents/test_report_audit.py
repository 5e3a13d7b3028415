"""Report defects from the write-up audit (D3-D8, D11), each read back from the real PDF of a
real workspace: the incident's total impact on page 1, the failures that started it, errors
grouped instead of repeated, the status people read, latencies that do not wrap, which quantile
tripped a latency rule, and characters the font cannot draw."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pypdf import PdfReader

from app.core.domain import Capture, CaptureStatus, Metric, Sample, utc_text
from app.core.incident_rules import RuleConfig
from app.core.incidents import evaluate_range
from app.core.store import Store
from app.report import write_report
from app.report.data import down_spans
from tests.incidents.conftest import NS, T0, write_requests, write_series


def _pages(path: Path) -> list[str]:
    # pypdf reads Qt's word spacing as tabs; words are what matter.
    return [" ".join(page.extract_text().split()) for page in PdfReader(path).pages]


def _burst(store: Store, ep: str, *, cleared: bool = True) -> int:
    """One minute of 1 ms requests, then 30 s with every other request failing at 4 ms, then
    a quiet minute again; an error-rate incident over the burst. Returns its id."""
    write_requests(store, ep, 0, 60, latency_ms=1.0)
    write_requests(store, ep, 60, 90, latency_ms=4.0, failure_share=0.5)
    write_requests(store, ep, 90, 150, latency_ms=1.0)
    incident_id = store.insert_incident(
        ep, rule="error_rate", severity="critical", status="open", opened_ns=T0 + 60 * NS,
        trigger_ns=T0 + 65 * NS, value=0.5, threshold=0.15, summary="Error-rate burst",
        details={"detail": "150 failures in 300 requests (50.0%) over 30 s; threshold 15%",
                 "unit": ""})
    if cleared:
        # Cleared by the rule, as the engine records it: the stored status is "resolved",
        # but no person resolved it (no resolve time).
        store.update_incident(incident_id, cleared_ns=T0 + int(89.95 * NS), status="resolved",
                              resolved_ns=None)
    return incident_id


def _burst_report(workspace: Path, pdf: Path, ep: str, captures: Sequence[Capture] = (), *,
                  cleared: bool = True) -> list[str]:
    """The pages of the report of a ``_burst`` incident, with ``captures`` recorded too."""
    store = Store(workspace)
    incident_id = _burst(store, ep, cleared=cleared)
    if captures:
        store.write_batch([], list(captures))
    store.close()
    return _pages(write_report(workspace, incident_id, pdf))


def _failed(ep: str, seconds: float, status: CaptureStatus, error: str | None = None,
            latency_ms: float = 1.0) -> Capture:
    return Capture(endpoint=ep, ts_ns=T0 + int(seconds * NS), latency_ms=latency_ms,
                   status=status, error=error)


# -- D3: the incident's total impact, each count saying what window it covers -----------------

def test_page_one_states_the_incident_s_total_impact_and_latency_against_before(
        qapp, workspace, tmp_path):
    ep = "v2+http://127.0.0.1:9/models/m"
    store = Store(workspace)
    incident_id = _burst(store, ep)
    # The probe could not reach the server for 15 of the incident's 30 s.
    write_series(store, ep, Metric.UP, [(60, 0.0), (65, 0.0), (70, 0.0), (75, 1.0)])
    store.close()
    first = _pages(write_report(workspace, incident_id, tmp_path / "impact.pdf"))[0]
    # The requests sent from opening to clearing: not the rule's 30 s peak window, and not
    # the plotted window with its padding.
    assert ("Impact 150 of 300 requests failed (50.0%) from opening to its clearing (29 s); "
            "the probe found the endpoint down for 15 s (50% of it)") in first
    assert ("Latency p95 4 ms, p99 4 ms during the incident; p95 1 ms, p99 1 ms in the 30 s "
            "before it opened") in first
    assert "Peak reading: 150 failures in 300 requests" in first  # the rule's reading, named


def test_an_open_incident_s_impact_runs_to_the_last_sample(qapp, workspace, tmp_path):
    first = _burst_report(workspace, tmp_path / "open.pdf", "onnx:open.onnx", cleared=False)[0]
    # 300 burst requests and the 600 after it, up to the last sample at 149.9 s; no up series
    # (a local model), so nothing is said about time down.
    assert "Impact 150 of 900 requests failed (16.7%) from opening to the last sample" in first
    assert "down for" not in first


# -- D4: the failures that started the episode are listed, marked as before the opening ------

def test_failures_before_the_rule_tripped_are_listed_and_marked(qapp, workspace, tmp_path):
    ep = "v2+http://127.0.0.1:9/models/m"
    text = " ".join(_burst_report(workspace, tmp_path / "d4.pdf", ep, [
        _failed(ep, 45, CaptureStatus.ERROR, "cannot connect to 127.0.0.1:9: refused"),
        *[_failed(ep, 60 + i, CaptureStatus.MISMATCH) for i in range(45)]]))
    failures = text[text.index("Failures in the window"):]
    assert "22:14:05.000 (before opening)" in failures  # T0 + 45 s: how the outage began
    assert "cannot connect to 127.0.0.1:9" in failures
    assert "22:14:20.000" in failures  # T0 + 60 s: the first one after the opening, unmarked
    assert "22:14:20.000 (before opening)" not in failures


# -- D5: identical errors grouped, named on page 1, not repeated row after row ---------------

def test_identical_errors_are_grouped_on_page_one_and_not_repeated_in_the_table(
        qapp, workspace, tmp_path):
    ep = "v2+http://127.0.0.1:9/models/m"
    store = Store(workspace)
    incident_id = _burst(store, ep)
    # A server that echoes the request into its error: the same long text every time, but
    # for the length of each request.
    echo = ("HTTP 500: internal failure; request headers were: {'Host': '127.0.0.1:9', "
            "'Accept': '*/*', 'Connection': 'keep-alive', 'Content-Length': '%d', "
            "'X-Trace': 'endofheaders'}")
    store.write_batch([], [_failed(ep, 60 + i * 0.5, CaptureStatus.ERROR, echo % (330 + i % 7))
                           for i in range(60)])
    store.write_batch([], [_failed(ep, 70.25, CaptureStatus.TIMEOUT, "no answer within 2 s")])
    store.close()
    pages = _pages(write_report(workspace, incident_id, tmp_path / "d5.pdf"))
    text = " ".join(pages)
    assert "Top errors" in pages[0]
    assert "E1 error 60 22:14:20 22:14:49 HTTP 500: internal failure" in pages[0]
    assert "'Content-Length': '#'" in pages[0]  # the number that varied, not 60 errors
    assert "E2 timeout 1 22:14:30 22:14:30 no answer within 2 s" in pages[0]
    # The full text once; each failure row names it by its label, cut short.
    assert text.count("endofheaders") == 1
    assert "E1: HTTP 500: internal failure" in text
    assert len(pages) <= 4


# -- D6: the status people read ---------------------------------------------------------------

def test_an_incident_the_rule_cleared_reads_cleared_not_resolved(qapp, workspace, tmp_path):
    first = _burst_report(workspace, tmp_path / "d6.pdf", "onnx:cleared.onnx")[0]
    assert "Status cleared (by the rule) · severity critical" in first
    assert "resolved" not in first


# -- D7: four-digit latencies stay on one line ------------------------------------------------

def test_a_timeout_s_latency_is_not_broken_over_two_lines(qapp, workspace, tmp_path):
    ep = "v2+http://127.0.0.1:9/models/m"
    text = " ".join(_burst_report(workspace, tmp_path / "d7.pdf", ep, [
        _failed(ep, 61, CaptureStatus.TIMEOUT, "no answer within 2 s", latency_ms=2003.12),
        _failed(ep, 62, CaptureStatus.TIMEOUT, "no answer within 2 s", latency_ms=12345.67)]))
    assert "2003.12" in text and "12345.67" in text  # not "2003." over "12"


# -- D8: which quantile tripped, against what multiple of the SLO -----------------------------

def test_a_latency_incident_names_its_quantile_and_how_its_threshold_relates_to_the_slo(
        qapp, workspace, tmp_path):
    ep = "v2+http://127.0.0.1:9/models/m"
    store = Store(workspace)
    store.set_endpoint_info(ep, slo_ms=50.0)
    # One request in 50 hangs for 2 s: p99 is far past 2 x the SLO, p95 stays at 1 ms.
    store.write_batch([Sample(ep, T0 + i * NS // 10, Metric.LATENCY_MS,
                              2003.12 if i % 50 == 0 else 1.0) for i in range(1200)], [])
    evaluate_range(store, T0, T0 + 120 * NS, defaults=RuleConfig(disabled=("down",)))
    [incident] = store.incidents()
    assert incident["rule"] == "latency"
    store.close()
    first = _pages(write_report(workspace, incident["id"], tmp_path / "d8.pdf"))[0]
    assert ("What tripped Latency above SLO: peak p99 2003 ms against its threshold of 100 ms "
            "(2 × the 50 ms SLO)") in first


def test_a_down_incident_says_what_the_probe_said_not_a_peak_under_its_threshold(
        qapp, workspace, tmp_path):
    """It read "peak 3.575 s against a threshold of 15 s": the silence when the probe said
    down, below the silence threshold, as if nothing had tripped."""
    ep = "v2+http://127.0.0.1:9/models/m"
    store = Store(workspace)
    write_requests(store, ep, 0, 10)
    store.write_batch([Sample(ep, T0, Metric.UP, 1.0)] + [
        Sample(ep, T0 + int(t * NS), Metric.UP, 0.0) for t in (10.0, 10.5, 11.5, 13.5, 17.5)],
        [])
    evaluate_range(store, T0, T0 + 18 * NS)
    [incident] = [i for i in store.incidents() if i["rule"] == "down"]
    store.close()
    first = _pages(write_report(workspace, incident["id"], tmp_path / "down.pdf"))[0]
    assert ("What tripped Endpoint down: the probe reports the endpoint down since "
            f"{utc_text(T0 + 10 * NS)} (its attempts to reach it got no answer)") in first
    assert "against a threshold" not in first
    # The figures hatch the outage, from the first failed attempt to the last one recorded.
    assert "down (the probe got no answer)" in first


def test_down_spans_run_from_the_first_up_0_to_the_next_up_1(workspace):
    ep, local = "v2+http://127.0.0.1:9/models/m", "onnx:/m.onnx"
    store = Store(workspace)
    store.write_batch([Sample(ep, T0 + int(t * NS), Metric.UP, v) for t, v in (
        (0, 1.0), (5, 0.0), (6, 0.0), (8, 0.0), (9, 1.0), (12, 1.0), (20, 0.0), (21, 0.0),
        (23, 0.0))], [])
    write_requests(store, local, 0, 30)
    assert down_spans(store, ep, T0, T0 + 30 * NS) == (
        (T0 + 5 * NS, T0 + 9 * NS), (T0 + 20 * NS, T0 + 23 * NS))
    # Already down when the plotted window starts: from its start.
    assert down_spans(store, ep, T0 + 7 * NS, T0 + 30 * NS) == (
        (T0 + 7 * NS, T0 + 9 * NS), (T0 + 20 * NS, T0 + 23 * NS))
    assert down_spans(store, ep, T0 + 10 * NS, T0 + 19 * NS) == ()
    assert down_spans(store, local, T0, T0 + 30 * NS) == ()  # a local model writes no up
    store.close()


# -- D11: characters the font cannot draw are said, not silently dropped ----------------------

def test_characters_no_font_can_draw_are_named_in_the_report(qapp, workspace, tmp_path):
    store = Store(workspace)
    incident_id = _burst(store, "onnx:glyphs.onnx")
    # A private-use character of plane 16: no font draws it, on any machine.
    store.add_incident_note(incident_id, "customer \U0010fffd informed", author="ann",
                            ts_ns=T0 + 100 * NS)
    store.close()
    text = " ".join(_pages(write_report(workspace, incident_id, tmp_path / "d11.pdf")))
    assert "some characters (U+10FFFD; 1 in all) cannot be shown in this report's font" in text


def test_a_report_the_font_draws_whole_says_nothing_of_missing_characters(qapp, workspace,
                                                                          tmp_path):
    store = Store(workspace)
    incident_id = _burst(store, "onnx:Modèle_qualité.onnx")
    store.add_incident_note(incident_id, "Rollback durchgeführt — ticket INC-4711 × 2",
                            author="ann", ts_ns=T0 + 100 * NS)
    store.close()
    text = " ".join(_pages(write_report(workspace, incident_id, tmp_path / "plain.pdf")))
    assert "durchgeführt — ticket INC-4711 × 2" in text
    assert "cannot be shown" not in text
