"""Remembered settings (geometry, docks, theme, recent workspaces) and the demo workspace path.

Thread: GUI. Everything goes through one QSettings scope, "ProbeScope"/"ProbeScope", so tests
can redirect it with ``QSettings.setPath``.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, QStandardPaths

ORG = "ProbeScope"
APP = "ProbeScope"
MAX_RECENT = 8


def demo_db_path() -> Path:
    """<user data dir>/probescope/demo.db (the folder is created)."""
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.GenericDataLocation)
    folder = Path(base) / "probescope"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "demo.db"


class Settings:
    def __init__(self) -> None:
        self.q = QSettings(ORG, APP)

    def recent(self) -> list[str]:
        value = self.q.value("recent", [])
        if isinstance(value, str):  # QSettings hands back a lone string for a one-item list
            value = [value]
        return [str(v) for v in value or [] if v]

    def add_recent(self, path: Path) -> list[str]:
        entry = str(path.resolve())
        items = [entry] + [p for p in self.recent() if p != entry]
        self.q.setValue("recent", items[:MAX_RECENT])
        return items[:MAX_RECENT]

    def remove_recent(self, path: Path) -> list[str]:
        items = [p for p in self.recent() if p != str(path)]
        self.q.setValue("recent", items)
        return items

    def theme(self) -> str:
        return str(self.q.value("theme", "dark"))

    def set_theme(self, name: str) -> None:
        self.q.setValue("theme", name)

    def time_window(self) -> str:
        return str(self.q.value("time_window", "1 min"))

    def set_time_window(self, key: str) -> None:
        self.q.setValue("time_window", key)

    def geometry(self) -> QByteArray | None:
        value = self.q.value("geometry")
        return value if isinstance(value, QByteArray) else None

    def window_state(self) -> QByteArray | None:
        value = self.q.value("window_state")
        return value if isinstance(value, QByteArray) else None

    def save_layout(self, geometry: QByteArray, state: QByteArray) -> None:
        self.q.setValue("geometry", geometry)
        self.q.setValue("window_state", state)
        self.q.sync()
