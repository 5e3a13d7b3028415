"""Replay fixtures: a workspace holding real captures of wine-v1 walking the demo's production
stream (drift, NaN rows, labels), made by the real onnx probe and written by the real Store."""

from __future__ import annotations

import importlib.util
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.bus import Bus
from app.core.domain import Capture, EndpointUri, Sample
from app.core.store import Store
from probes.base import ProbeOptions
from probes.onnx_local import OnnxProbe
from tests.conftest import DEMO, ROOT

ROWS = 3000  # the whole production stream, once


def record_stream(db: Path, model: Path, rows: int = ROWS, capture: float = 0.2,
                  extra: str = "", payload: Path = DEMO / "production.csv") -> str:
    """Send ``rows`` production rows through the onnx probe; commit what it put on the bus.
    ``extra``: more URI parameters, such as ``&slo_ms=5``."""
    uri = EndpointUri.parse(f"onnx:{model}?provider=cpu&payload={payload}"
                            f"&min_confidence=0.6&capture={capture}{extra}")
    bus = Bus(capacity=1_000_000)
    probe = OnnxProbe(uri, bus, ProbeOptions(rate_hz=0))
    for _ in range(rows):
        probe.step()
    probe.settle()
    items, _ = bus.drain()
    store = Store(db)
    try:
        store.write_batch([i for i in items if isinstance(i, Sample)],
                          [i for i in items if isinstance(i, Capture)])
        store.set_endpoint_info(probe.endpoint, slo_ms=probe.slo_ms,  # as the Monitor does
                                model_version=probe.model_version)
    finally:
        store.close()
    return probe.endpoint



def slow_cases(tmp_path: Path, recorder: Path, recorded_ms: float):
    """SLOW failures recorded by ``recorder`` at ``recorded_ms`` each against an SLO of 0.1 ms
    (0.25: paced and cold, as production records them; 0.1001: a hair over the SLO), and the
    criteria that hold them to it. Returns (case set, Criteria)."""
    from app.core.replay import Criteria, Selection, select_case_set

    db = tmp_path / "slow.db"
    record_stream(db, recorder, rows=200, extra="&slo_ms=0.000001")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE captures SET latency_ms = ? WHERE status = 'slow'", [recorded_ms])
        conn.execute("UPDATE endpoints SET slo_ms = 0.1")
    store = Store(db)
    try:
        return (select_case_set(store, Selection(kinds=("slow",), controls=0)),
                Criteria(endpoint_slo_ms=store.slo_by_endpoint()))
    finally:
        store.close()

@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    db = tmp_path_factory.mktemp("replay") / "recorded.db"
    endpoint = record_stream(db, DEMO / "wine-v1.onnx")
    return db, endpoint


@pytest.fixture
def demo_db(recorded: tuple[Path, str], tmp_path: Path) -> Path:
    """A private copy of the recorded workspace (tests save replays into it)."""
    db = tmp_path / "demo.db"
    shutil.copy(recorded[0], db)
    return db


@pytest.fixture
def versions() -> list[Path]:
    return [DEMO / f"wine-v{i}.onnx" for i in (1, 2, 3)]


def _server_module():
    spec = importlib.util.spec_from_file_location("onnx_http_server",
                                                  ROOT / "tools" / "onnx_http_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def v2_server() -> Iterator[str]:
    """wine-v2 behind a real v2 HTTP server on an ephemeral port; yields its base URL."""
    server = _server_module().ModelServer(("127.0.0.1", 0), DEMO / "wine-v2.onnx")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def panel(qtbot, demo_db: Path, versions: list[Path]):
    """A replay panel on the demo workspace with the three bundled versions, shown."""
    from app.gui.replay_panel import ReplayPanel  # Qt only for the tests that ask for it

    p = ReplayPanel(demo_db, versions=[str(v) for v in versions])
    qtbot.addWidget(p)
    p.resize(1300, 800)
    p.show()
    yield p
    p.shutdown()


def replay_interrupted_on_a_slow_server(db: Path, local: Path, *extra: str) -> tuple[int, list]:
    """``probescope replay`` of ``local`` and a slow remote version, with Ctrl+C (SIGINT to
    this process) once the remote one is being asked: the local one is done by then. The
    CLI's exit code, and the request bodies the slow server got."""
    import os
    import signal

    from app.cli import main
    from tests.helpers import wait_until
    from tests.remote.fault_server import FaultServer

    slow = FaultServer().start()
    slow.mode, slow.delay_s = "slow", 0.3
    interrupt = threading.Thread(target=lambda: wait_until(lambda: slow.bodies, timeout_s=60)
                                 and os.kill(os.getpid(), signal.SIGINT), daemon=True)
    interrupt.start()
    try:
        return main(["replay", "--db", str(db), "--versions", str(local),
                     f"v2+http://127.0.0.1:{slow.port}/models/m", "--batch-size", "8",
                     "--limit", "40", "--controls", "0", *extra]), slow.bodies
    finally:
        slow.stop()
        interrupt.join(5)
