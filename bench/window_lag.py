"""Window responsiveness with many endpoints: the event loop's stalls, as the status bar's
"lag" shows them, with ten endpoints against the same window with none.

Runs the real main window offscreen at 1280x800 on the demo (its two local versions, the
in-process v2 server and ``system:``) plus six more local ``onnx:`` probes, ten in all, for
each time window in turn (1 min, 10 min, 1 h, all). Each step records, after a settling pause:
every stall of the event loop (a 5 ms timer's lateness), the GUI thread's own CPU time, and the
status bar's "lag" figure (the worst stall of the last 3 s) sampled each second. The baseline,
measured first in the same run, is the same window with no endpoint attached (the machine's
and Qt's own noise). Printed per window: stall p50/p99/max, stalls over 50 ms per minute, GUI
CPU %, the status bar's lag (mean/max), and the ratio of the mean status-bar lag to the
baseline's.

    PYTHONPATH=. python bench/window_lag.py [--seconds 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PySide6.QtCore import QEventLoop, QSettings, QStandardPaths, Qt, QTimer
from PySide6.QtWidgets import QApplication

WINDOWS = ("1 min", "10 min", "1 h", "all")
EXTRA_RATES = (5, 8, 12, 20, 30, 40)  # six more local probes: ten endpoints with the demo's
TICK_MS = 5


def run_for(seconds: float) -> None:
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


class StallRecorder:
    """Every lateness of a short precise timer (the event loop's stalls), the GUI thread's CPU
    time, and the status bar's lag figure once a second, between ``start`` and ``stop``."""

    def __init__(self, window) -> None:
        self.window = window
        self.stalls_ms: list[float] = []
        self.status_lag_ms: list[float] = []
        self._tick = QTimer()
        self._tick.setTimerType(Qt.TimerType.PreciseTimer)
        self._tick.setInterval(TICK_MS)
        self._tick.timeout.connect(self._on_tick)
        self._second = QTimer(interval=1000)
        self._second.timeout.connect(
            lambda: self.status_lag_ms.append(window.lag_meter.worst_ms()))
        self._last = 0.0
        self._cpu0 = self._wall0 = 0.0
        self.cpu_share = 0.0

    def _on_tick(self) -> None:
        now = time.perf_counter()
        self.stalls_ms.append(max(0.0, (now - self._last) * 1000.0 - TICK_MS))
        self._last = now

    def start(self) -> None:
        self.stalls_ms.clear()
        self.status_lag_ms.clear()
        self._last = time.perf_counter()
        self._cpu0, self._wall0 = time.thread_time(), time.perf_counter()
        self._tick.start()
        self._second.start()

    def stop(self) -> None:
        self._tick.stop()
        self._second.stop()
        self.cpu_share = ((time.thread_time() - self._cpu0)
                          / max(1e-9, time.perf_counter() - self._wall0))


def measure(window, seconds: float) -> dict[str, float]:
    recorder = StallRecorder(window)
    recorder.start()
    run_for(seconds)
    recorder.stop()
    stalls = sorted(recorder.stalls_ms)
    lags = recorder.status_lag_ms or [0.0]
    return {"p50": stalls[len(stalls) // 2], "p99": stalls[int(len(stalls) * 0.99)],
            "max": stalls[-1], "over50_per_min": sum(s > 50 for s in stalls) * 60.0 / seconds,
            "cpu": 100.0 * recorder.cpu_share, "lag_mean": statistics.fmean(lags),
            "lag_max": max(lags)}


def line(name: str, m: dict[str, float], baseline: dict[str, float] | None) -> str:
    ratio = (f"  lag ratio to baseline {m['lag_mean'] / max(1e-9, baseline['lag_mean']):.2f}"
             if baseline else "")
    return (f"{name:<22} stall p50/p99/max {m['p50']:5.1f}/{m['p99']:5.1f}/{m['max']:6.1f} ms"
            f"  >50 ms {m['over50_per_min']:4.1f}/min  GUI CPU {m['cpu']:4.1f}%"
            f"  status-bar lag mean/max {m['lag_mean']:5.1f}/{m['lag_max']:6.1f} ms{ratio}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="measured per window")
    parser.add_argument("--settle", type=float, default=8.0,
                        help="seconds after a window switch before measuring")
    parser.add_argument("--warm-up", type=float, default=30.0,
                        help="seconds of recording before the first loaded window")
    args = parser.parse_args()

    settings = Path(tempfile.mkdtemp(prefix="probescope-lag-"))
    os.environ["XDG_CONFIG_HOME"] = str(settings)
    os.environ["XDG_DATA_HOME"] = str(settings)
    QStandardPaths.setTestModeEnabled(True)
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(settings))
    _app = QApplication(sys.argv[:1])  # kept alive for the whole run

    from app.core.demo import model_path
    from app.gui.demo import start_demo
    from app.gui.main_window import MainWindow

    window = MainWindow(settings / "bench.db", title="lag bench")
    window.resize(1280, 800)
    window.show()
    run_for(args.settle)
    baseline = measure(window, args.seconds)
    print(line("baseline: no endpoint", baseline, None), flush=True)

    start_demo(window)
    payload = model_path("wine-v1").parent / "production.csv"
    for rate in EXTRA_RATES:
        window.attach(f"onnx:{model_path('wine-v2')}?provider=cpu&rate={rate}"
                      f"&payload={payload}")
    print(f"{len(window.panels)} endpoints attached; recording {args.warm_up:g} s first",
          flush=True)
    run_for(args.warm_up)
    for key in WINDOWS:
        window.set_time_window(key)
        run_for(args.settle)
        print(line(f"10 endpoints, {key}", measure(window, args.seconds), baseline), flush=True)
    window.close()
    window.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
