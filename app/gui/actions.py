"""The window's actions, menus and toolbar, with their shortcuts. Thread: GUI.

Built in one place so the menus, the toolbar and the shortcuts cannot disagree; the window
connects each action's ``triggered`` to its handler.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QComboBox, QMainWindow, QMenu, QToolBar

from app.gui.theme import icon
from widgets.series import PERCENTILE_WINDOWS_S
from widgets.theme import Theme

TIME_WINDOWS = {"1 min": 60.0, "10 min": 600.0, "1 h": 3600.0, "all": None}
LIVE_WINDOWS = {"1 min", "10 min"}  # drawn from ring buffers; longer ones from history


@dataclass
class Actions:
    open: QAction
    save_as: QAction
    quit: QAction
    attach: QAction
    detach: QAction
    pause_probe: QAction
    freeze: QAction
    dark: QAction
    light: QAction
    recent_menu: QMenu
    window_box: QComboBox
    toolbar: QToolBar
    endpoints_menu: QMenu
    view_menu: QMenu
    export_report: QAction
    reattach: QAction
    taller: QAction
    shorter: QAction
    default_height: QAction
    percentile_windows: dict[float, QAction]  # View > Percentile window, by seconds
    overlay: QAction

    def retint(self, theme: Theme) -> None:
        for action, name in ((self.open, "open"), (self.attach, "attach"),
                             (self.detach, "detach"), (self.pause_probe, "pause"),
                             (self.freeze, "freeze"), (self.dark, "theme")):
            action.setIcon(icon(name, theme.text))


def build_actions(window: QMainWindow) -> Actions:
    def act(text: str, shortcut: QKeySequence | str | None = None, tip: str = "") -> QAction:
        action = QAction(text, window)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if tip:
            action.setToolTip(tip)
            action.setStatusTip(tip)
        return action

    a_open = act("&Open workspace…", QKeySequence.StandardKey.Open, "Open a workspace file")
    a_save = act("&Save workspace as…", QKeySequence.StandardKey.SaveAs,
                 "Copy this workspace to a new file")
    a_export = act("&Export incident report…", "Ctrl+E",
                   "Write the selected (or latest) incident as a PDF report")
    a_quit = act("&Quit", QKeySequence.StandardKey.Quit)
    a_attach = act("&Attach probe…", "Ctrl+Shift+A", "Attach a probe to an endpoint URI")
    a_reattach = act("Attach a&gain…", "Ctrl+Shift+R",
                     "Attach the selected recorded endpoint again (its URI is shown first)")
    a_detach = act("&Detach", "Ctrl+Shift+D", "Stop probing the selected endpoint")
    a_pause = act("&Pause probe", "Ctrl+Shift+P", "Pause or resume the selected probe")
    a_pause.setCheckable(True)
    a_freeze = act("Pause &live plots", "Space", "Freeze the live plots (Space)")
    a_freeze.setCheckable(True)
    a_taller = act("&Taller panels", QKeySequence.StandardKey.ZoomIn,
                   "Make the endpoint panels taller (Ctrl++)")
    # Ctrl++ needs Shift on most keyboards; browsers take Ctrl+= as well.
    a_taller.setShortcuts([QKeySequence(QKeySequence.StandardKey.ZoomIn), QKeySequence("Ctrl+=")])
    a_shorter = act("&Shorter panels", QKeySequence.StandardKey.ZoomOut,
                    "Make the endpoint panels shorter, to see more endpoints at once (Ctrl+-)")
    a_default_height = act("&Default panel height", "Ctrl+0")
    a_overlay = act("&Overlay plot", "Ctrl+Shift+O",
                    "One plot with a figure of several endpoints, to compare them")
    a_overlay.setCheckable(True)
    a_dark = act("&Dark theme")
    a_light = act("&Light theme")
    group = QActionGroup(window)
    for a in (a_dark, a_light):
        a.setCheckable(True)
        group.addAction(a)

    bar = window.menuBar()
    file_menu = bar.addMenu("&File")
    file_menu.addAction(a_open)
    recent = file_menu.addMenu("Open &recent")
    file_menu.addAction(a_save)
    file_menu.addAction(a_export)
    file_menu.addSeparator()
    file_menu.addAction(a_quit)
    ep_menu = bar.addMenu("&Endpoints")
    for a in (a_attach, a_reattach, a_detach, a_pause):
        ep_menu.addAction(a)
    view_menu = bar.addMenu("&View")
    view_menu.addAction(a_freeze)
    view_menu.addSeparator()
    for a in (a_overlay, a_taller, a_shorter, a_default_height):
        view_menu.addAction(a)
    windows_menu = view_menu.addMenu("Percentile &window")
    windows_menu.setToolTip("How many seconds of requests each live p50/p95/p99 point sums up")
    windows_group = QActionGroup(window)
    percentile_windows: dict[float, QAction] = {}
    for seconds in PERCENTILE_WINDOWS_S:
        a = percentile_windows[seconds] = act(f"{seconds:g} s")
        a.setCheckable(True)
        windows_group.addAction(a)
        windows_menu.addAction(a)
    view_menu.addSeparator()
    view_menu.addAction(a_dark)
    view_menu.addAction(a_light)
    view_menu.addSeparator()

    box = QComboBox()
    box.setToolTip("Time window: the last minute or ten are live; longer ones read history")
    for key in TIME_WINDOWS:
        box.addItem(key)
    toolbar = QToolBar("Main")
    toolbar.setObjectName("mainToolbar")
    toolbar.setMovable(False)
    toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    for a in (a_open, None, a_attach, a_detach, a_pause, None, a_freeze):
        if a is None:
            toolbar.addSeparator()
        else:
            toolbar.addAction(a)
    toolbar.addWidget(box)
    window.addToolBar(Qt.ToolBarArea.TopToolBarArea, toolbar)
    view_menu.addAction(toolbar.toggleViewAction())
    return Actions(a_open, a_save, a_quit, a_attach, a_detach, a_pause, a_freeze, a_dark,
                   a_light, recent, box, toolbar, ep_menu, view_menu, a_export, a_reattach,
                   a_taller, a_shorter, a_default_height, percentile_windows, a_overlay)
