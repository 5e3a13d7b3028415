"""Owns one workspace's running parts: the bus, the recorder and the attached probes.

Thread: call from one controlling thread (the CLI's main thread or the GUI thread). Probes and
the recorder run on their own threads; ``close`` stops probes first so the recorder's final
flush empties the bus.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

from app.core.bus import DEFAULT_CAPACITY, Bus
from app.core.domain import StoreError
from app.core.recorder import Listener, Recorder, RecorderStats
from app.core.store import Store
from probes import Probe, ProbeError, ProbeOptions, open_probe

DETACH_WAIT_S = 60.0  # a detached probe's thread is waited for in the background this long
CLOSE_WAIT_S = 2.0  # closing waits this long in all for every probe to finish its request

log = logging.getLogger(__name__)


class Monitor:
    def __init__(self, db_path: str | Path, *, bus_capacity: int = DEFAULT_CAPACITY,
                 flush_interval_s: float = 0.05) -> None:
        self.db_path = Path(db_path)
        # Opened here, on the caller's thread, so a bad path fails at once with a clear error;
        # the recorder then opens its own connection on its own thread.
        Store(self.db_path).close()
        self.bus = Bus(bus_capacity)
        self.recorder = Recorder(self.bus, lambda: Store(self.db_path),
                                 flush_interval_s=flush_interval_s)
        self.probes: dict[str, Probe] = {}
        self._started = False

    def subscribe(self, listener: Listener) -> None:
        self.recorder.subscribe(listener)

    def start(self) -> None:
        if not self._started:
            self.recorder.start()
            self._started = True

    def attach(self, uri: str, options: ProbeOptions | None = None, *,
               start: bool = True) -> Probe:
        """Open a probe for the URI and start it; raises ProbeError for the user to read."""
        return self.adopt(self.open(uri, options), start=start)

    def open(self, uri: str, options: ProbeOptions | None = None) -> Probe:
        """A probe for the URI, not attached yet: for a server, connected and its metadata
        read, which a slow server can stretch to seconds. Any thread: it touches nothing
        the monitor holds, so the window runs it off its own thread."""
        options = replace(options or ProbeOptions(), workspace=self.db_path)
        return open_probe(uri, self.bus, options)

    def adopt(self, probe: Probe, *, start: bool = True) -> Probe:
        """Attach a probe from ``open`` (and start it); on the monitor's owner's thread."""
        if probe.bus is not self.bus:
            probe.close()
            raise ProbeError("the workspace changed while connecting; attach again")
        if probe.endpoint in self.probes:
            probe.close()
            raise ProbeError(f"{probe.endpoint} is already attached")
        try:
            self._register(probe)
        except StoreError:
            probe.close()
            raise
        self.probes[probe.endpoint] = probe
        if start:
            self.start()
            probe.start()
        return probe

    def _register(self, probe: Probe) -> None:
        store = Store(self.db_path)
        try:
            store.endpoint_id(probe.endpoint, probe.scheme)
            info = probe.info()
            store.set_endpoint_info(probe.endpoint, slo_ms=getattr(probe, "slo_ms", None),
                                    model_version=info.get("model_version"),
                                    min_confidence=getattr(probe, "min_confidence", None),
                                    input_names=getattr(probe, "input_names", None))
        except sqlite3.Error as exc:  # read-only, or locked by another writer: one line
            raise StoreError(f"cannot write to {self.db_path}: {exc}") from None
        finally:
            store.close()

    def detach(self, endpoint: str) -> None:
        """Stop one probe without waiting for it: a request stuck on a silent server ends
        at its own timeout, and the caller (the window) must not freeze until then. The
        probe's last samples still reach the store."""
        probe = self.probes.pop(endpoint, None)
        if probe is None:
            raise ProbeError(f"{endpoint} is not attached")
        probe.request_stop()
        threading.Thread(target=probe.stop, kwargs={"timeout_s": DETACH_WAIT_S}, daemon=True,
                         name=f"stopping {endpoint}").start()

    def stats(self) -> RecorderStats:
        return self.recorder.stats()

    def close(self) -> None:
        # Every probe asked at once, then all waited for within one shared deadline: a stuck
        # request costs CLOSE_WAIT_S once, not five seconds per probe. One still stuck after
        # it ends at its request's timeout (its thread is a daemon).
        probes = list(self.probes.values())
        for probe in probes:
            probe.request_stop()
        deadline = time.monotonic() + CLOSE_WAIT_S
        for probe in probes:
            probe.stop(timeout_s=max(0.0, deadline - time.monotonic()))
        self.probes.clear()
        if self._started:
            self.recorder.stop()
            self._started = False
