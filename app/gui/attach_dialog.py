"""The "Attach probe" dialog: a URI, a file picker for .onnx, the schemes on offer. Thread: GUI.

The dialog calls ``attach(uri)`` itself and stays open showing the error when it raises, so
a mistyped URI is fixed where it was typed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
)

EXAMPLES = {
    "onnx": "onnx:path/to/model.onnx?provider=cpu&rate=20",
    "system": "system:",
    "v2+http": "v2+http://127.0.0.1:8000/models/NAME",
    "torchserve+http": "torchserve+http://127.0.0.1:8080/NAME",
    "tfserving+http": "tfserving+http://127.0.0.1:8501/NAME",
    "prom+http": "prom+http://127.0.0.1:8002/metrics",
    "agent+http": "agent+http://127.0.0.1:7070",
    "v2+https": "v2+https://models.example.org/models/NAME",
    "prom+https": "prom+https://prometheus.example.org/metrics",
    "agent+https": "agent+https://edge-box.example.org:7070",
}


def onnx_uri(path: str | Path) -> str:
    return f"onnx:{path}?provider=cpu"


class AttachDialog(QDialog):
    def __init__(self, schemes: Sequence[str], attach: Callable[[str], object],
                 user_errors: tuple[type[BaseException], ...], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Attach probe")
        self.setMinimumWidth(560)
        self._attach = attach
        self._user_errors = user_errors
        self.kind = QComboBox()
        for scheme in schemes:
            self.kind.addItem(f"{scheme}:", scheme)
        self.uri = QLineEdit()
        self.uri.setPlaceholderText(EXAMPLES.get(schemes[0], "scheme:target") if schemes else "")
        self.uri.setClearButtonEnabled(True)
        self.browse = QPushButton("Browse…")
        self.browse.setToolTip("Pick an .onnx model file")
        self.hint = QLabel()
        self.hint.setObjectName("hint")
        self.hint.setWordWrap(True)
        self.error = QLabel()
        self.error.setObjectName("error")
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.hide()
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Attach")

        row = QHBoxLayout()
        row.addWidget(self.uri, 1)
        row.addWidget(self.browse)
        form = QFormLayout()
        form.addRow("Kind", self.kind)
        form.addRow("URI", row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.hint)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

        self.kind.currentIndexChanged.connect(self._on_kind_current_index_changed)
        self.browse.clicked.connect(self._on_browse_clicked)
        self.buttons.accepted.connect(self._on_buttons_accepted)
        self.buttons.rejected.connect(self.reject)
        self.uri.textEdited.connect(self._on_uri_text_edited)
        # A model on this machine is the common first probe; the kind follows a typed URI.
        self.kind.setCurrentIndex(max(0, self.kind.findData("onnx")))
        self._on_kind_current_index_changed()

    def _on_uri_text_edited(self, text: str) -> None:
        self.error.hide()
        scheme = text.strip().split(":", 1)[0] if ":" in text else ""
        at = self.kind.findData(scheme)
        if at >= 0 and at != self.kind.currentIndex():
            self.kind.setCurrentIndex(at)

    def _on_kind_current_index_changed(self, _index: int = 0) -> None:
        scheme = self.kind.currentData() or ""
        example = EXAMPLES.get(scheme, f"{scheme}:TARGET")
        self.uri.setPlaceholderText(example)
        self.browse.setVisible(scheme == "onnx")
        self.hint.setText(f"for example <code>{example}</code>. Tokens never go in the URI: "
                          "set them in an environment variable or a token file.")

    def _on_browse_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "ONNX model", "", "ONNX models (*.onnx)")
        if path:
            self.uri.setText(onnx_uri(path))

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.show()

    def _on_buttons_accepted(self) -> None:
        text = self.uri.text().strip()
        if not text:
            self.show_error("Type an endpoint URI, for example "
                            + EXAMPLES.get(self.kind.currentData() or "", "system:"))
            return
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            self._attach(text)
        except self._user_errors as exc:
            self.show_error(str(exc))
            return
        finally:
            QApplication.restoreOverrideCursor()
        self.accept()
