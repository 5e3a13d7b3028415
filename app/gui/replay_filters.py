"""The replay panel's filter fields: the endpoint, kind of failure, label, recording version,
time and how many failures and controls Load failures lists; read as a ``Selection``, and set
back from a saved replay's. Not a widget: the panel lays out its row and connects Load
failures and Enter. Reads no store: the panel hands it the endpoints. Thread: GUI only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QCompleter, QLineEdit, QPushButton, QSpinBox

from app.core.domain import CaptureStatus
from app.core.replay import Selection
from widgets.flow_layout import FlowLayout

ALL = ""  # the endpoint and kind boxes' entry for no filter
_PICKED = -1  # the time filter's entry for a range picked on a plot or an incident


class FailureFilters:
    """The filter fields and ``row``, the layout that holds them (and Load failures)."""

    def __init__(self) -> None:
        self.endpoint_box = QComboBox()
        # Endpoint URIs are long: the box shrinks to fit a docked panel, its list shows them
        # whole, and the chosen one is in its tooltip.
        self.endpoint_box.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.endpoint_box.setMinimumContentsLength(24)
        self.endpoint_box.currentIndexChanged.connect(
            lambda _: self.endpoint_box.setToolTip(self.endpoint_box.currentData() or ""))
        self.kind_box = QComboBox()
        self.kind_box.addItem("all failures", ALL)
        for s in CaptureStatus:
            if s is not CaptureStatus.OK:
                self.kind_box.addItem(s.value.replace("_", " "), s.value)
        self.label_edit = QLineEdit(placeholderText="label")
        self.label_edit.setMinimumWidth(self.label_edit.fontMetrics().horizontalAdvance(
            "label") + 24)
        self.label_edit.setMaximumWidth(90)
        self.version_edit = QLineEdit(placeholderText="made by version")
        self.version_edit.setMinimumWidth(self.version_edit.fontMetrics().horizontalAdvance(
            "made by version") + 24)
        self.version_edit.setMaximumWidth(160)
        self.version_edit.setToolTip("only captures made by this model version (as the "
                                     "model reported it); suggestions from the endpoints")
        self.window_box = QComboBox()
        for text, seconds in (("any time", 0), ("last 5 min", 300), ("last hour", 3600),
                              ("last day", 86400)):
            self.window_box.addItem(text, seconds)
        self.window_box.setMinimumContentsLength(len("picked range"))
        self._range: tuple[int | None, int | None] = (None, None)
        self.limit_spin = QSpinBox(minimum=1, maximum=100_000, value=1000, prefix="max ")
        self.controls_spin = QSpinBox(minimum=0, maximum=100_000, value=200,
                                      suffix=" controls")
        self.load_button = QPushButton("Load failures")
        # Rows that wrap: in a window of 1280 px the docked panel is narrower than one row.
        self.row = FlowLayout()
        for w in (self.endpoint_box, self.kind_box, self.label_edit, self.version_edit,
                  self.window_box, self.limit_spin, self.controls_spin, self.load_button):
            self.row.addWidget(w, 1 if w is self.endpoint_box else 0)

    def selection(self) -> Selection:
        """The failures the fields choose; a relative time ("last hour") counts from now."""
        kind = self.kind_box.currentData()
        window_s = self.window_box.currentData()
        start_ns, end_ns = self._range if window_s == _PICKED else (None, None)
        if window_s and window_s != _PICKED:
            start_ns, end_ns = time.time_ns() - int(window_s * 1e9), None
        return Selection(endpoint=self.endpoint_box.currentData() or None,
                         kinds=(kind,) if kind else (), label=self.label_edit.text().strip()
                         or None, model_version=self.version_edit.text().strip() or None,
                         start_ns=start_ns, end_ns=end_ns, limit=self.limit_spin.value(),
                         controls=self.controls_spin.value())

    def set_time_range(self, start_ns: int | None, end_ns: int | None) -> None:
        """Limit the time to a range picked elsewhere; None at both ends clears the limit."""
        self._range = (start_ns, end_ns)
        picked = start_ns is not None or end_ns is not None
        at = self.window_box.findData(_PICKED)
        if at >= 0:
            self.window_box.removeItem(at)
        if picked:  # its own entry: "any time" stays there to go back to
            self.window_box.addItem("picked range", _PICKED)
        self.window_box.setCurrentIndex(self.window_box.findData(_PICKED) if picked else 0)

    def choose_endpoint(self, uri: str) -> None:
        self.endpoint_box.setCurrentIndex(max(0, self.endpoint_box.findData(uri)))

    def show(self, selection: Selection) -> None:
        """The fields as ``selection`` set them (a saved replay's)."""
        self.choose_endpoint(selection.endpoint or ALL)
        kind = selection.kinds[0] if len(selection.kinds) == 1 else ALL
        self.kind_box.setCurrentIndex(max(0, self.kind_box.findData(kind)))
        self.label_edit.setText(selection.label or "")
        self.version_edit.setText(selection.model_version or "")
        self.limit_spin.setValue(selection.limit)
        self.controls_spin.setValue(selection.controls)
        # Its times as they were: "last hour" then is not "last hour" now.
        self.set_time_range(selection.start_ns, selection.end_ns)

    def set_endpoints(self, endpoints: Sequence[Mapping[str, Any]]) -> None:
        """The endpoints to choose from (the store's rows: ``uri``, ``model_version``), and
        the model versions they reported as the version field's suggestions; the endpoint
        chosen stays chosen if it is still there."""
        current = self.endpoint_box.currentData()
        uris = [e["uri"] for e in endpoints]
        made_by = sorted({str(e["model_version"]) for e in endpoints if e["model_version"]})
        completer = QCompleter(made_by, self.version_edit)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.version_edit.setCompleter(completer)
        self.endpoint_box.clear()
        self.endpoint_box.addItem("all endpoints", ALL)
        for uri in uris:
            self.endpoint_box.addItem(uri if len(uri) < 60 else uri[:59] + "…", uri)
        if current:
            self.choose_endpoint(current)
