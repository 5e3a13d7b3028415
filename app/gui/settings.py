"""Remembered settings (geometry, docks, theme, recent workspaces, the endpoints attached in
each workspace) and the demo workspace path.

Thread: GUI. Everything goes through one QSettings scope, "ProbeScope"/"ProbeScope", so tests
can redirect it with ``QSettings.setPath``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, QStandardPaths

ORG = "ProbeScope"
APP = "ProbeScope"
MAX_RECENT = 8
# Workspaces whose attached endpoints are remembered: the recent ones and a few more, so a
# long-lived settings file does not grow with every workspace ever opened.
MAX_ATTACHED_WORKSPACES = 4 * MAX_RECENT


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

    def attached(self, workspace: Path) -> list[tuple[str, str]]:
        """The endpoints attached in ``workspace`` when it was last open here, as (endpoint,
        URI it was attached with) pairs in attach order. Kept in the user's settings, not in
        the workspace: a workspace from someone else attaches nothing by itself."""
        entries = self._attached_map().get(str(workspace.resolve()), [])
        return [(str(e), str(u)) for e, u in entries]

    def set_attached(self, workspace: Path, pairs: list[tuple[str, str]]) -> None:
        table = self._attached_map()
        key = str(workspace.resolve())
        table.pop(key, None)
        if pairs:
            table[key] = [list(p) for p in pairs]
        # The newest last (dicts keep insertion order): the oldest go first past the cap.
        while len(table) > MAX_ATTACHED_WORKSPACES:
            table.pop(next(iter(table)))
        self.q.setValue("attached", json.dumps(table))

    def _attached_map(self) -> dict[str, list]:
        try:
            table = json.loads(str(self.q.value("attached", "{}")))
        except ValueError:  # a hand-edited or damaged settings file: start over
            return {}
        if not isinstance(table, dict):
            return {}
        return {k: v for k, v in table.items() if isinstance(v, list)
                and all(isinstance(p, list) and len(p) == 2 for p in v)}

    def theme(self) -> str:
        return str(self.q.value("theme", "dark"))

    def set_theme(self, name: str) -> None:
        self.q.setValue("theme", name)

    def time_window(self) -> str:
        return str(self.q.value("time_window", "1 min"))

    def set_time_window(self, key: str) -> None:
        self.q.setValue("time_window", key)

    def _number(self, key: str, default: float) -> float:
        try:
            value = float(self.q.value(key, default))
        except (TypeError, ValueError):  # a hand-edited settings file
            return default
        return value if math.isfinite(value) else default

    def panel_height(self, default: int) -> int:
        return int(self._number("panel_height_px", default))

    def set_panel_height(self, px: int) -> None:
        self.q.setValue("panel_height_px", px)

    def percentile_window(self, default: float) -> float:
        return self._number("percentile_window_s", default)

    def set_percentile_window(self, seconds: float) -> None:
        self.q.setValue("percentile_window_s", seconds)

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
