"""Shared by ``watch`` and ``demo``: record some endpoints for a while, then summarise."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from app.commands import _args
from app.core.domain import Metric
from app.core.drift_monitor import DriftMonitor
from app.core.incidents import IncidentMonitor
from app.core.monitor import Monitor
from app.core.store import Store
from app.core.summary import format_table, summarize
from probes import ProbeOptions

FINAL_EVALUATION_WAIT_S = 30.0


def drift_history(monitor: Monitor) -> Callable[[], None]:
    """Evaluate drift live while recording, as the window does, so its Drift tab shows a run
    recorded here (endpoints without a reference are skipped, said at INFO). Returns what to
    call once recording has stopped: one last evaluation of what the run recorded (a run
    shorter than the monitor's 5 s interval would otherwise leave none), then stop."""
    drift = DriftMonitor(monitor.db_path)
    monitor.subscribe(drift)
    drift.start()

    def finish() -> None:
        drift.evaluate_soon().wait(FINAL_EVALUATION_WAIT_S)
        drift.close()
    return finish


class LiveJudging:
    """Drift and the incident rules judged live while recording, as the window judges them:
    a headless run leaves the same drift history and incidents (an outage, an error burst)
    that the window would have. Pass as ``record``'s ``with_monitor``."""

    def __init__(self, db: Path) -> None:
        self.incidents = IncidentMonitor(db)

    def __call__(self, monitor: Monitor) -> Callable[[], None]:
        finish_drift = drift_history(monitor)
        # The probes' own verdicts: a paused or detached endpoint is not down.
        self.incidents.states = lambda: {e: str(p.state) for e, p in list(monitor.probes.items())}
        monitor.subscribe(self.incidents)
        self.incidents.start()

        def finish() -> None:
            finish_drift()
            self.incidents.close()
        return finish

    @property
    def opened(self) -> int:
        return self.incidents.opened


def add_run_options(p: argparse.ArgumentParser, *, default_seconds: float) -> None:
    p.add_argument("--db", required=True, type=Path, help="workspace SQLite file")
    p.add_argument("--seconds", type=_args.seconds, default=default_seconds,
                   help=f"how long to record (default {default_seconds:g}); Ctrl+C stops early")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def record(uris: Sequence[str], db: Path, seconds: float, options: ProbeOptions | None,
           as_json: bool, extra: Callable[[dict], None] | None = None, *,
           with_monitor: Callable[[Monitor], Callable[[], None]] | None = None) -> int:
    """``with_monitor`` sets up extra listeners on the monitor before probes attach and
    returns what to call once recording has stopped (``LiveJudging``).
    Exit status 1 when an endpoint never answered for a reason (refused, timed out) or the
    workspace refused what was recorded (both also said on stderr), so a script can tell."""
    start_ns = time.time_ns()
    monitor = Monitor(db)
    finish = with_monitor(monitor) if with_monitor else None
    stop = threading.Event()
    # SIGTERM (a service manager, `timeout`) stops as Ctrl+C does: flushed and summarised.
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        attached = [monitor.attach(uri, options).endpoint for uri in uris]
        stop.wait(seconds)
        # Read before close: request-sending probes that never got one answer (every
        # request timed out or found no server), and why.
        silent = {e: p.last_error for e, p in monitor.probes.items() if p.answered == 0}
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        monitor.close()
        if finish:
            finish()
    stats = monitor.stats()
    end_ns = time.time_ns()
    store = Store(db, readonly=True)
    try:
        summaries = [summarize(store, uri, start_ns, end_ns) for uri in attached]
        # Items lost before they reached this dashboard (an agent trimmed them before they
        # were pulled, or sent ones that could not be read): the probe records how many.
        lost_at_source = {uri: int(np.nansum(store.values(uri, Metric.DROPPED, start_ns,
                                                          end_ns)[1]))
                          for uri in attached}
    finally:
        store.close()
    lost_at_source = {uri: n for uri, n in lost_at_source.items() if n}
    result = {"endpoints": [s.to_json() for s in summaries],
              "dropped": stats.dropped + sum(lost_at_source.values())}
    if lost_at_source:
        result["dropped_at_source"] = lost_at_source
    if silent:
        result["no_answer"] = list(silent)
    if stats.last_error:
        result["workspace_error"] = stats.last_error
    if extra:
        extra(result)
    if as_json:
        print(json.dumps(result))
    else:
        print(format_table(summaries))
        for key, value in result.items():
            if key not in ("endpoints", "no_answer", "workspace_error",  # said on stderr
                           "dropped_at_source"):
                print(f"{key.replace('_', ' ')}: {value}")
    if stats.last_error:
        print(f"probescope: warning: {stats.last_error}", file=sys.stderr)
    for uri, lost in lost_at_source.items():
        print(f"probescope: warning: {uri}: {lost:,} items were lost on the way here: an "
              "agent trims its oldest items when its buffer is full (raise its --max-items, "
              "or pull more often), and items that cannot be read are counted too",
              file=sys.stderr)
    for uri, last_error in silent.items():
        why = last_error or ("it accepted the connection but sent no answer; the probe waits "
                             "?timeout_s= (10 s by default) per call")
        print(f"probescope: warning: no request to {uri} was answered: {why}", file=sys.stderr)
    # A probe that failed (refused, timed out, unreadable answers) fails the run; one merely
    # not asked yet (stopped in its first moments) is only said.
    return 1 if any(silent.values()) or stats.last_error else 0
