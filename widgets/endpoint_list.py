"""The list of endpoints: status dot, name, kind, model version, provider. Thread: GUI only.

Fed plain strings by its owner; it knows nothing of probes.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTreeWidget, QTreeWidgetItem

from widgets.endpoint_panel import is_scraped, short_names
from widgets.theme import Theme

COLUMNS = ("Endpoint", "Kind", "Version", "Provider", "Requests")


def is_machine(endpoint: str, kind: str = "") -> bool:
    """``system:``: it samples this machine and sends no request."""
    return endpoint.partition(":")[0] == "system" or kind == "system"


def list_name(short: str) -> str:
    """A panel's short name without its scheme (``onnx: wine-v1.onnx`` -> ``wine-v1.onnx``):
    the Kind column says it, and in a narrow dock the scheme left room for nothing else
    (two models read ``onnx:....onnx``)."""
    _, sep, rest = short.partition(": ")
    return rest if sep and rest else short


def dot_icon(color: str, size: int = 12) -> QIcon:
    pix = QPixmap(size, size)
    pix.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pix)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor(color))
    painter.drawEllipse(1, 1, size - 2, size - 2)
    painter.end()
    return QIcon(pix)


class EndpointListWidget(QTreeWidget):
    current_endpoint_changed = Signal(str)  # "" when none is selected

    def __init__(self, theme: Theme, parent=None) -> None:
        super().__init__(parent)
        self.theme = theme
        self._items: dict[str, QTreeWidgetItem] = {}
        self._states: dict[str, str] = {}
        self._icons: dict[str, QIcon] = {}
        self.setColumnCount(len(COLUMNS))
        self.setHeaderLabels(list(COLUMNS))
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setAlternatingRowColors(False)
        self.setIconSize(QSize(12, 12))
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        # Cut in the middle: endpoints on one host differ in their port and model, at the end.
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header = self.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.currentItemChanged.connect(self._on_current_item_changed)

    def _icon(self, state: str) -> QIcon:
        icon = self._icons.get(state)
        if icon is None:
            icon = self._icons[state] = dot_icon(self.theme.states.get(state, self.theme.muted))
        return icon

    def set_endpoint(self, endpoint: str, *, state: str, kind: str = "", version: str = "",
                     provider: str = "", requests: int | None = None, detail: str = "") -> None:
        item = self._items.get(endpoint)
        if item is None:
            item = self._items[endpoint] = QTreeWidgetItem(self)
            item.setData(0, Qt.ItemDataRole.UserRole, endpoint)
            for e, name in short_names(list(self._items)).items():  # may tell two apart now
                self._items[e].setText(0, list_name(name))
            if self.currentItem() is None:
                self.setCurrentItem(item)
        self.set_state(endpoint, state, detail)
        count = "" if requests is None else f"{requests:,}"
        if count and is_scraped(endpoint, kind):
            # A metrics page's probe sends no request of its own, only GETs of the page: its
            # count is of scrapes; the server's request rate is in its panel's header.
            count += " scrapes"
            item.setToolTip(4, "pages scraped; the server's own request rate is in its "
                               "panel's header and Throughput plot")
        elif count and is_machine(endpoint, kind):
            # system: sends no request either: it counts its samples of this machine.
            count += " samples"
            item.setToolTip(4, "samples of this machine taken (CPU %, RAM, the process's "
                               "RSS); system: sends no requests")
        for col, text in ((1, kind), (2, version), (3, provider), (4, count)):
            if item.text(col) != text:
                item.setText(col, text)

    def set_state(self, endpoint: str, state: str, detail: str = "") -> None:
        """Only the state (and why) of a listed endpoint; its other columns stay."""
        item = self._items.get(endpoint)
        if item is None:
            return
        if self._states.get(endpoint) != state:
            self._states[endpoint] = state
            item.setIcon(0, self._icon(state))
        item.setToolTip(0, f"{endpoint}\n{state}" + (f": {detail}" if detail else ""))

    def state(self, endpoint: str) -> str | None:
        return self._states.get(endpoint)

    def row_texts(self, endpoint: str) -> dict[str, str]:
        """What the row shows, by column title (empty when the endpoint is not listed)."""
        item = self._items.get(endpoint)
        return {} if item is None else {c: item.text(k) for k, c in enumerate(COLUMNS)}

    def remove_endpoint(self, endpoint: str) -> None:
        item = self._items.pop(endpoint, None)
        self._states.pop(endpoint, None)
        if item is not None:
            self.takeTopLevelItem(self.indexOfTopLevelItem(item))

    def endpoints(self) -> list[str]:
        return list(self._items)

    def current_endpoint(self) -> str:
        item = self.currentItem()
        return "" if item is None else str(item.data(0, Qt.ItemDataRole.UserRole))

    def select(self, endpoint: str) -> None:
        item = self._items.get(endpoint)
        if item is not None:
            self.setCurrentItem(item)

    def apply_theme(self, theme: Theme) -> None:
        self.theme = theme
        self._icons.clear()
        for endpoint, item in self._items.items():
            item.setIcon(0, self._icon(self._states.get(endpoint, "stopped")))

    def _on_current_item_changed(self, current, _previous) -> None:
        self.current_endpoint_changed.emit(
            "" if current is None else str(current.data(0, Qt.ItemDataRole.UserRole)))

