"""Probes this machine: ``system:`` — CPU %, RAM, this process's RSS, and GPUs through NVML.

GPU series appear only where nvidia-ml-py is installed and a driver answers; elsewhere they
are absent, not zero. ``?rate=HZ`` sets how often it samples (default 2 Hz), ``?pid=N``
watches another process's RSS.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psutil

from app.core.bus import Bus
from app.core.domain import EndpointUri, Sample
from probes.base import (
    EndpointState,
    Probe,
    ProbeError,
    ProbeOptions,
    float_param,
    int_param,
    register,
)

log = logging.getLogger(__name__)


class Nvml:
    """NVML when present; ``devices`` is empty when there is no library, driver or GPU."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self.devices: list[Any] = []
        try:
            import pynvml  # from nvidia-ml-py, the [gpu] extra

            pynvml.nvmlInit()
            self._nvml = pynvml
            self.devices = [pynvml.nvmlDeviceGetHandleByIndex(i)
                            for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded...
            log.debug("no NVML here: %s", exc)
            self._nvml = None
            self.devices = []

    def read(self) -> list[tuple[int, float, float, float]]:
        """Per GPU: (index, used MiB, total MiB, utilisation %)."""
        out = []
        for index, handle in enumerate(self.devices):
            try:
                mem = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                util = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                out.append((index, mem.used / 2**20, mem.total / 2**20, float(util.gpu)))
            except Exception as exc:
                log.debug("NVML read failed on GPU %d: %s", index, exc)
        return out

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                log.debug("nvmlShutdown failed", exc_info=True)


@register("system")
class SystemProbe(Probe):
    params = frozenset({"pid", "rate"})

    def __init__(self, uri: EndpointUri, bus: Bus, options: ProbeOptions) -> None:
        super().__init__(uri, bus, options)
        if uri.target:  # system:extra would otherwise be taken for system: without a word
            raise ProbeError(f"system: takes no target ('{uri.target}'); it probes this "
                             "machine: system: or system:?pid=1234")
        self.rate_hz = float_param(uri, "rate", 2.0, positive=True)
        pid = int_param(uri, "pid", None)
        try:
            self.process = psutil.Process(pid) if pid else psutil.Process()
        except psutil.NoSuchProcess:
            raise ProbeError(f"no process with pid {pid}") from None
        self.nvml = Nvml()

    def info(self) -> dict[str, str]:
        return {"kind": "system", "gpus": str(len(self.nvml.devices)),
                "provider": "psutil" + (" + NVML" if self.nvml.devices else "")}

    def measure_once(self) -> list[Sample]:
        ts = time.time_ns()
        vm = psutil.virtual_memory()
        e = self.endpoint
        samples = [
            Sample(e, ts, "cpu_percent", psutil.cpu_percent(interval=None)),
            Sample(e, ts, "ram_used_mb", (vm.total - vm.available) / 2**20),
            Sample(e, ts, "ram_percent", vm.percent),
        ]
        try:
            samples.append(Sample(e, ts, "rss_mb", self.process.memory_info().rss / 2**20))
        except psutil.Error as exc:
            self.last_error = f"process {self.process.pid}: {exc}"
        for index, used, total, util in self.nvml.read():
            samples += [Sample(e, ts, f"gpu{index}_mem_used_mb", used),
                        Sample(e, ts, f"gpu{index}_mem_total_mb", total),
                        Sample(e, ts, f"gpu{index}_util_percent", util)]
        self.requests += 1
        return samples

    def run(self, stop: threading.Event) -> None:
        psutil.cpu_percent(interval=None)  # the first call only primes the counter
        period = 1.0 / self.rate_hz
        while not stop.wait(period):
            if self.paused:
                self.wait_if_paused()
                continue
            self.bus.put_many(self.measure_once())
            self.state = EndpointState.UP

    def close(self) -> None:
        self.nvml.close()
