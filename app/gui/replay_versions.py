"""The replay panel's version picker: a list of registered and added model versions, each
ticked or not, in the order bisect walks (drag to change it). Reads no store: the panel hands
it the registry. Thread: GUI only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractItemView, QListWidget, QListWidgetItem, QWidget

from app.core.versions import ModelVersion, free_name

_REGISTERED = Qt.ItemDataRole.UserRole + 1  # the item came from the registry
_VERSIONS_MAX_PX = 140  # the version picker grows to its rows up to this, then scrolls


def _same(location: str) -> str:
    """A key that is equal for two spellings of one model file."""
    return str(Path(location).resolve()) if "://" not in location else location


class VersionListWidget(QListWidget):
    """Versions to replay on: text is the name, ``UserRole`` the location."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(3 * self.fontMetrics().height() + 12)
        self.setMaximumHeight(_VERSIONS_MAX_PX)
        # Bisect walks the list top to bottom: drag to change the order for this replay.
        self.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.setToolTip("tick the versions to replay on; drag to change the "
                        "order bisect walks; Delete removes one added here")

    def refresh(self, current: Sequence[ModelVersion], extra: Sequence[str] = ()) -> None:
        """``current`` registered versions (registry order) then ``extra`` locations, all
        checked; registered ones removed since are dropped from the list."""
        still = {_same(v.location) for v in current}
        for i in reversed(range(self.count())):
            item = self.item(i)
            if item.data(_REGISTERED) and _same(item.data(Qt.ItemDataRole.UserRole)) not in still:
                self.takeItem(i)
        items = [self.item(i) for i in range(self.count())]
        taken = {item.text(): _same(item.data(Qt.ItemDataRole.UserRole)) for item in items}
        found = [(v.location, v.name, True) for v in current]
        found += [(x, Path(x).stem if x.endswith(".onnx") else x, False) for x in extra]
        for location, name, from_registry in found:
            if _same(location) in taken.values():
                continue  # the same file, named relatively and absolutely, is one version
            # Two files, one stem: a replay's columns must differ.
            name = free_name(name, _same(location), taken)
            taken[name] = _same(location)
            self.addItem(self._new_item(name, location, registered=from_registry))
        self._fit()

    def restore(self, versions: Sequence[tuple[str, str]]) -> None:
        """Tick exactly ``versions`` ((location, name): a saved replay's, in its bisect
        order) and put them first in that order, so Replay reruns that replay: one not in
        the list (a file the CLI replayed on) is added, under its saved name; the others
        stay, unticked, after them."""
        taken = {self.item(i).text(): _same(self.item(i).data(Qt.ItemDataRole.UserRole))
                 for i in range(self.count())}
        wanted: list[int] = []  # rows, in the saved order
        for location, name in versions:
            row = self._find(location)
            if row is None:
                name = free_name(name, _same(location), taken)
                taken[name] = _same(location)
                self.addItem(self._new_item(name, location, registered=False))
                row = self.count() - 1
            if row not in wanted:
                wanted.append(row)
        order = wanted + [r for r in range(self.count()) if r not in wanted]
        items = [self.item(r) for r in order]
        for r in reversed(range(self.count())):
            self.takeItem(r)
        for k, item in enumerate(items):
            item.setCheckState(Qt.CheckState.Checked if k < len(wanted)
                               else Qt.CheckState.Unchecked)
            self.addItem(item)
        self._fit()

    def _find(self, location: str) -> int | None:
        """The row of the version at ``location`` (however it is spelt), or None."""
        key = _same(location)
        return next((i for i in range(self.count())
                     if _same(self.item(i).data(Qt.ItemDataRole.UserRole)) == key), None)

    @staticmethod
    def _new_item(name: str, location: str, *, registered: bool) -> QListWidgetItem:
        item = QListWidgetItem(name)
        item.setData(_REGISTERED, registered)
        item.setData(Qt.ItemDataRole.UserRole, location)
        item.setToolTip(location)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked)
        return item

    def checked(self) -> list[tuple[str, str]]:
        """(location, name) of the versions ticked, in list order."""
        out = []
        for i in range(self.count()):
            item = self.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                out.append((item.data(Qt.ItemDataRole.UserRole), item.text()))
        return out

    @staticmethod
    def is_registered(item: QListWidgetItem) -> bool:
        """Whether ``item`` came from the registry (removed in the Versions panel, not here)."""
        return bool(item.data(_REGISTERED))

    def remove(self, item: QListWidgetItem) -> None:
        self.takeItem(self.row(item))
        self._fit()

    def _fit(self) -> None:
        # As tall as its rows: taller, it took the failure list's room in a short dock.
        rows = max(3, self.count())
        row_px = max(self.sizeHintForRow(0), self.fontMetrics().height())
        self.setMaximumHeight(min(_VERSIONS_MAX_PX, rows * row_px + 2 * self.frameWidth() + 4))
