"""Status bar read-outs: samples/s, dropped, database size, event-loop lag. Thread: GUI only."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QStatusBar

from widgets.theme import Theme


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


class StatusBarWidget(QStatusBar):
    LAG_WARN_MS = 100.0

    def __init__(self, theme: Theme, parent=None) -> None:
        super().__init__(parent)
        self.theme = theme
        self.rate_label = QLabel()
        self.dropped_label = QLabel()
        self.db_label = QLabel()
        self.lag_label = QLabel()
        self.paused_label = QLabel()
        self.problem_label = QLabel()  # the workspace cannot be written, or is gone
        self.problem_label.setWordWrap(False)
        for label, tip in (
            (self.problem_label, "What stops recording into the workspace"),
            (self.paused_label, "Live plots are frozen; press Space to resume"),
            (self.rate_label, "Samples committed to the workspace per second"),
            (self.dropped_label, "Samples lost: refused while the recorder fell behind, or "
                                 "not written to the workspace"),
            (self.db_label, "Workspace file size (with its write-ahead log)"),
            (self.lag_label, "Longest GUI stall in the last 3 s"),
        ):
            label.setToolTip(tip)
            label.setContentsMargins(8, 0, 8, 0)
            self.addPermanentWidget(label)
        self.show_figures(0.0, 0, 0, 0.0)
        self.set_paused(False)
        self.show_problem(None)

    def show_problem(self, text: str | None) -> None:
        """A workspace problem in warning colour (full disk, locked, deleted); None hides it."""
        self.problem_label.setText(text or "")
        self.problem_label.setToolTip(text or "")
        self.problem_label.setStyleSheet(f"color: {self.theme.states['down']};")
        self.problem_label.setVisible(bool(text))

    def show_figures(self, samples_per_s: float, dropped: int, db_bytes: int,
                     lag_ms: float) -> None:
        self.rate_label.setText(f"{samples_per_s:,.0f} samples/s")
        self.dropped_label.setText(f"{dropped:,} dropped")
        warn = self.theme.states["down"]
        self.dropped_label.setStyleSheet(f"color: {warn};" if dropped else "")
        self.db_label.setText(f"db {human_bytes(db_bytes)}")
        self.lag_label.setText(f"lag {lag_ms:.0f} ms")
        self.lag_label.setStyleSheet(f"color: {warn};" if lag_ms > self.LAG_WARN_MS else "")

    def set_paused(self, paused: bool) -> None:
        self.paused_label.setText("⏸ paused" if paused else "")
        self.paused_label.setVisible(paused)

    def apply_theme(self, theme: Theme) -> None:
        self.theme = theme
