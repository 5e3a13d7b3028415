"""The "Attach probe" dialog: a URI, a file picker for .onnx, the schemes on offer. Thread: GUI.

The dialog opens the probe itself and stays open showing the error when that fails, so a
mistyped URI is fixed where it was typed. Opening runs on a worker thread (a server is asked
for its status and metadata first, which a slow one stretches to seconds, or forever for one
that trickles its answer); the dialog says it is connecting, and Cancel abandons the attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
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

from app.core.agent_auth import TOKEN_ENV
from app.core.domain import EndpointUri, UriError
from app.gui.probe_opener import discard, open_in_background

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


def token_sent(uri: str) -> str | None:
    """Which token an endpoint URI sends, and to where, in words; None when it sends none."""
    try:
        parsed = EndpointUri.parse(uri)
    except UriError:
        return None
    host = parsed.target.removeprefix("//").split("/", 1)[0]
    if parsed.scheme.startswith("agent+"):
        source = (f"the token in the file {parsed.param('token_file')}"
                  if parsed.param("token_file") else
                  f"the token in ${parsed.param('token_env') or TOKEN_ENV}")
    elif parsed.param("token_env"):
        source = f"the token in ${parsed.param('token_env')}"
    else:
        return None
    return f"{source} to {host}"


def onnx_uri(path: str | Path) -> str:
    return f"onnx:{path}?provider=cpu"


class AttachDialog(QDialog):
    def __init__(self, schemes: Sequence[str], open_probe: Callable[[str], object],
                 adopt: Callable[[object], object],
                 user_errors: tuple[type[BaseException], ...], parent=None) -> None:
        """``open_probe(uri)`` runs on a worker thread; ``adopt(probe)`` on this one."""
        super().__init__(parent)
        self.setWindowTitle("Attach probe")
        self.setMinimumWidth(560)
        self._open = open_probe
        self._adopt = adopt
        self._user_errors = user_errors
        self._attempt: dict | None = None  # the connection in flight: {"cancelled": bool}
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

    def set_uri(self, text: str) -> None:
        """Fill in a URI (attaching a recorded endpoint again), its kind following it, and
        say which token it would send where: a URI from someone else's workspace names its
        host, and the token is this user's."""
        self.uri.setText(text)
        self._on_uri_text_edited(text)
        sent = token_sent(text)
        if sent:
            self.hint.setText(self.hint.text() + f"<br>Attaching sends {sent}.")

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
        # A dialog does not grow by itself for a wrapped label's new lines: an onnxruntime
        # error of four lines had its last one cut in half.
        layout = self.layout()
        layout.activate()
        needed = layout.totalHeightForWidth(self.width())
        if needed > self.height():
            self.resize(self.width(), needed)

    def connecting(self) -> bool:
        return self._attempt is not None

    def _set_connecting(self, uri: str | None) -> None:
        busy = uri is not None
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(not busy)
        self.uri.setEnabled(not busy)
        self.kind.setEnabled(not busy)
        self.browse.setEnabled(not busy)
        if busy:
            self.error.hide()
            self.hint.setText(f"Connecting to <code>{uri}</code>… (Cancel stops waiting)")
        else:
            self._on_kind_current_index_changed()

    def _on_buttons_accepted(self) -> None:
        text = self.uri.text().strip()
        if not text:
            self.show_error("Type an endpoint URI, for example "
                            + EXAMPLES.get(self.kind.currentData() or "", "system:"))
            return
        if self._attempt is not None:
            return
        attempt = self._attempt = {"cancelled": False}
        self._set_connecting(text)
        open_in_background(text, self._open, self._user_errors, self.parent() or self,
                           lambda probe, error: self._on_opened(attempt, probe, error))

    def _on_opened(self, attempt: dict, probe: object, error: str | None) -> None:
        if attempt["cancelled"]:
            discard(probe)
            return
        self._attempt = None
        self._set_connecting(None)
        if error is not None:
            self.show_error(error)
            return
        try:
            self._adopt(probe)
        except self._user_errors as exc:
            discard(probe)
            self.show_error(str(exc))
            return
        self.accept()

    def reject(self) -> None:
        if self._attempt is not None:  # stop waiting; the worker's probe is closed on arrival
            self._attempt["cancelled"] = True
            self._attempt = None
        super().reject()
