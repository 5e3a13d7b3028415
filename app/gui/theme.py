"""Applies a dark or light look to the whole application and tints the SVG icons. Thread: GUI."""

from __future__ import annotations

from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QByteArray
from PySide6.QtGui import QColor, QIcon, QPalette, QPixmap
from PySide6.QtWidgets import QApplication

from widgets.theme import Theme

ICON_DIR = Path(__file__).resolve().parents[2] / "assets" / "icons"
ICON_INK = "#000000"  # the colour the SVGs are drawn in, replaced by the theme's text colour


def icon(name: str, color: str) -> QIcon:
    """An icon from assets/icons/NAME.svg drawn in ``color``; empty if the file is missing."""
    path = ICON_DIR / f"{name}.svg"
    if not path.is_file():
        return QIcon()
    svg = path.read_text(encoding="utf-8").replace(ICON_INK, color)
    pix = QPixmap()
    pix.loadFromData(QByteArray(svg.encode()), "SVG")
    return QIcon(pix)


def app_icon() -> QIcon:
    path = ICON_DIR / "app.svg"
    return QIcon(str(path)) if path.is_file() else QIcon()


def _palette(t: Theme) -> QPalette:
    p = QPalette()
    roles = {
        QPalette.ColorRole.Window: t.window, QPalette.ColorRole.WindowText: t.text,
        QPalette.ColorRole.Base: t.base, QPalette.ColorRole.AlternateBase: t.window,
        QPalette.ColorRole.Text: t.text, QPalette.ColorRole.Button: t.window,
        QPalette.ColorRole.ButtonText: t.text, QPalette.ColorRole.ToolTipBase: t.window,
        QPalette.ColorRole.ToolTipText: t.text, QPalette.ColorRole.Highlight: t.accent,
        QPalette.ColorRole.HighlightedText: t.base if t.name == "dark" else "#ffffff",
        QPalette.ColorRole.PlaceholderText: t.muted, QPalette.ColorRole.Link: t.accent,
        QPalette.ColorRole.Mid: t.border, QPalette.ColorRole.Dark: t.border,
    }
    for role, color in roles.items():
        p.setColor(role, QColor(color))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text,
                 QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor(t.muted))
    return p


def stylesheet(t: Theme) -> str:
    return f"""
QMainWindow, QDockWidget {{ background: {t.window}; }}
QDockWidget::title {{ padding: 6px 8px; color: {t.muted}; font-weight: 600; }}
QToolBar {{ background: {t.window}; border: none; border-bottom: 1px solid {t.border};
            spacing: 4px; padding: 3px; }}
QToolButton {{ padding: 4px 8px; border-radius: 4px; }}
QToolButton:hover {{ background: {t.border}; }}
QToolButton:checked {{ background: {t.border}; }}
QStatusBar {{ border-top: 1px solid {t.border}; color: {t.muted}; }}
QStatusBar QLabel {{ color: {t.muted}; }}
QScrollArea {{ border: none; background: {t.window}; }}
QScrollArea > QWidget > QWidget {{ background: {t.window}; }}
QFrame#endpointPanel {{ background: {t.base}; border: 1px solid {t.border}; border-radius: 6px; }}
QLabel#panelTitle {{ font-weight: 600; color: {t.text}; }}
QLabel#panelStats {{ color: {t.muted}; }}
QLabel#error {{ color: {t.states['down']}; }}
QLabel#hint {{ color: {t.muted}; }}
QTreeWidget {{ border: none; background: {t.base}; }}
QHeaderView::section {{ background: {t.window}; color: {t.muted}; border: none;
                        border-bottom: 1px solid {t.border}; padding: 4px; }}
QComboBox, QLineEdit, QPlainTextEdit {{ border: 1px solid {t.border}; border-radius: 4px;
                                        padding: 3px 6px; background: {t.base}; }}
"""


def apply_app_theme(app: QApplication, theme: Theme) -> None:
    if app.style().name().lower() != "fusion":  # re-polishes every widget: only once
        app.setStyle("Fusion")
    app.setPalette(_palette(theme))
    app.setStyleSheet(stylesheet(theme))
    pg.setConfigOptions(background=theme.base, foreground=theme.muted, antialias=False)
