"""Shows one recorded request: its input, output, latency, status and error. Thread: GUI."""

from __future__ import annotations

import time

import numpy as np
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QPlainTextEdit,
    QVBoxLayout,
)

from app.core.store import StoredCapture

MAX_VALUES = 64  # a wide tensor is summarised, not dumped


def format_tensor(name: str, array: np.ndarray) -> str:
    flat = array.reshape(-1)
    with np.printoptions(precision=5, suppress=True, linewidth=88):
        body = np.array2string(flat[:MAX_VALUES], separator=", ")
    more = f" … {flat.size - MAX_VALUES} more" if flat.size > MAX_VALUES else ""
    return f"{name}  {array.dtype}  shape {tuple(array.shape)}\n{body}{more}"


class CaptureDialog(QDialog):
    def __init__(self, stored: StoredCapture, parent=None) -> None:
        super().__init__(parent)
        c = stored.capture
        self.capture = c
        self.setWindowTitle(f"Request {c.request_id or stored.id}")
        self.setMinimumSize(560, 420)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.ts_ns / 1e9))
        form = QFormLayout()
        rows = [
            ("Endpoint", c.endpoint),
            ("Time", f"{when}.{c.ts_ns // 1_000_000 % 1000:03d}"),
            ("Latency", f"{c.latency_ms:.3f} ms"),
            ("Status", str(c.status) + ("" if not c.failed else "  (failure)")),
            ("Model version", c.model_version or "—"),
            ("Prediction", c.prediction or "—"),
            ("Label", c.label or "—"),
            ("Confidence", "—" if c.confidence is None else f"{c.confidence:.3f}"),
        ]
        if c.error:
            rows.append(("Error", c.error))
        for name, value in rows:
            label = QLabel(value)
            label.setWordWrap(True)
            if (name == "Status" and c.failed) or name == "Error":
                label.setObjectName("error")
            form.addRow(name, label)
        self.inputs = QPlainTextEdit(
            "\n\n".join(format_tensor(b.name, b.to_array()) for b in c.inputs) or "(none)")
        self.outputs = QPlainTextEdit(
            "\n\n".join(format_tensor(b.name, b.to_array()) for b in c.outputs) or "(none)")
        for box in (self.inputs, self.outputs):
            box.setReadOnly(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel("Input" + (" (truncated)" if c.truncated else "")))
        layout.addWidget(self.inputs, 1)
        layout.addWidget(QLabel("Output"))
        layout.addWidget(self.outputs, 1)
        layout.addWidget(buttons)
