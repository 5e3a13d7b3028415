"""Fixtures for remote-probe tests: real MLServer, TorchServe, KServe and Prometheus servers
(environments built once, cached) and our fault server."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.core.bus import Bus
from probes import Probe, ProbeOptions, open_probe
from tests.remote.fault_server import FaultServer
from tests.servers import kserve_peer as kss
from tests.servers import mlserver as mls
from tests.servers import prometheus as prom
from tests.servers import torchserve as tss
from tests.servers.process import ServerProcess
from tests.servers.venvs import ServerUnavailable

log = logging.getLogger(__name__)


def _venv_or_skip(build: Callable[[], Path], what: str) -> Path:
    try:
        return build()
    except ServerUnavailable as exc:
        pytest.skip(f"{what} cannot be installed here: {exc}")


def _served(server: ServerProcess) -> Iterator[ServerProcess]:
    """Start ``server`` (failing the test if it will not), yield it, stop it."""
    try:
        server.start()
    except ServerUnavailable as exc:
        pytest.fail(str(exc))
    log.info("%s ready after %.2f s", server.label, server.ready_after_s)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlserver_venv() -> Path:
    return _venv_or_skip(mls.venv, f"MLServer {mls.VERSION}")


@pytest.fixture(scope="session")
def mlserver(mlserver_venv: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[mls.MLServer]:
    """One MLServer for the whole session; tests must not stop it (see ``own_mlserver``)."""
    yield from _served(mls.MLServer(tmp_path_factory.mktemp("mlserver"), mlserver_venv))


@pytest.fixture
def own_mlserver(mlserver_venv: Path, tmp_path: Path) -> Iterator[mls.MLServer]:
    """An MLServer this test may kill and restart."""
    yield from _served(mls.MLServer(tmp_path / "mlserver", mlserver_venv))


@pytest.fixture(scope="session")
def torchserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tss.TorchServe]:
    env_dir = _venv_or_skip(tss.venv, f"TorchServe {tss.VERSION}")
    yield from _served(tss.TorchServe(tmp_path_factory.mktemp("torchserve"), env_dir))


@pytest.fixture(scope="session")
def kserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kss.KServe]:
    """KServe's ModelServer serving the demo's wine-v2 (ONNX) on the v2 REST API."""
    env_dir = _venv_or_skip(kss.venv, f"KServe {kss.VERSION}")
    yield from _served(kss.KServe(tmp_path_factory.mktemp("kserve"), env_dir))


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[prom.Prometheus]:
    """Debian's Prometheus server, exposing its own metrics."""
    try:
        prom.binary()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    yield from _served(prom.Prometheus(tmp_path_factory.mktemp("prometheus")))


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer().start()
    yield server
    server.stop()


@pytest.fixture
def opened() -> Iterator[Callable[..., Probe]]:
    """``open_probe`` whose probes are closed after the test (their pooled connections too)."""
    made: list[Probe] = []

    def open_(uri: str, bus: Bus | None = None, options: ProbeOptions | None = None) -> Probe:
        probe = open_probe(uri, bus if bus is not None else Bus(), options)
        made.append(probe)
        return probe

    yield open_
    for probe in made:
        if not probe.alive:
            probe.close()
