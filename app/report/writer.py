"""Writes one incident's PDF report: gathers the data, lays out the pages, paints them.
Thread: any one thread (the window calls it from a worker; the CLI from its main thread).
A QGuiApplication must exist (fonts); ``ensure_gui_app`` makes an offscreen one for the CLI.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from PySide6.QtCore import QBuffer, QIODevice
from PySide6.QtGui import QGuiApplication, QPainter

from app.core.domain import utc_text
from app.core.incident_rules import NS, RULE_TITLES
from app.core.incidents import find_incident, status_text
from app.core.output_files import refusal
from app.core.store import Store
from app.report import data as report_data
from app.report.layout import PT, Column, PageFlow, font, make_writer
from app.report.plots import draw_heatmap, draw_series

log = logging.getLogger(__name__)

PAGE_SIZES = ("A4", "Letter")
CONTEXT_S = 30.0  # plotted before an incident opened, at least (--context)
FIGURE_HEIGHT_PT = 175


class ReportError(Exception):
    """The report cannot be written; the message says why and what to do."""


class ReportCancelled(Exception):
    """The user cancelled the export; nothing was written."""


def ensure_gui_app() -> QGuiApplication:
    app = QGuiApplication.instance()
    if app is None:
        # Reports need fonts, not a screen: the offscreen platform works on headless servers.
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QGuiApplication([])
    return app  # type: ignore[return-value]


def _probescope_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("probescope")
    except PackageNotFoundError:
        return "0+unknown"


def shaded_span(incident: dict, resolved_ns: int | None, seen_ns: int | None = None
                ) -> tuple[int, int | None]:
    """What the figures shade as the incident: from its opening to its clearing, or to when
    a person resolved it, or to the endpoint's last observation (``seen_ns``) when that came
    first (nothing after it was observed); an active one runs to the plot's edge (None)."""
    end = incident["cleared_ns"] or resolved_ns
    if not incident["cleared_ns"] and end is not None and seen_ns is not None:
        end = max(int(incident["opened_ns"]), min(end, seen_ns))
    return int(incident["opened_ns"]), end


def _utc(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "-"
    return utc_text(ts_ns)


def _duration(ns: int) -> str:
    s = int(ns / 1e9)
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else \
        f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def check_writable(out: Path) -> None:
    """Fail early, with a line a person can act on, if ``out`` cannot be written."""
    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise ReportError(f"cannot write the report to {out}: it is a folder; give a file name")
    if not folder.is_dir():
        raise ReportError(f"cannot write the report to {out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ReportError(f"cannot write the report to {out}: permission denied; "
                          "choose another place to save it")
    why = refusal(out, (b"%PDF-",), "a PDF")  # never a workspace, a model, a device
    if why:
        raise ReportError(why)


def write_report(db_path: str | Path, incident: str | int, out: str | Path, *,
                 page_size: str = "A4", context_s: float = CONTEXT_S,
                 progress: Callable[[float], None] = lambda _: None,
                 cancelled: Callable[[], bool] = lambda: False) -> Path:
    """Write the PDF of ``incident`` (an id or 'latest') from the workspace at ``db_path``.

    Raises ReportError (unwritable path, unknown page size), IncidentError (no such incident),
    StoreError, or ReportCancelled; on any of them no file is left at ``out``.
    """
    # Path() drops a trailing separator ("newdir/" becomes "newdir"), and with it the only sign
    # that a folder was meant: refuse it here, before it turns into a file named like one.
    if os.path.basename(os.fspath(out)) in ("", ".", ".."):
        raise ReportError(f"cannot write the report to {os.fspath(out)}: it names a folder; "
                          "give a file name, e.g. report.pdf")
    out = Path(out)
    if page_size.lower() not in {s.lower() for s in PAGE_SIZES}:
        raise ReportError(f"unknown page size '{page_size}'; use {' or '.join(PAGE_SIZES)}")
    check_writable(out)
    ensure_gui_app()
    store = Store(db_path, readonly=True)
    try:
        row = find_incident(store, incident)
        progress(0.05)
        data = report_data.gather(store, row, _probescope_version(), context_s=context_s)
        data.workspace = Path(db_path).name
    finally:
        store.close()
    if cancelled():
        raise ReportCancelled("report export cancelled")
    progress(0.3)
    # Painted into a temporary file beside the target and moved into place at the end, so a
    # cancelled or failed export never leaves half a PDF under the user's name.
    try:
        fd, tmp = tempfile.mkstemp(prefix=".probescope-report-", suffix=".pdf",
                                   dir=out.parent)
    except OSError as exc:
        raise ReportError(f"cannot write the report to {out}: {exc.strerror}") from None
    # mkstemp makes it private (0600); a report is for sharing, like the file it replaces.
    os.fchmod(fd, out.stat().st_mode & 0o777 if out.exists() else 0o644)
    os.close(fd)
    try:
        pdf = _paint(data, page_size, progress, cancelled)
        # Qt's PDF writer does not report a failed write (a full disk left a truncated or
        # empty file behind "wrote"): it paints into memory, and Python's own write, flush
        # and fsync raise on the first byte the disk refuses.
        with open(tmp, "wb") as f:
            f.write(pdf)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out.resolve() if out.is_symlink() else out)
    except OSError as exc:  # a full disk, a file system that refuses the rename
        Path(tmp).unlink(missing_ok=True)
        raise ReportError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    progress(1.0)
    log.info("wrote incident report %s", out)
    return out


def _amount(inc: dict, key: str = "value") -> str:
    value, unit = inc[key], inc["details"].get("unit", "")
    if inc["rule"] in ("error_rate", "drift"):
        return f"{value:.1%}"
    return f"{value:.4g} {unit}".strip()


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.3g} ms"


def _quantile(inc: dict, slo_ms: float | None) -> tuple[str, float, float] | None:
    """Which quantile a latency incident's peak is, its SLO factor and the SLO it multiplied:
    the rule keeps them only in its settings (details.config) and its detail text, so they are
    matched back to the stored threshold. None when they do not match (an older workspace)."""
    details = inc.get("details") or {}
    config = details.get("config") or {}
    detail = str(details.get("detail") or "")
    said = re.search(r"SLO ([0-9.]+) ms", detail)
    slo = float(said.group(1)) if said else slo_ms
    threshold = float(inc["threshold"])
    if not slo or not isinstance(config, dict):
        return None
    candidates = []
    for q in ("p95", "p99"):
        try:
            factor = float(config[f"{q}_slo_factor"])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isclose(slo * factor, threshold, rel_tol=1e-6):
            candidates.append((q, factor))
    if len(candidates) > 1:  # equal factors: the quantile whose reading is the peak
        read = dict(re.findall(r"(p9[59]) ([0-9.]+) ms", detail))
        candidates = [c for c in candidates
                      if c[0] in read and math.isclose(float(read[c[0]]), float(inc["value"]),
                                                       abs_tol=0.01)] or candidates[-1:]
    if not candidates:
        return None
    q, factor = candidates[0]
    return q, factor, slo


def _tripped(inc: dict, slo: report_data.Slo) -> str:
    title = RULE_TITLES.get(inc["rule"], inc["rule"])
    detail = inc["details"].get("detail")
    if inc["rule"] == "down" and detail:
        # Its peak is the silence seen when it tripped: "peak 3.6 s against a threshold of
        # 15 s" read as if it had not tripped, where the probe itself had said "down".
        return f"{title}: {_down_wording(inc, detail)}"
    found = _quantile(inc, slo.judged_ms) if inc["rule"] == "latency" else None
    if found is None:
        return f"{title}: peak {_amount(inc)} against a threshold of {_amount(inc, 'threshold')}"
    q, factor, slo_ms = found
    whose = "the rule's" if slo.overridden else "the"
    return (f"{title}: peak {q} {_amount(inc)} against its threshold of "
            f"{_amount(inc, 'threshold')} ({factor:g} × {whose} {slo_ms:g} ms SLO)")


_UNTIL = {"cleared": "to its clearing", "resolved": "to the resolve",
          "last sample": "to the last sample", "recording ended": "to the end of the recording"}


def _share(part: float, whole: float) -> str:
    return f"{min(1.0, part / whole):.0%}" if whole > 0 else "-"


def _impact_rows(impact: report_data.Impact | None, inc: dict | None = None
                 ) -> list[tuple[str, str]]:
    """Page 1's totals over the incident itself, opening to end, each saying its window: the
    peak reading above covers only the rule's window, the failures section the plotted one.
    An outage leads with its downtime and a latency incident with its requests over the SLO:
    "0 of 16 requests failed" or a 34.9 % of wrong labels read as what the incident cost."""
    if impact is None:
        return []
    inc = inc or {}
    span_ns = impact.end_ns - impact.start_ns
    span = f"from opening {_UNTIL[impact.until]} ({_duration(span_ns)})"
    total_s = max(1e-9, span_ns / 1e9)
    failed = (f"{impact.failures:,} of {impact.requests:,} requests failed "
              f"({impact.error_rate:.1%})") if impact.requests else ""
    if impact.requests and inc.get("rule") == "down" and impact.down_s:
        text = (f"the probe found the endpoint down for "
                f"{_duration(int(impact.down_s * 1e9))} of the {_duration(span_ns)} "
                f"{span.split(' (')[0]} ({_share(impact.down_s, total_s)}); {failed}")
        early = impact.start_ns - (impact.requests_from_ns or impact.start_ns)
        if early > 0:
            text += (f", counted from the failed request that began the outage "
                     f"{early / 1e6:,.0f} ms before the opening")
        lost = impact.not_sent_estimate
        if lost:
            text += (f"; about {lost:,} requests were not sent while it was down (an "
                     f"estimate: {impact.before_rate_per_s:.3g}/s before the outage × "
                     f"the time down)")
        return [("Impact", text), *_latency_rows(impact)]
    if impact.requests and impact.over_slo is not None and impact.slo_ms is not None:
        config = (inc.get("details") or {}).get("config") or {}
        whose = "the incident rules'" if isinstance(config, dict) and config.get("slo_ms") \
            else "the endpoint's"
        text = (f"{impact.over_slo:,} of {impact.requests:,} requests "
                f"({impact.over_slo / impact.requests:.1%}) took longer than {whose} "
                f"{impact.slo_ms:g} ms SLO, the one this incident was judged with, {span}; "
                f"{impact.failures:,} ({impact.error_rate:.1%}) failed (see Top errors)")
    elif impact.requests:
        text = f"{failed} {span}"
    elif impact.unanswered:
        # A probe that cannot reach its server sends no request; its tries are what it has.
        tries = (f"{impact.attempts:,} attempts, none answered"
                 if impact.unanswered == impact.attempts else
                 f"{impact.unanswered:,} of {impact.attempts:,} attempts unanswered")
        text = f"the probe could not reach the endpoint {span}: {tries}, so no requests were sent"
    else:
        text = f"no requests were recorded {span}"
    if impact.down_s:
        who = "the endpoint was" if not impact.requests and impact.unanswered else \
            "the probe found the endpoint"
        text += (f"; {who} down for {_duration(int(impact.down_s * 1e9))}"
                 f" ({_share(impact.down_s, total_s)} of it)")
    return [("Impact", text), *_latency_rows(impact)]


def _latency_rows(impact: report_data.Impact) -> list[tuple[str, str]]:
    if impact.p95_ms is None:
        return []
    lat = f"p95 {_ms(impact.p95_ms)}, p99 {_ms(impact.p99_ms or 0)} during the incident"
    # Over the span the requests before it cover, not the context asked for: a 5-day
    # context over a 90 s recording said "in the 120 h before it opened".
    before = _duration(round((impact.start_ns - impact.before_start_ns) / 1e9) * NS)
    since = {"recording": " (from the recording's start)",
             "gap": " (from its first request in the plotted window)"}.get(
                 impact.before_since, "")
    if impact.before_p95_ms is not None:
        lat += (f"; p95 {_ms(impact.before_p95_ms)}, p99 {_ms(impact.before_p99_ms or 0)}"
                f" in the {before} before it opened{since}")
    else:
        lat += f"; no requests in the {before} before it opened"
    return [("Latency", lat)]


# The down rule's reading said "(every request failed)" of a probe that could send none: it
# could not reach the server, and the store keeps its tries as ``up`` 0, not as requests.
_DOWN_SAID = "(every request failed)"
_DOWN_MEANT = "(its attempts to reach it got no answer)"


def _down_wording(inc: dict, text: str) -> str:
    """``text`` (the rule's reading, or a note the rule wrote with it) in the wording that
    Impact and the failures section agree with."""
    return text.replace(_DOWN_SAID, _DOWN_MEANT) if inc.get("rule") == "down" else text


def _slo_text(slo: report_data.Slo, rule: str) -> str:
    """The SLO the incident was judged against; the endpoint's own beside it when the
    incident's rules overrode it, so neither is read for the other."""
    if slo.judged_ms is None:
        return "none set"
    if not slo.overridden:
        return f"{slo.judged_ms:g} ms"
    whose = "this incident's rule" if rule == "latency" else "set in the incident rules"
    return f"{slo.judged_ms:g} ms ({whose}; the endpoint's is {slo.endpoint_ms:g} ms)"


def _fold_notes(notes: list[dict], keep: int = 3) -> list[dict]:
    """A flapping rule writes a Cleared/Reopened pair per flap; past a few, one line says how
    many were left out. People's notes are always kept."""
    flaps = [i for i, n in enumerate(notes) if n.get("author") == "probescope"
             and n["text"].startswith(("Cleared", "Reopened"))]
    if len(flaps) <= 2 * keep:
        return notes
    hidden = set(flaps[keep:-keep])
    out: list[dict] = []
    for i, note in enumerate(notes):
        if i not in hidden:
            out.append(note)
        elif i == flaps[keep]:
            out.append({"ts_ns": note["ts_ns"], "author": "probescope",
                        "text": f"… {len(hidden)} more automatic Cleared/Reopened notes "
                                f"(the rule flapped) until {_utc(notes[flaps[-keep - 1]]['ts_ns'])}"
                                " …"})
    return out


def _title(data: report_data.ReportData) -> str:
    inc = data.incident
    return f"Incident #{inc['id']}: {RULE_TITLES.get(inc['rule'], inc['rule'])}"


def _paint(data: report_data.ReportData, page_size: str,
           progress: Callable[[float], None], cancelled: Callable[[], bool]) -> bytes:
    """The whole PDF, painted into memory (a report is tens to hundreds of KB)."""
    title = _title(data)
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    writer = make_writer(buffer, page_size, f"{title} on {data.incident['endpoint']}",
                         f"ProbeScope {data.probescope_version}")
    flow = PageFlow(writer, f"{title} · {data.incident['endpoint']}")
    _compose(flow, data, cancelled)
    if cancelled():
        raise ReportCancelled("report export cancelled")
    painter = QPainter()
    if not painter.begin(writer):
        raise ReportError("cannot write the report: the PDF could not be started")
    try:
        footer = (f"ProbeScope {data.probescope_version} · generated "
                  f"{_utc(datetime.now(UTC).timestamp() * 1e9)}")

        def on_page(n: int, total: int) -> None:
            progress(0.5 + 0.5 * n / total)
            if cancelled():
                raise ReportCancelled("report export cancelled")

        flow.paint(painter, footer, on_page)
    finally:
        finished = painter.end()
    if not finished:
        raise ReportError("cannot write the report: the PDF could not be finished")
    return bytes(buffer.data())


def _clipped_text(clipped: tuple[bool, bool]) -> str:
    """The phrase that says the window is shorter than the context asked for."""
    which = {(True, False): "start", (False, True): "end", (True, True): "start and end"}
    return f" (clipped to the recording's {which[clipped]})" if any(clipped) else ""


def _status(inc: dict) -> str:
    text = status_text(inc)
    return "cleared (by the rule)" if text == "cleared" else text


def _top_errors(flow: PageFlow, data: report_data.ReportData) -> None:
    """Each distinct failure once, with its count and when it was first and last seen: what a
    write-up names first ("HTTP 500 from the server, 200 times"), and what the failures table
    refers to instead of repeating a long message per row."""
    if not data.errors:
        return
    flow.heading("Top errors", 90)
    grouped = sum(g.count for g in data.errors) + data.errors_left_out
    rest = (f"; {data.errors_left_out:,} more in other errors" if data.errors_left_out else "")
    flow.text(f"The {grouped:,} failed request{'' if grouped == 1 else 's'} captured in the "
              "plotted window "
              f"({_utc(data.start_ns)} to {_utc(data.end_ns)}), grouped by status and error "
              f"text, most frequent first{rest}.", font(9))
    dated = report_data.spans_days(data.start_ns, data.end_ns)
    # The date on a line of its own: a narrow cell broke "2026-12-06" into "2026-12-0" / "6".
    fmt = "%Y-%m-%d\n%H:%M:%S" if dated else "%H:%M:%S"

    def clock(ns: int) -> str:
        return datetime.fromtimestamp(ns / 1e9, UTC).strftime(fmt)

    flow.table([Column("", 0.35, fit=True), Column("Status", 1.0, fit=True),
                Column("Count", 0.6, fit=True), Column("First seen", 0.9, fit=True),
                Column("Last seen", 0.9, fit=True), Column("Error", 6.0)],
               [[g.label, g.status, f"{g.count:,}", clock(g.first_ns), clock(g.last_ns),
                 report_data.clip(g.text)] for g in data.errors])


def _by(note: dict | None) -> str:
    """" by <author>" of a status change's note, when it names one."""
    return f" by {note['author']}" if note and note.get("author") else ""


def _related(r: dict, inc: dict) -> str:
    """One related incident; one of another endpoint is marked with it: "what else was
    affected" is the point of listing it."""
    where = "" if r["endpoint"] == inc["endpoint"] else f" on {r['endpoint']}"
    return (f"#{r['id']} {RULE_TITLES.get(r['rule'], r['rule'])}{where} ({_status(r)}, "
            f"opened {_utc(r['opened_ns'])})")


def _compose(flow: PageFlow, data: report_data.ReportData, cancelled: Callable[[], bool]) -> None:
    inc = data.incident
    flow.text("ProbeScope incident report", font(9), after_pt=2)
    flow.text(_title(data), font(20, bold=True), after_pt=4)
    # The stored detail is the reading at the incident's peak, over the rule's own window.
    peak = inc["details"].get("detail") or inc["summary"]
    flow.text(f"Peak reading: {_down_wording(inc, peak)}", font(10.5), after_pt=10)
    # Resolved by hand before the rule cleared: the resolve is its end, said as such (it is
    # not "still active", and there is no cleared time to show). Its time is the status
    # change's (report_data.resolve_time), never a later note that happens to start "Resolved".
    resolved_ns = data.resolved_ns
    by_hand = inc["cleared_ns"] is None and inc["status"] == "resolved"
    opened = int(inc["opened_ns"])
    ended = inc["cleared_ns"] or resolved_ns
    window = (ended or data.end_ns) - opened
    unobserved = data.impact is not None and data.impact.until == "recording ended"
    if inc["cleared_ns"]:
        cleared, still, so_far = _utc(inc["cleared_ns"]), "", ""
    elif resolved_ns and unobserved and data.impact is not None:
        # Nothing was measured between the recording's end and the resolve: the incident's
        # span stops at its last observation, and page 1 says where the rest went.
        seen = data.impact.end_ns
        window = seen - opened
        cleared = (f"not by the rule: the recording ended at {_utc(seen)}, "
                   f"{_duration(window)} after it opened, with the incident still open; "
                   f"resolved by hand at {_utc(resolved_ns)}{_by(data.resolve_note)}")
        still = " · resolved by hand after the recording ended"
        so_far = (f" (to the end of the recording; the {_duration(resolved_ns - seen)} from "
                  "then to the resolve was not observed)")
    elif resolved_ns:
        cleared = (f"not by the rule; resolved by hand at {_utc(resolved_ns)} "
                   f"({_duration(resolved_ns - opened)} after opening){_by(data.resolve_note)}")
        still, so_far = " · resolved by hand", " (to the resolve)"
    elif by_hand:
        cleared = "not by the rule; resolved by hand (the workspace does not say when)"
        still, so_far = " · resolved by hand", " (to the last sample)"
    else:
        cleared, still = "not cleared", " · still active at the last sample"
        so_far = " so far (to the last sample)"
    ack = data.acknowledged
    flow.key_values([
        ("Endpoint", inc["endpoint"]),
        ("Status", f"{_status(inc)} · severity {inc['severity']}{still}"),
        ("Opened", f"{_utc(inc['opened_ns'])} (rule first tripped)"),
        ("Confirmed", f"{_utc(inc['trigger_ns'])} (tripped on consecutive evaluations)"),
        *([("Acknowledged", f"{_utc(ack['ts_ns'])} ({_duration(ack['ts_ns'] - opened)} after "
                            f"opening){_by(ack)}")] if ack else []),
        ("Cleared", cleared),
        ("Duration", _duration(window) + so_far),
        *_impact_rows(data.impact, inc),
        ("What tripped", _tripped(inc, data.slo)),
        ("Plotted window", f"{_utc(data.start_ns)} to {_utc(data.end_ns)}"
                           + _clipped_text(data.clipped)),
        *([("Related", "; ".join(_related(r, inc) for r in data.related))]
          if data.related else []),
    ])
    _top_errors(flow, data)
    flow.heading("Model and endpoint")
    flow.key_values([
        ("Model version", data.model.get("version", "unknown")),
        ("Model file", data.model.get("path", "not a local model")),
        ("Served by", data.served_by),
        ("SLO", _slo_text(data.slo, inc["rule"])),
    ])
    flow.heading("Figures")
    unreached = data.impact is not None and not data.impact.requests \
        and bool(data.impact.unanswered)
    if not data.figures:
        # An unreachable endpoint has samples (its probe's tries), just none of these.
        flow.text("No requests, memory or drift were recorded for this endpoint in the "
                  "plotted window" + (": the probe could not reach it." if unreached else "."),
                  font(9))
    incident_span = shaded_span(inc, data.resolved_ns,
                                data.impact.end_ns if unobserved and data.impact else None)
    for i, fig in enumerate(data.figures, start=1):
        if cancelled():
            raise ReportCancelled("report export cancelled")
        draw = draw_heatmap if isinstance(fig, report_data.HeatmapFigure) else draw_series
        height = FIGURE_HEIGHT_PT * PT
        if isinstance(fig, report_data.HeatmapFigure):
            height = (60 + 11 * min(len(fig.features), 20)) * PT
        numbered = type(fig)(**{**{f: getattr(fig, f) for f in fig.__dataclass_fields__},
                                "title": f"Figure {i}. {fig.title}"})
        flow.block(height, lambda p, r, fig=numbered, draw=draw: draw(
            p, r, fig, data.start_ns, data.end_ns, incident_span))
        flow.space(8)
    # Heading, paragraph, table header and a few rows stay together.
    flow.heading("Failures in the window", 150 if data.failures_total else 60)
    if data.failures_total == 0:
        flow.text("No failed requests were captured in the incident window"
                  + (": the probe could not reach the endpoint, so it sent none (see Impact)."
                     if unreached else "."), font(9))
        if unreached and not data.errors:
            # Said, so nobody looks for it: what the probe printed is not in the workspace.
            flow.text("The workspace keeps no error text for these attempts, only that each "
                      "got no answer (the probe's up 0 samples, Figure 1); the probe's own "
                      "console or log said why.", font(9))
    else:
        counts = ", ".join(f"{s}: {n:,}" for s, n in data.status_counts.items() if s != "ok")
        shown, before = len(data.failures), data.listed_before
        listed = (f"{before} failures from before the rule tripped (the last ones before it "
                  "and the first of each status; marked \u201cbefore opening\u201d: they show "
                  f"how it began) and the first {shown - before} from its opening on"
                  if before else
                  f"The first {shown} since the rule first tripped")
        flow.text(f"{data.failures_total:,} failed requests captured in the plotted window, "
                  f"{_utc(data.start_ns)} to {_utc(data.end_ns)}, which includes the time "
                  f"before the incident opened ({counts}). {listed} are listed with their "
                  "inputs summarised; an error listed under Top errors is named by its label "
                  "there. Each replays bit for bit from its capture id.", font(9))
        flow.table([Column("ID", 0.65, fit=True), Column("Time (UTC)", 1.3),
                    Column("Status", 1.2), Column("ms", 0.5, fit=True),
                    Column("Outcome", 1.75), Column("Inputs", 3.9, mono=True)],
                   data.failures)
    if data.replays:
        flow.heading("Replay results", 120)
        flow.text("Failures captured in this window, replayed against model versions: per "
                  "version, how many it fixes, how many still fail, and how many got no answer "
                  "(the version could not be asked); and how many of the replay's passing "
                  "control captures it newly breaks. The same verdicts as `probescope "
                  "replay`.", font(9))
        flow.table([Column("Replay", 1.5), Column("Version", 1.6), Column("Failures", 0.8),
                    Column("Fixed", 0.7), Column("Still failing", 0.9),
                    Column("No answer", 0.8), Column("Newly broken", 1.0)], data.replays)
    if data.contract:
        flow.heading("Contract status", 120)
        flow.text(f"The handover contract beside the model ({data.contract[0][0]}), checked "
                  "against the model file when this report was written.", font(9))
        flow.table([Column(h, 1.0) for h in data.contract[1]], data.contract[2:])
    flow.heading("Notes")
    if not data.notes:
        flow.text("No notes.", font(9))
    for note in _fold_notes(data.notes):
        who = f" · {note['author']}" if note.get("author") else ""
        # Its header stays with the note's first lines, never alone at a page's foot.
        flow.text(f"{_utc(note['ts_ns'])}{who}", font(8, bold=True), after_pt=1,
                  keep_with_next=24 * PT)
        text = note["text"] if note.get("author") != "probescope" else \
            _down_wording(inc, note["text"])  # the rule's own words; a person's stay as written
        flow.text(text, font(9), indent=8 * PT, after_pt=5)
    # Read from this machine as the report is written: the workspace keeps no hardware, so
    # this must not pass for what served (or probed) the model.
    hw = data.hardware
    flow.heading("Machine this report was written on")
    flow.text("Read when this report was written, not from the workspace: this is the machine "
              "that wrote the report, not necessarily the one that probed or served the model"
              + ("; this endpoint's model was served outside ProbeScope (see Served by), so "
                 "none of this says what ran it." if data.remote else "."), font(9), after_pt=4)
    flow.key_values([
        ("Platform", hw["platform"]),
        ("CPU", f"{hw['cpu']} ({hw['cores']} logical cores)"),
        ("Python", hw["python"]),
        ("onnxruntime", hw["onnxruntime"]),
    ])
    flow.heading("Reproducibility")
    flow.key_values([
        ("Model sha256", data.model.get("sha256", "not a local model file")),
        ("ProbeScope", data.probescope_version),
        ("Incident rules", ", ".join(f"{k}={v}" for k, v in
                                     inc["details"].get("config", {}).items()) or "-"),
        # The file name alone: the folder (often the user's home) would travel with a report
        # that is shared; whoever sends the report knows where the file is.
        ("Workspace", f"{data.workspace or 'not known'} (the failures' capture ids and the "
                      "queries below are read from it)"),
        ("Endpoint", f"{inc['endpoint']} (ENDPOINT in the queries below)"),
    ])
    if flow.undrawable:
        # Said, not silently dropped: a box in a model's name changes what the report names.
        shown = sorted(flow.undrawable)
        codes = ", ".join(f"U+{ord(c):04X}" for c in shown[:12])
        flow.key_values([("Missing glyphs", (
            f"some characters ({codes}{', …' if len(shown) > 12 else ''}; {len(shown)} in "
            "all) cannot be shown in this report's font on the machine that wrote it: they "
            "print as empty boxes and are missing from the PDF's text. Read them from the "
            "workspace."))])
    pairs = [(f"Figure {i}", fig.query) for i, fig in enumerate(data.figures, start=1)]
    pairs.append(("Store.history", report_data.HISTORY_SQL.split(" runs ", 1)[1]))
    flow.key_values(pairs, mono_values=font(7, mono=True))
