"""The system: probe: machine and process figures; GPU series only where NVML answers."""

from __future__ import annotations

import importlib.util

import psutil
import pytest

from app.core.bus import Bus
from probes import ProbeError, open_probe


def test_it_reports_cpu_ram_and_this_process_rss():
    probe = open_probe("system:", Bus())
    by_metric = {s.metric: s.value for s in probe.measure_once()}
    assert 0 <= by_metric["cpu_percent"] <= 100 * psutil.cpu_count()
    assert 0 < by_metric["ram_used_mb"] < psutil.virtual_memory().total / 2**20
    rss_now = psutil.Process().memory_info().rss / 2**20
    assert by_metric["rss_mb"] == pytest.approx(rss_now, rel=0.2)
    probe.close()


@pytest.mark.skipif(importlib.util.find_spec("pynvml") is not None,
                    reason="NVML is installed here; GPU series may be present")
def test_without_nvml_gpu_series_are_absent_not_zero():
    probe = open_probe("system:", Bus())
    assert not [s for s in probe.measure_once() if s.metric.startswith("gpu")]
    assert probe.info()["gpus"] == "0"


def test_a_bad_pid_is_a_clear_error():
    with pytest.raises(ProbeError, match="no process with pid"):
        open_probe("system:?pid=999999999", Bus())
