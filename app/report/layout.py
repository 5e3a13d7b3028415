"""A small flowing page layout over QPdfWriter: headings, paragraphs, key-value blocks, tables
whose header repeats on every page, and figures; then page headers and "page n of N" footers.
Thread: any one thread (QPdfWriter and QPainter need no GUI thread; a QGuiApplication must
exist for fonts).

Layout happens first, into a list of pages of drawing operations, so the total page count is
known when the footers are painted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PySide6.QtCore import QIODevice, QMarginsF, QPointF, QRectF, Qt
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetricsF,
    QPageLayout,
    QPageSize,
    QPainter,
    QPdfWriter,
    QPen,
    QTextLayout,
    QTextOption,
)

DPI = 300
PT = DPI / 72.0  # device units per typographic point
FONT_FAMILY = "DejaVu Sans"
INK = QColor("#1d2430")
MUTED = QColor("#5b6573")
RULE = QColor("#c9cfd8")
HEADER_FILL = QColor("#eef1f5")
ACCENT = QColor("#1f5fa8")

Op = Callable[[QPainter], None]
ORPHAN_LINES = 2  # a paragraph broken at a page's foot leaves at least this many lines each side


def font(size_pt: float, *, bold: bool = False, mono: bool = False) -> QFont:
    f = QFont("DejaVu Sans Mono" if mono else FONT_FAMILY)
    f.setPointSizeF(size_pt)
    f.setBold(bold)
    # Ligatures would put one glyph for "fi" into the PDF's text: a search for "confidence"
    # or "file" would then miss it.
    for tag in ("liga", "clig", "dlig"):
        f.setFeature(QFont.Tag(tag), 0)
    return f


_DRAWABLE: dict[tuple[str, str], bool] = {}


def drawable(ch: str, f: QFont) -> bool:
    """Whether ``ch`` gets a real glyph in ``f`` or any font Qt falls back to on this machine
    (not the empty box of glyph 0, which also drops it from the PDF's text)."""
    key = (ch, f.family())
    if key not in _DRAWABLE:
        tl = QTextLayout(ch, f)
        tl.beginLayout()
        tl.createLine().setLineWidth(1e6)
        tl.endLayout()
        _DRAWABLE[key] = all(0 not in run.glyphIndexes() for run in tl.glyphRuns())
    return _DRAWABLE[key]


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    weight: float  # share of the table's width
    mono: bool = False
    # Never wrapped: as wide as its widest cell (a latency of 2003.12 broken into "2003." and
    # "12" reads as two numbers); the other columns share what is left by weight.
    fit: bool = False


class PageFlow:
    """Places blocks top to bottom, starting new pages as needed."""

    def __init__(self, writer: QPdfWriter, header: str) -> None:
        self.writer = writer
        self.header = header
        rect = writer.pageLayout().paintRectPixels(DPI)
        self.width = float(rect.width())
        self.height = float(rect.height())
        self.top = 16 * PT  # room for the running header
        self.bottom = self.height - 18 * PT  # room for the footer
        self.pages: list[list[Op]] = [[]]
        self.y = 0.0  # the first page has no running header
        # The heading(s) just placed that must not end a page: (index of their first op on
        # the last page, y where they start). Cleared by anything placed after them.
        self._kept: tuple[int, float] | None = None
        self.undrawable: set[str] = set()  # characters laid out that no font here can draw

    # -- measuring --------------------------------------------------------------------------

    def wrapped(self, text: str, f: QFont, width: float) -> tuple[QTextLayout, float]:
        """Text broken into lines at word boundaries (mid-word only for a word wider than the
        line, such as a URI); measured and later drawn by the same layout."""
        text = str(text)
        self.undrawable.update(ch for ch in set(text)
                               if ord(ch) > 0x7F and not ch.isspace() and not drawable(ch, f))
        tl = QTextLayout(text.replace("\n", "\u2028"), f, self.writer)
        option = QTextOption()
        option.setWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        tl.setTextOption(option)
        tl.beginLayout()
        h = 0.0
        while True:
            line = tl.createLine()
            if not line.isValid():
                break
            line.setLineWidth(width)
            line.setPosition(QPointF(0, h))
            h += line.height()
        tl.endLayout()
        return tl, h

    def text_height(self, text: str, f: QFont, width: float) -> float:
        return self.wrapped(text, f, width)[1]

    # -- flow -------------------------------------------------------------------------------

    def new_page(self) -> None:
        """Go on at the top of a new page. A heading that nothing has followed yet goes along:
        what follows it is moving to this page, and a heading must not end the one before."""
        kept, self._kept = self._kept, None
        if kept is not None and kept[0] > 0:  # not at the top of its page already
            first, y0 = kept
            moved, self.pages[-1][first:] = self.pages[-1][first:], []
            dy = self.top - y0
            self.pages.append([self._shifted(op, dy) for op in moved])
            self.y += dy
            self._kept = (0, self.top)
            return
        self.pages.append([])
        self.y = self.top

    @staticmethod
    def _shifted(op: Op, dy: float) -> Op:
        def shifted(p: QPainter) -> None:
            p.translate(0, dy)  # paint() saves and restores the painter around each op
            op(p)

        return shifted

    def ensure(self, height: float) -> None:
        if self.y + height > self.bottom and self.y > self.top:
            self.new_page()

    def add(self, op: Op) -> None:
        self.pages[-1].append(op)
        self._kept = None

    def space(self, pt: float) -> None:
        self.y += pt * PT

    def text(self, text: str, f: QFont, *, color: QColor = INK, indent: float = 0.0,
             after_pt: float = 4.0, keep_with_next: float = 0.0) -> None:
        """A paragraph. With ``keep_with_next``, a heading: it stays on one page with that
        much of what follows, and goes to the next page with it if it moves there."""
        tl, h = self.wrapped(text, f, self.width - indent)
        # A paragraph that does not fit here breaks across the page when enough of it fits
        # (a long note fills the page instead of leaving its foot empty); a short one moves
        # to the next page whole. One taller than a page must break.
        if h <= self.bottom - self.top and not (keep_with_next == 0
                                                and self._breaks_well(tl)):
            self.ensure(h + keep_with_next)
        if self.y + h > self.bottom:  # breaks here, or a heading came along and it no more fits
            self.flow_lines(tl, indent, color)
            self.y += after_pt * PT
            return
        kept, y0 = self._kept, self.y
        at = QPointF(indent, self.y)

        def op(p: QPainter) -> None:
            p.setPen(color)
            tl.draw(p, at)

        self.add(op)
        if keep_with_next:  # a run of headings (a section, then a note's header) stays together
            self._kept = kept or (len(self.pages[-1]) - 1, y0)
        self.y += h + after_pt * PT

    def _breaks_well(self, tl: QTextLayout) -> bool:
        """Whether a paragraph can start here and go on over the page: at least ORPHAN_LINES
        lines fit here and at least as many are left for the next page."""
        if tl.lineCount() < 2 * ORPHAN_LINES:
            return False
        top = tl.lineAt(0).y()
        bottom = tl.lineAt(ORPHAN_LINES - 1)
        return self.y + bottom.y() + bottom.height() - top <= self.bottom

    def flow_lines(self, tl: QTextLayout, x: float, color: QColor) -> None:
        """Draw a laid-out block from here on, as many lines per page as fit: a block taller
        than a page (a long note, a long list) breaks across pages instead of running off
        the bottom of one."""
        lines = [tl.lineAt(i) for i in range(tl.lineCount())]
        i = 0
        while i < len(lines):
            top = lines[i].y()
            room = self.bottom - self.y
            j = i
            while j < len(lines) and lines[j].y() + lines[j].height() - top <= room:
                j += 1
            # Neither one line alone at the foot of a page nor alone at the top of the next.
            if j < len(lines) and len(lines) - j < ORPHAN_LINES:
                j = max(i, len(lines) - ORPHAN_LINES)
            if j - i < min(ORPHAN_LINES, len(lines) - i) and i == 0 and self.y > self.top:
                j = i
            if j == i:
                if self.y > self.top:
                    self.new_page()
                    continue
                j = i + 1  # one line taller than a page: drawn all the same
            part, at = lines[i:j], QPointF(x, self.y - top)

            # tl is held too: a QTextLine is a view into its layout, which must outlive it.
            def op(p: QPainter, part=part, at=at, tl=tl) -> None:
                p.setPen(color)
                for line in part:
                    line.draw(p, at)

            self.add(op)
            self.y += part[-1].y() + part[-1].height() - top
            i = j
            if i < len(lines):
                self.new_page()

    def heading(self, text: str, keep_with_next_pt: float = 60) -> None:
        """A section heading, kept on one page with the first ``keep_with_next_pt`` of what
        follows (more for a section that opens with a paragraph and a table)."""
        self.space(6)
        self.text(text, font(13, bold=True), color=ACCENT, after_pt=4,
                  keep_with_next=keep_with_next_pt * PT)

    def key_values(self, pairs: Sequence[tuple[str, str]], key_width_pt: float = 110, *,
                   mono_values: QFont | None = None) -> None:
        kf, vf = font(9, bold=True), font(9)
        kw = key_width_pt * PT
        for key, value in pairs:
            kl, kh = self.wrapped(key, kf, kw - 6 * PT)
            vl, vh = self.wrapped(value, mono_values if mono_values else vf, self.width - kw)
            h = max(kh, vh)
            if h > self.bottom - self.top:  # a value taller than a page breaks across pages
                # The key with the value's first lines, which flow_lines keeps together.
                first = vl.lineAt(min(ORPHAN_LINES, vl.lineCount()) - 1)
                self.ensure(max(kh, first.y() + first.height()))
                y = self.y

                def key_op(p: QPainter, kl=kl, y=y) -> None:
                    p.setPen(MUTED)
                    kl.draw(p, QPointF(0, y))

                self.add(key_op)
                self.flow_lines(vl, kw, INK)
                self.y += 2.5 * PT
                continue
            self.ensure(h)
            y = self.y

            def op(p: QPainter, kl=kl, vl=vl, y=y) -> None:
                p.setPen(MUTED)
                kl.draw(p, QPointF(0, y))
                p.setPen(INK)
                vl.draw(p, QPointF(kw, y))

            self.add(op)
            self.y += h + 2.5 * PT
        self.space(4)

    def table(self, columns: Sequence[Column], rows: Sequence[Sequence[str]], *,
              size_pt: float = 7.5) -> None:
        """A table; its header row is drawn again at the top of every page it spans."""
        pad = 2.5 * PT
        hf = font(size_pt, bold=True)
        cell_fonts = [font(size_pt, mono=c.mono) for c in columns]
        widths = self._widths(columns, rows, cell_fonts, hf, pad)
        header_h = max(self.text_height(c.title, hf, w - 2 * pad)
                       for c, w in zip(columns, widths, strict=True)) + 2 * pad

        def draw_header(y: float) -> None:
            def op(p: QPainter) -> None:
                p.fillRect(QRectF(0, y, self.width, header_h), HEADER_FILL)
                p.setFont(hf)
                p.setPen(INK)
                x = 0.0
                for c, w in zip(columns, widths, strict=True):
                    p.drawText(QRectF(x + pad, y + pad, w - 2 * pad, header_h - 2 * pad),
                               int(Qt.TextFlag.TextWordWrap), c.title)
                    x += w

            self.add(op)
            self.y = y + header_h

        self.ensure(header_h * 3)
        draw_header(self.y)
        for i, row in enumerate(rows):
            cells = [self.wrapped(str(v), f, w - 2 * pad)
                     for v, f, w in zip(row, cell_fonts, widths, strict=True)]
            h = max(c[1] for c in cells) + 2 * pad
            if self.y + h > self.bottom:
                self.new_page()
                draw_header(self.y)
            y = self.y

            def op(p: QPainter, cells=cells, y=y, h=h, shade=i % 2 == 1) -> None:
                if shade:
                    p.fillRect(QRectF(0, y, self.width, h), QColor("#f8f9fb"))
                p.setPen(QPen(RULE, 0.5 * PT))
                p.drawLine(QRectF(0, y, self.width, h).bottomLeft(),
                           QRectF(0, y, self.width, h).bottomRight())
                x = 0.0
                p.setPen(INK)
                for (tl, _), w in zip(cells, widths, strict=True):
                    tl.draw(p, QPointF(x + pad, y + pad))
                    x += w

            self.add(op)
            self.y += h
        self.space(6)

    def _widths(self, columns: Sequence[Column], rows: Sequence[Sequence[str]],
                cell_fonts: Sequence[QFont], hf: QFont, pad: float) -> list[float]:
        """Each column's share of the width by weight; a ``fit`` column at least as wide as
        its widest cell line (and its header's longest word), taken from the others."""
        total = sum(c.weight for c in columns)
        widths = [self.width * c.weight / total for c in columns]
        fixed: dict[int, float] = {}
        for i, (c, f) in enumerate(zip(columns, cell_fonts, strict=True)):
            if not c.fit:
                continue
            cells, head = QFontMetricsF(f, self.writer), QFontMetricsF(hf, self.writer)
            need = max([0.0] + [cells.horizontalAdvance(line) for r in rows
                                for line in str(r[i]).split("\n")]
                       + [head.horizontalAdvance(w) for w in c.title.split()]) + 2 * pad + PT
            fixed[i] = min(max(widths[i], need), self.width / 4)
        if fixed and len(fixed) < len(columns):
            rest = self.width - sum(fixed.values())
            free = sum(c.weight for i, c in enumerate(columns) if i not in fixed)
            widths = [fixed.get(i, rest * c.weight / free) for i, c in enumerate(columns)]
        return widths

    def block(self, height: float, draw: Callable[[QPainter, QRectF], None]) -> None:
        """A fixed-height block (a figure) drawn by ``draw`` into its rectangle."""
        self.ensure(height)
        rect = QRectF(0, self.y, self.width, height)
        self.add(lambda p: draw(p, rect))
        self.y += height

    # -- painting ---------------------------------------------------------------------------

    def paint(self, painter: QPainter, footer_left: str,
              on_page: Callable[[int, int], None] = lambda i, n: None) -> None:
        total = len(self.pages)
        for i, ops in enumerate(self.pages):
            if i:
                self.writer.newPage()
            for op in ops:
                painter.save()
                op(painter)
                painter.restore()
            self._chrome(painter, i + 1, total, footer_left)
            on_page(i + 1, total)

    def _chrome(self, p: QPainter, number: int, total: int, footer_left: str) -> None:
        small = font(7.5)
        p.setFont(small)
        p.setPen(MUTED)
        if number > 1:
            header = QFontMetricsF(small, self.writer).elidedText(
                self.header, Qt.TextElideMode.ElideMiddle, self.width)
            p.drawText(QRectF(0, 0, self.width, 10 * PT), int(Qt.AlignmentFlag.AlignLeft),
                       header)
            p.setPen(QPen(RULE, 0.5 * PT))
            p.drawLine(QRectF(0, 11 * PT, self.width, 0).topLeft(),
                       QRectF(0, 11 * PT, self.width, 0).topRight())
        y = self.height - 11 * PT
        p.setPen(QPen(RULE, 0.5 * PT))
        p.drawLine(QRectF(0, y - 3 * PT, self.width, 0).topLeft(),
                   QRectF(0, y - 3 * PT, self.width, 0).topRight())
        p.setPen(MUTED)
        p.drawText(QRectF(0, y, self.width * 0.75, 10 * PT), int(Qt.AlignmentFlag.AlignLeft),
                   footer_left)
        p.drawText(QRectF(0, y, self.width, 10 * PT), int(Qt.AlignmentFlag.AlignRight),
                   f"Page {number} of {total}")


def page_size(name: str) -> QPageSize:
    sizes = {"a4": QPageSize.PageSizeId.A4, "letter": QPageSize.PageSizeId.Letter}
    return QPageSize(sizes[name.lower()])


def make_writer(target: str | QIODevice, size: str, title: str, creator: str) -> QPdfWriter:
    """A PDF writer onto a file path or an open device (the report paints into memory)."""
    writer = QPdfWriter(target)
    writer.setResolution(DPI)
    writer.setTitle(title)
    writer.setCreator(creator)
    writer.setPageLayout(QPageLayout(page_size(size), QPageLayout.Orientation.Portrait,
                                     QMarginsF(18, 16, 18, 14), QPageLayout.Unit.Millimeter))
    return writer
