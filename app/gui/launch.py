"""Starting the desktop app: the QApplication, the main window on a workspace or on the demo,
and (for docs and tests) a screenshot of the real window after it has run a while.
Thread: GUI.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from app.gui.demo import fresh_demo_path, start_demo
from app.gui.main_window import MainWindow


def run_window(db_path: Path | None, *, screenshot: Path | None = None,
               screenshot_after_s: float = 15.0) -> int:
    """Open the window on a workspace, or on the demo when ``db_path`` is None."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("ProbeScope")
    app.setApplicationName("ProbeScope")
    window = MainWindow(db_path or fresh_demo_path(), title="demo" if db_path is None else "")
    window.show()
    if db_path is None:
        QTimer.singleShot(0, lambda: start_demo(window))
    if screenshot is not None:  # for docs: grab the real window after it has run a while
        def grab() -> None:
            window.grab().save(str(screenshot))
            window.close()
            app.quit()

        QTimer.singleShot(int(screenshot_after_s * 1000), grab)
    code = app.exec()
    window.shutdown()
    return code
