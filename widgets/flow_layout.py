"""A layout that lays its widgets in a row and wraps them onto more rows when it is narrower
than the row: a docked panel's controls in a small window. Thread: GUI only."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, QSize, Qt
from PySide6.QtWidgets import QLayout, QLayoutItem, QWidget, QWidgetItem


class FlowLayout(QLayout):
    """Widgets in a row that wraps onto more rows when the panel is narrower than the row
    (a docked panel in a small window): its width is then set by the widest widget, not
    by the row. Spare width in a line goes to its widgets added with a stretch."""

    def __init__(self) -> None:
        super().__init__()
        self._items: list[QLayoutItem] = []
        self._stretch: dict[int, int] = {}  # id(item) -> stretch

    def addWidget(self, widget: QWidget, stretch: int = 0) -> None:  # type: ignore[override]
        self.addChildWidget(widget)
        item = QWidgetItem(widget)
        self._stretch[id(item)] = stretch
        self._items.append(item)
        self.invalidate()

    def addItem(self, item: QLayoutItem) -> None:
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:
        if not 0 <= index < len(self._items):
            return None
        item = self._items.pop(index)
        self._stretch.pop(id(item), None)
        return item

    def expandingDirections(self) -> Qt.Orientation:
        return Qt.Orientation.Horizontal

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return self._lay_out(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:
        super().setGeometry(rect)
        self._lay_out(rect, move=True)

    def sizeHint(self) -> QSize:
        """One line of every widget at its size hint."""
        shown = [i for i in self._items if not i.isEmpty()]
        gaps = self._gap() * max(0, len(shown) - 1)
        m = self.contentsMargins()
        return QSize(sum(i.sizeHint().width() for i in shown) + gaps + m.left() + m.right(),
                     max((i.sizeHint().height() for i in shown), default=0)
                     + m.top() + m.bottom())

    def minimumSize(self) -> QSize:
        size = QSize()
        for item in self._items:
            if not item.isEmpty():
                size = size.expandedTo(item.minimumSize())
        m = self.contentsMargins()
        return size + QSize(m.left() + m.right(), m.top() + m.bottom())

    def _gap(self) -> int:
        return self.spacing() if self.spacing() >= 0 else 6

    def _lay_out(self, rect: QRect, *, move: bool) -> int:
        """Place the widgets line by line in ``rect`` (when ``move``); the height used."""
        m = self.contentsMargins()
        area = rect.adjusted(m.left(), m.top(), -m.right(), -m.bottom())
        gap = self._gap()
        lines: list[list[QLayoutItem]] = [[]]
        used = 0
        for item in (i for i in self._items if not i.isEmpty()):
            width = item.sizeHint().width()
            if lines[-1] and used + gap + width > area.width():
                lines.append([])
                used = 0
            used += (gap if lines[-1] else 0) + width
            lines[-1].append(item)
        y = area.y()
        for line in lines:
            if not line:
                continue
            widths = [i.sizeHint().width() for i in line]
            spare = area.width() - sum(widths) - gap * (len(line) - 1)
            weights = [self._stretch.get(id(i), 0) for i in line]
            if spare > 0 and sum(weights):
                for k, w in enumerate(weights):
                    widths[k] += spare * w // sum(weights)
            # A widget alone on a line narrower than it still fits (its minimum allows).
            widths = [max(i.minimumSize().width(), min(w, area.width(), i.maximumSize().width()))
                      for i, w in zip(line, widths, strict=True)]
            height = max(i.sizeHint().height() for i in line)
            if move:
                x = area.x()
                for item, w in zip(line, widths, strict=True):
                    h = min(height, item.maximumSize().height())
                    item.setGeometry(QRect(QPoint(x, y + (height - h) // 2), QSize(w, h)))
                    x += w + gap
            y += height + gap
        return y - gap - area.y() + m.top() + m.bottom() if y > area.y() else 0
