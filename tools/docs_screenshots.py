"""Screenshots of the real window for the docs, driven as a user would drive it.

    xvfb-run -a -s "-screen 0 1680x1050x24" python tools/docs_screenshots.py docs/screenshots

Runs the demo for a while so failures and incidents accumulate, then writes:

- ``dashboard.png``, ``dashboard-light.png``: the live view, dark and light;
- ``overlay-compact.png``: the overlay plot over compact (shortest) panels;
- ``drift-panel.png``: the Drift dock, made taller, with one feature's distributions;
- ``replay.png``: the Replay dock after loading the captured failures, replaying them on the
  three bundled versions and selecting a case that wine-v3 newly breaks;
- ``versions.png``: the Versions dock after checking the bundled versions' contracts on CPU.

Settings go to a throw-away directory, so the user's layout is neither used nor changed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PySide6.QtCore import QEventLoop, QSettings, QStandardPaths, Qt, QTimer, SignalInstance
from PySide6.QtWidgets import QApplication

from app.core.replay import NEWLY_BROKEN


def run_for(seconds: float) -> None:
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def wait_until(done: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        run_for(0.1)


def signalled(signal: SignalInstance, action: Callable[[], object], timeout_s: float,
              what: str) -> object:
    """Do ``action`` as a user would (a click) and wait for ``signal``; its first argument."""
    got: list[object] = []
    signal.connect(got.append)
    action()
    wait_until(lambda: bool(got), timeout_s, what)
    return got[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the PNG files")
    parser.add_argument("--warm-up", type=float, default=85.0,
                        help="seconds of demo before the first screenshot (default 85)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    settings = Path(tempfile.mkdtemp(prefix="probescope-shots-"))
    os.environ["XDG_CONFIG_HOME"] = str(settings)
    QStandardPaths.setTestModeEnabled(True)
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(settings))
    _qt_app = QApplication(sys.argv[:1])  # kept alive for the whole run

    from app.gui.demo import fresh_demo_path, start_demo
    from app.gui.main_window import MainWindow

    window = MainWindow(fresh_demo_path(), title="demo")
    window.resize(1680, 1000)
    window.show()
    start_demo(window)
    run_for(args.warm_up)

    window.grab().save(str(args.out / "dashboard.png"))
    window.set_theme("light")
    run_for(2.0)
    window.grab().save(str(args.out / "dashboard-light.png"))
    window.set_theme("dark")
    run_for(2.0)

    # Many endpoints at a glance: compact panels, and two versions' p95 in one plot.
    window.show_overlay(True)
    window.live.overlay.set_chosen(list(window.panels)[:3])
    window.step_panel_height(-2)
    run_for(3.0)
    window.grab().save(str(args.out / "overlay-compact.png"))
    window.show_overlay(False)
    window.step_panel_height(0)
    run_for(1.0)

    bench = window.workbench
    drift = bench.docks["Drift"]
    drift.raise_()
    window.resizeDocks([drift], [660], Qt.Orientation.Vertical)  # every heat-map row named
    bench.drift.select_feature("alcohol")
    run_for(2.0)
    drift.grab().save(str(args.out / "drift-panel.png"))

    bench.docks["Replay"].raise_()
    panel = bench.replay
    signalled(panel.failures_loaded, panel.load_button.click, 60, "the failure list")
    result = signalled(panel.replay_finished, panel.run_button.click, 120, "the replay")
    last = len(result.runs) - 1
    row = next((i for i in range(len(result.cases)) if result.verdict(i, last) == NEWLY_BROKEN),
               0)
    panel.select_result_row(row)
    run_for(1.0)
    window.grab().save(str(args.out / "replay.png"))

    bench.docks["Versions"].raise_()
    versions = bench.versions
    signalled(versions.contracts_checked, versions.check_contracts, 180, "the contract check")
    run_for(1.0)
    window.grab().save(str(args.out / "versions.png"))

    window.close()
    window.shutdown()
    print(f"wrote dashboard, dashboard-light, overlay-compact, drift-panel, replay and "
          f"versions PNGs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
