"""A live plot's menu of our own: export the curves in sight as CSV, save the plot as PNG,
reset the zoom. pyqtgraph's own menu stays off: the live plots' time axes are linked and driven
by the window, and its range and mouse settings would fight that.

Thread: GUI only. ``PlotMenu`` is mixed into ``SeriesPlotWidget`` (widgets/plots.py), whose
curves, labels, legend, unit and zoom it reads.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox

from app.core.csv_cells import inert

log = logging.getLogger(__name__)

_export_dir = Path.home()  # where the last export went; the next one offers the same folder


def write_series_csv(path: str | Path, series: Sequence[tuple[str, np.ndarray, np.ndarray]],
                     unit: str) -> int:
    """Write each series as two columns, its time (local ISO 8601 with the UTC offset) and its
    value, side by side; returns the number of data rows.

    Series have their own time stamps (each request, each second), so they are not joined on
    one time column; gaps (NaN breaks in a line) are not data and are left out."""
    header: list[str] = []
    columns: list[tuple[list[str], list[str]]] = []
    for label, t, v in series:
        keep = np.isfinite(v)
        # A series' name can come from a server's metrics page or an agent: never a formula.
        header += [inert(f"{label} time"), inert(f"{label} ({unit})")]
        columns.append(([_iso_time(x) for x in t[keep]], [repr(float(x)) for x in v[keep]]))
    rows = max((len(times) for times, _ in columns), default=0)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i in range(rows):
            row: list[str] = []
            for times, values in columns:
                row += [times[i], values[i]] if i < len(times) else ["", ""]
            writer.writerow(row)
    return rows


def _iso_time(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, tz=UTC).astimezone().isoformat(
        timespec="milliseconds")


class PlotMenu:
    """The menu and the exports behind it, for a ``SeriesPlotWidget``."""

    def context_menu(self) -> QMenu:
        """The plot's menu, its Reset zoom enabled only where there is a zoom to reset."""
        if self._menu is None:
            self._menu = QMenu(self)
            self._menu.addAction("Export data as CSV…", self._on_menu_export_csv)
            self._menu.addAction("Save image as PNG…", self._on_menu_save_png)
            self._menu.addSeparator()
            # Double-click does the same; a live view has no zoom of its own to reset.
            self._reset_action = self._menu.addAction("Reset zoom", self.reset_zoom)
        self._reset_action.setEnabled(self.frozen)
        return self._menu

    def visible_series(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(legend label, times, values) of each drawn curve, within the x range in sight."""
        x0, x1 = self.getPlotItem().getViewBox().viewRange()[0]
        out = []
        for key, (t, v) in self._data.items():
            if not self.curves[key].isVisible() or self.legend.getLabel(self.curves[key]) is None:
                continue
            i, j = np.searchsorted(t, (x0, x1), side="left")
            if j > i:
                out.append((self._labels.get(key, key), t[i:j], v[i:j]))
        return out

    def write_csv(self, path: str | Path) -> int:
        """The curves drawn in the visible time range, as CSV (see ``write_series_csv``)."""
        return write_series_csv(path, self.visible_series(), self.unit)

    def save_png(self, path: str | Path) -> None:
        """The plot as drawn, without the hover read-out, as a PNG."""
        self.hide_hover()
        if not self.grab().save(str(path), "PNG"):
            raise OSError(f"could not write {path}")

    def _ask_path(self, caption: str, suffix: str, kinds: str) -> Path | None:
        global _export_dir
        stamp = time.strftime("%Y%m%d-%H%M%S")
        default = _export_dir / f"{self.export_stem}-{stamp}.{suffix}"
        path, _ = QFileDialog.getSaveFileName(self, caption, str(default), kinds)
        if not path:
            return None
        _export_dir = Path(path).parent
        return Path(path)

    def _on_menu_export_csv(self) -> None:
        path = self._ask_path("Export data as CSV", "csv", "CSV files (*.csv)")
        if path is None:
            return
        try:
            rows = self.write_csv(path)
        except OSError as exc:
            QMessageBox.warning(self, "Export failed", f"Could not write {path}: "
                                f"{exc.strerror or exc}")
            return
        log.info("exported %d rows of %s to %s", rows, self.title, path)

    def _on_menu_save_png(self) -> None:
        path = self._ask_path("Save image as PNG", "png", "PNG images (*.png)")
        if path is None:
            return
        try:
            self.save_png(path)
        except OSError as exc:
            QMessageBox.warning(self, "Export failed", str(exc))
