"""Starting the desktop app: the QApplication, the main window on a workspace or on the demo,
and (for docs and tests) a screenshot of the real window after it has run a while.
Thread: GUI.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from app.gui.demo import fresh_demo_path, start_demo
from app.gui.main_window import MainWindow

EXIT_INTERRUPTED = 130  # as a shell reports a command ended by Ctrl+C, and as the CLI does
# Qt's event loop runs in C++: Python handles a signal only when it next runs Python code. A
# timer this often lets it, so Ctrl+C in the terminal is answered within a fraction of this.
SIGNAL_POLL_MS = 200


def _close_on_ctrl_c(app: QApplication, window: MainWindow) -> dict[str, object]:
    """Ctrl+C in the terminal closes the window as Ctrl+Q does (probes stop, the recorder
    flushes); a second one, should closing hang, ends the process at once. Without this
    Python raised KeyboardInterrupt inside whichever Qt slot was running: a traceback, and
    the window went on."""
    interrupted: dict[str, object] = {"yes": False}

    def on_sigint(_signum: int, _frame: object) -> None:
        if interrupted["yes"]:
            os._exit(EXIT_INTERRUPTED)  # asked twice: the user wants it gone, now
        interrupted["yes"] = True
        QTimer.singleShot(0, window.close)

    interrupted["previous"] = signal.signal(signal.SIGINT, on_sigint)
    poll = QTimer(app, interval=SIGNAL_POLL_MS)
    poll.timeout.connect(lambda: None)
    poll.start()
    return interrupted


def run_window(db_path: Path | None, *, attach: Sequence[str] = (),
               screenshot: Path | None = None, screenshot_after_s: float = 15.0) -> int:
    """Open the window on a workspace, or on the demo when ``db_path`` is None; ``attach``:
    endpoint URIs to attach once it is open (``probescope --attach URI``)."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("ProbeScope")
    app.setApplicationName("ProbeScope")
    window = MainWindow(db_path or fresh_demo_path(), title="demo" if db_path is None else "")
    window.show()
    if db_path is None:
        QTimer.singleShot(0, lambda: start_demo(window))
    if attach:
        QTimer.singleShot(0, lambda: window.reattacher.attach_new(list(attach)))
    if screenshot is not None:  # for docs: grab the real window after it has run a while
        def grab() -> None:
            window.grab().save(str(screenshot))
            window.close()
            app.quit()

        QTimer.singleShot(int(screenshot_after_s * 1000), grab)
    interrupted = _close_on_ctrl_c(app, window)
    try:
        code = app.exec()
        window.shutdown()
    finally:
        signal.signal(signal.SIGINT, interrupted["previous"])
    return EXIT_INTERRUPTED if interrupted["yes"] else code
