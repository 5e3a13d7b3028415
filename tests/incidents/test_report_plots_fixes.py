"""The report's figures and page flow, checked on what they paint: text read back from the PDF
with pypdf (with its position where that matters), lines read back from a rendered image.

The series come from a real workspace through Store.history, binned on the report's grid."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pypdf import PdfReader
from PySide6.QtCore import QRectF
from PySide6.QtGui import QColor, QFontMetricsF, QImage, QPainter

from app.core.domain import Metric
from app.core.drift_history import drift_matrix
from app.core.store import Store
from app.report import write_report
from app.report.data import HeatmapFigure, SeriesFigure
from app.report.layout import PT, PageFlow, font, make_writer
from app.report.plots import PALETTE, draw_heatmap, draw_series
from tests.incidents.conftest import NS, T0, write_requests, write_series

EP = "onnx:plots.onnx"
FIGURE_H = 175 * PT  # as the report draws a series figure


def _on_grid(store: Store, metric: str, start: int, end: int, n: int,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(grid, mean, min, max) of a series on n buckets, NaN where a bucket holds nothing: the
    shape the report's figures take."""
    h = store.history(EP, metric, start, end, n)
    width = max(1, (end - start) // n)
    grid = start + np.arange(n, dtype=np.int64) * width
    out = [np.full(n, np.nan) for _ in range(3)]
    at = ((h.ts_ns - start) // width).astype(np.int64).clip(0, n - 1)
    for o, v in zip(out, (h.mean, h.vmin, h.vmax), strict=True):
        o[at] = v
    return grid, *out


def _latency_figure(store: Store, start: int, end: int, n: int,
                    slo_ms: float | None = None) -> SeriesFigure:
    grid, mean, vmin, vmax = _on_grid(store, Metric.LATENCY_MS, start, end, n)
    return SeriesFigure("Latency", "q", grid, {"mean latency": mean}, (vmin, vmax), "ms",
                        {"SLO": slo_ms} if slo_ms else {})


def _pdf_items(tmp_path: Path, draw: Callable[[QPainter, QRectF], None],
               ) -> list[tuple[str, float, float]]:
    """Paint one figure on an A4 page; (text, x, y) of each piece of text, in device units."""
    path = tmp_path / "figure.pdf"
    writer = make_writer(str(path), "A4", "t", "c")
    painter = QPainter()
    assert painter.begin(writer)
    draw(painter, QRectF(0, 0, writer.pageLayout().paintRectPixels(300).width(),
                         writer.pageLayout().paintRectPixels(300).height() / 2))
    painter.end()
    items: list[tuple[str, float, float]] = []
    # pypdf reads Qt's word spacing as tabs; words are what matter.
    PdfReader(path).pages[0].extract_text(visitor_text=lambda text, cm, tm, fd, fs: items.append(
        (" ".join(text.split()), tm[4], tm[5])) if text.strip() else None)
    return items


def _zone_clear_of_labels(tmp_path: Path, items: list[tuple[str, float, float]], clock: str,
                          at_least: int = 3) -> list[str]:
    """The time labels (matching ``clock``) on the zone label's row; asserts none starts
    before "UTC" ends."""
    [(_, zx, zy)] = [i for i in items if i[0] == "UTC"]
    labels = [i for i in items if re.fullmatch(clock, i[0]) and abs(i[2] - zy) < 1]
    assert len(labels) >= at_least, labels  # the axis still has its labels
    writer = make_writer(str(tmp_path / "metrics.pdf"), "A4", "t", "c")  # never painted
    zone_end = zx + QFontMetricsF(font(7), writer).horizontalAdvance("UTC")
    for text, x, _ in labels:
        assert x >= zone_end, f"{text!r} starts at {x:.0f}, inside 'UTC' (to {zone_end:.0f})"
    return [t for t, _, _ in labels]


# -- the off-scale note (#7) ------------------------------------------------------------------


def test_a_peak_the_slo_line_brings_on_scale_is_not_called_off_scale(qapp, workspace, tmp_path):
    store = Store(workspace)
    write_requests(store, EP, 0, 120, latency_ms=0.2)
    write_series(store, EP, Metric.LATENCY_MS, [(30.05, 1.0)])  # a 1 ms spike, 5x the bulk
    start, end = T0, T0 + 120 * NS
    under_slo = _latency_figure(store, start, end, 120, slo_ms=5.0)
    no_slo = _latency_figure(store, start, end, 120)
    store.close()
    # The SLO line at 5 ms lifts the axis to 5.5 ms: the 1 ms peak is drawn in full.
    text = " ".join(t for t, _, _ in _pdf_items(tmp_path, lambda p, r: draw_series(
        p, r, under_slo, start, end, None)))
    assert "SLO 5 ms" in text and "off scale" not in text
    # Without it the axis is scaled to the bulk, and the note says where the peak went.
    text = " ".join(t for t, _, _ in _pdf_items(tmp_path, lambda p, r: draw_series(
        p, r, no_slo, start, end, None)))
    assert "peak 1 ms off scale" in text


def test_a_peak_above_the_slo_line_is_still_called_off_scale(qapp, workspace, tmp_path):
    store = Store(workspace)
    write_requests(store, EP, 0, 120, latency_ms=0.2)
    write_series(store, EP, Metric.LATENCY_MS, [(30.05, 40.0)])  # a stall far over the SLO
    start, end = T0, T0 + 120 * NS
    fig = _latency_figure(store, start, end, 120, slo_ms=5.0)
    store.close()
    items = _pdf_items(tmp_path, lambda p, r: draw_series(p, r, fig, start, end, None))
    assert "peak 40 ms off scale" in " ".join(t for t, _, _ in items)
    axis = [float(t) for t, _, _ in items if re.fullmatch(r"\d+(\.\d+)?", t)]
    assert max(axis) < 40  # and the axis indeed stops below it


# -- lines across gaps (#8) ---------------------------------------------------------------------


def _line_pixels(fig: SeriesFigure, start: int, end: int, columns: slice) -> int:
    """How many pixels in ``columns`` of the rendered figure's plot (not its legend) carry
    the first line's colour."""
    width = 2000
    image = QImage(width, int(FIGURE_H), QImage.Format.Format_RGB32)
    image.setDotsPerMeterX(11811)  # 300 dpi, as the PDF: fonts keep their size to the plot
    image.setDotsPerMeterY(11811)
    image.fill(QColor("white"))
    painter = QPainter(image)
    draw_series(painter, QRectF(0, 0, width, FIGURE_H), fig, start, end, None)
    painter.end()
    line = PALETTE[0]
    rgb = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), width, 4)
    plot_rows = slice(int(24 * PT), int(FIGURE_H - 20 * PT))
    b, g, r = (rgb[plot_rows, columns, k].astype(int) for k in range(3))
    near = (abs(r - line.red()) < 40) & (abs(g - line.green()) < 40) & (abs(b - line.blue()) < 40)
    return int(near.sum())


def test_a_line_is_not_drawn_across_a_day_with_no_data(qapp, workspace):
    store = Store(workspace)
    day = 86_400
    start, end = T0, T0 + 2 * day * NS
    # Two 90-s bursts a day apart in a 2-day window: 400 buckets of 432 s, one or two of them
    # holding data at each end, and nothing in between.
    write_requests(store, EP, 0.2 * day, 0.2 * day + 90, latency_ms=2.0)
    write_requests(store, EP, 1.8 * day, 1.8 * day + 90, latency_ms=2.0)
    fig = _latency_figure(store, start, end, 400)
    store.close()
    assert np.isfinite(fig.lines["mean latency"]).sum() <= 4
    # The middle of the figure is the middle of the gap: no line crosses it.
    assert _line_pixels(fig, start, end, slice(900, 1100)) == 0
    # Each burst is still drawn, as a dot where there is nothing to join it to.
    assert _line_pixels(fig, start, end, slice(0, 900)) > 0
    assert _line_pixels(fig, start, end, slice(1100, 2000)) > 0


def test_a_sparse_but_steady_series_is_still_joined(qapp, workspace):
    store = Store(workspace)
    # Memory every 10 s in 1-s buckets: nine empty buckets between points, and no gap.
    write_series(store, EP, Metric.RSS_MB, [(t, 100.0 + t / 10) for t in range(0, 300, 10)])
    start, end = T0, T0 + 300 * NS
    grid, mean, vmin, vmax = _on_grid(store, Metric.RSS_MB, start, end, 300)
    store.close()
    fig = SeriesFigure("Memory", "q", grid, {"RSS": mean}, (vmin, vmax), "MB", zero_based=False)
    assert _line_pixels(fig, start, end, slice(900, 1100)) > 0


# -- the time axis's labels (#10, #11) ----------------------------------------------------------


@pytest.mark.parametrize(("offset_s", "span_s", "clock", "labels"), [
    (0.5, 58, r"\d\d:\d\d:\d\d", 3),  # a tick half a second after the window's start
    (3600, 20 * 86_400, r"\d\d [A-Z][a-z]{2} \d\d:\d\d", 2),  # an hour after it, 20 days
])
def test_no_time_label_prints_over_the_utc_label(qapp, workspace, tmp_path, offset_s, span_s,
                                                 clock, labels):
    tick_every = 10 if span_s < 3600 else 7 * 86_400
    first_tick = (T0 // NS // tick_every + 1) * tick_every * NS
    start = first_tick - int(offset_s * NS)
    end = start + span_s * NS
    store = Store(workspace)
    write_requests(store, EP, (start - T0) / NS, (start - T0) / NS + 30, rate_hz=1.0)
    fig = _latency_figure(store, start, end, 100)
    store.close()
    items = _pdf_items(tmp_path, lambda p, r: draw_series(p, r, fig, start, end, None))
    _zone_clear_of_labels(tmp_path, items, clock, labels)


def _drift_figure(store: Store, start: int) -> HeatmapFigure:
    features = ("alcohol", "ash", "hue")
    for k in range(18):
        store.write_drift_evaluation(
            EP, start + k * 5 * NS, source="fast", rows_reference=1000, rows_current=500,
            share_drifted=0.0, points=[(f, "wasserstein", 0.02 * k * j, 0.1, 0.02 * k * j > 0.1)
                                       for j, f in enumerate(features)])
    m = drift_matrix(store, EP, start, start + 90 * NS)
    return HeatmapFigure("Drift", "q", m.ts_ns, m.features, m.severity)


def test_the_drift_heat_map_names_its_zone_and_its_incident_markers(qapp, workspace, tmp_path):
    # Ticks every 15 s, at T0 + 10 s, 25 s, ...: the first half a second from the left edge.
    start, end = T0 + 9_500_000_000, T0 + 99 * NS
    store = Store(workspace)
    fig = _drift_figure(store, start)
    store.close()
    opened, cleared = T0 + 40 * NS, T0 + 80 * NS
    items = _pdf_items(tmp_path, lambda p, r: draw_heatmap(p, r, fig, start, end,
                                                           (opened, cleared)))
    text = [t for t, _, _ in items]
    assert "incident opened" in text and "incident cleared" in text
    _zone_clear_of_labels(tmp_path, items, r"\d\d:\d\d:\d\d")
    # Still open: the end is not named, as it is not drawn.
    items = _pdf_items(tmp_path, lambda p, r: draw_heatmap(p, r, fig, start, end,
                                                           (opened, None)))
    text = [t for t, _, _ in items]
    assert "incident opened" in text and "incident cleared" not in text


# -- headings at a page's foot (#5) -------------------------------------------------------------


def _paint(flow: PageFlow, path: Path) -> list[str]:
    painter = QPainter()
    assert painter.begin(flow.writer)
    flow.paint(painter, "footer")
    painter.end()
    return [" ".join(page.extract_text().split()) for page in PdfReader(path).pages]


def _flow_at(tmp_path: Path, room_pt: float) -> tuple[PageFlow, Path]:
    """A page flow with ``room_pt`` left on its first page."""
    path = tmp_path / "flow.pdf"
    flow = PageFlow(make_writer(str(path), "A4", "t", "c"), "running header")
    flow.text("first page", font(9))
    flow.space((flow.bottom - flow.y) / PT - room_pt)
    return flow, path


def _page_of(pages: list[str], text: str) -> int:
    return next(k for k, page in enumerate(pages) if text in page)


def test_a_note_s_header_goes_to_the_next_page_with_its_text(qapp, tmp_path):
    # Room for the header and 24 pt, not for the three lines of its note: the note moves to
    # the next page whole (too short to break), and its header with it.
    flow, path = _flow_at(tmp_path, 36)
    flow.text("2026-12-05 15:07:41 UTC · alice", font(8, bold=True), after_pt=1,
              keep_with_next=24 * PT)
    flow.text("notebody " + "word " * 40, font(9), indent=8 * PT, after_pt=5)
    pages = _paint(flow, path)
    assert _page_of(pages, "15:07:41 UTC") == _page_of(pages, "notebody") == 1
    assert pages[0].startswith("first page") and "alice" not in pages[0]


def test_a_section_heading_goes_to_the_next_page_with_its_figure(qapp, tmp_path):
    flow, path = _flow_at(tmp_path, 90)  # the heading and 60 pt fit; the figure does not
    flow.heading("Figures")
    flow.block(FIGURE_H, lambda p, r: p.drawText(r, "figurebody"))
    pages = _paint(flow, path)
    assert _page_of(pages, "Figures") == _page_of(pages, "figurebody") == 1


def test_a_run_of_headings_stays_with_what_follows(qapp, tmp_path):
    flow, path = _flow_at(tmp_path, 90)  # a heading, then a caption kept with the figure
    flow.heading("Figures")
    flow.text("captiontext", font(9, bold=True), keep_with_next=24 * PT)
    flow.block(FIGURE_H, lambda p, r: p.drawText(r, "figurebody"))
    pages = _paint(flow, path)
    assert _page_of(pages, "Figures") == _page_of(pages, "captiontext") == 1
    assert _page_of(pages, "figurebody") == 1


def test_a_long_note_starts_at_the_foot_of_a_page_instead_of_leaving_it_empty(qapp, tmp_path):
    flow, path = _flow_at(tmp_path, 200)  # a quarter of a page left; the note is longer
    flow.text("2026-12-05 15:07:41 UTC · alice", font(8, bold=True), after_pt=1,
              keep_with_next=24 * PT)
    words = [f"w{i:04d}" for i in range(900)]
    flow.text(" ".join(words), font(9), indent=8 * PT, after_pt=5)
    pages = _paint(flow, path)
    assert "alice" in pages[0] and words[0] in pages[0]
    # Nothing lost at the break (pypdf may split a word over a line: spaces do not count).
    squashed = re.sub(r"\s+", "", "".join(pages))
    assert all(w in squashed for w in words)
    last = [w for w in words if w in pages[-1]]
    assert len(last) > 10  # the next page does not get a lone last line


def test_a_paragraph_broken_over_a_page_leaves_no_line_alone(qapp, tmp_path):
    words = [f"w{i:04d}" for i in range(200)]
    probe, _ = _flow_at(tmp_path, 100)
    tl, h = probe.wrapped(" ".join(words), font(9), probe.width)
    n = tl.lineCount()
    assert n >= 6
    # Room for all its lines but the last: that line would be alone at the next page's top.
    flow, path = _flow_at(tmp_path, (h - tl.lineAt(n - 1).height() / 2) / PT)
    flow.text(" ".join(words), font(9))
    pages = _paint(flow, path)
    second_last = " ".join(words)[tl.lineAt(n - 2).textStart():].split()[0]
    assert second_last in pages[1] and second_last not in pages[0]
    assert words[0] in pages[0]


def test_no_note_header_ends_a_page_of_a_real_report(qapp, workspace, tmp_path):
    store = Store(workspace)
    write_requests(store, EP, 0, 120, latency_ms=7.0)
    incident_id = store.insert_incident(
        EP, rule="latency", severity="warning", status="open", opened_ns=T0 + 40 * NS,
        trigger_ns=T0 + 45 * NS, value=7.0, threshold=5.0, summary="Latency above SLO",
        details={"detail": "p95 7.00 ms over 30 s; SLO 5 ms", "unit": "ms"})
    # Notes of one to a dozen lines over several pages: some headers land at a page's foot.
    for k in range(60):
        store.add_incident_note(incident_id, f"body{k:02d} " + "lorem ipsum dolor " * (k % 7 * 11),
                                author=f"author{k:02d}", ts_ns=T0 + (50 + k) * NS)
    store.close()
    pages = [" ".join(page.extract_text().split())
             for page in PdfReader(write_report(workspace, incident_id,
                                                tmp_path / "notes.pdf")).pages]
    for k in range(60):
        header = _page_of(pages, f"author{k:02d}")
        assert f"body{k:02d}" in pages[header], f"note {k}'s header ends page {header + 1}"
