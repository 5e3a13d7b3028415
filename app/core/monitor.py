"""Owns one workspace's running parts: the bus, the recorder and the attached probes.

Thread: call from one controlling thread (the CLI's main thread or the GUI thread). Probes and
the recorder run on their own threads; ``close`` stops probes first so the recorder's final
flush empties the bus.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from app.core.bus import DEFAULT_CAPACITY, Bus
from app.core.recorder import Listener, Recorder, RecorderStats
from app.core.store import Store
from probes import Probe, ProbeError, ProbeOptions, open_probe

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
        options = replace(options or ProbeOptions(), workspace=self.db_path)
        probe = open_probe(uri, self.bus, options)
        if probe.endpoint in self.probes:
            raise ProbeError(f"{probe.endpoint} is already attached")
        self.probes[probe.endpoint] = probe
        self._register(probe)
        if start:
            self.start()
            probe.start()
        return probe

    def _register(self, probe: Probe) -> None:
        store = Store(self.db_path)
        try:
            store.endpoint_id(probe.endpoint, probe.scheme)
            info = probe.info()
            slo = getattr(probe, "slo_ms", None)
            store.set_endpoint_info(probe.endpoint, slo_ms=slo,
                                    model_version=info.get("model_version"))
        finally:
            store.close()

    def detach(self, endpoint: str) -> None:
        probe = self.probes.pop(endpoint, None)
        if probe is None:
            raise ProbeError(f"{endpoint} is not attached")
        probe.stop()

    def stats(self) -> RecorderStats:
        return self.recorder.stats()

    def close(self) -> None:
        for probe in list(self.probes.values()):
            probe.stop()
        self.probes.clear()
        if self._started:
            self.recorder.stop()
            self._started = False
