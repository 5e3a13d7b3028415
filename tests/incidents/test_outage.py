"""A model server that dies and comes back, recorded by a real probe, becomes one "Endpoint
down" incident when the history is judged: from the probe's own ``up`` 0 samples, which it
writes at every failed attempt to reach the server (they used to count as signs of life, so
the silence never reached down_after_s and no incident opened)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from app.cli import main
from app.core.domain import Metric, Sample
from app.core.monitor import Monitor
from app.core.store import Store
from probes import EndpointState, ProbeOptions
from tests.helpers import wait_until
from tests.incidents.conftest import NS, T0, write_requests
from tests.remote.fault_server import FaultServer

pytestmark = pytest.mark.timeout(90)


def test_an_outage_in_the_history_is_one_down_incident_from_its_first_refusal(
        tmp_path, demo_dir, capsys):
    db = tmp_path / "outage.db"
    server = FaultServer().start()
    uri = f"v2+http://127.0.0.1:{server.port}/models/m"
    monitor = Monitor(db)
    try:
        probe = monitor.attach(uri, ProbeOptions(payload=demo_dir / "reference.csv",
                                                 rate_hz=20))
        assert wait_until(lambda: probe.requests > 10)
        killed_ns = time.time_ns()
        server.stop()
        assert wait_until(lambda: probe.state is EndpointState.DOWN)
        time.sleep(5)  # the probe's reconnect attempts come at most 2 s apart by now
        server.start()
        back_ns = time.time_ns()
        up_again = probe.requests
        assert wait_until(lambda: probe.state is EndpointState.UP, timeout_s=20)
        assert wait_until(lambda: probe.requests > up_again + 60)
    finally:
        monitor.close()
        server.stop()
    endpoint = probe.endpoint
    assert main(["incidents", "--db", str(db), "rules", endpoint, "down_after_s=3",
                 "close_after_s=1"]) == 0
    assert main(["incidents", "--db", str(db), "evaluate", "--step", "0.5"]) == 0
    capsys.readouterr()
    assert main(["incidents", "--db", str(db), "list", "--json"]) == 0
    incidents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    down = [i for i in incidents if i["rule"] == "down"]
    assert len(down) == 1, incidents
    (incident,) = down
    # It starts at the first refused request, not down_after_s later, and clears once the
    # server answers again.
    assert killed_ns <= incident["opened_ns"] <= killed_ns + 2 * 10**9
    assert back_ns <= incident["cleared_ns"] <= back_ns + 8 * 10**9
    assert "the probe reports the endpoint down since" in incident["summary"]
    store = Store(db, readonly=True)
    notes = [n["text"] for n in store.incident_notes(incident["id"])]
    store.close()
    clear_note = next(n for n in notes if n.startswith("Cleared"))
    assert clear_note.startswith("Cleared: the endpoint answers again (newest sample ")


def test_watch_opens_the_down_incident_while_it_records(tmp_path, demo_dir, capsys):
    """`watch` judged no incident rules: a headless run against a server that died left
    nothing to report until someone ran `incidents evaluate` (the demo and window judge
    live)."""
    db = tmp_path / "watch.db"
    server = FaultServer().start()
    uri = f"v2+http://127.0.0.1:{server.port}/models/m"
    stopped_ns: list[int] = []

    def stop() -> None:
        stopped_ns.append(time.time_ns())
        server.stop()

    threading.Timer(1.5, stop).start()
    try:
        assert main(["watch", uri, "--db", str(db), "--seconds", "16", "--json",
                     "--payload", str(demo_dir / "reference.csv")]) == 0
    finally:
        server.stop()
    result = json.loads(capsys.readouterr().out)
    assert result["incidents_opened"] >= 1
    # The summary says the outage: 16 s watched, the server gone after 1.5 s.
    (summary,) = result["endpoints"]
    assert 12 <= summary["down_s"] <= 15.5
    assert summary["failed_by_kind"].get("error", 0) >= 1
    store = Store(db, readonly=True)
    down = [i for i in store.incidents() if i["rule"] == "down"]
    store.close()
    assert len(down) == 1
    # Opened when the probe first found the server gone, as `incidents evaluate` opens it
    # from the same history; not at the evaluation that read the probe's "down" (seconds on).
    assert stopped_ns[0] <= down[0]["opened_ns"] <= stopped_ns[0] + 1.5 * 10**9


def test_a_history_ending_while_the_server_is_down_is_judged_to_its_end(tmp_path, capsys):
    """The judged range ended at the last latency sample, so an outage that lasted to the
    end of the recording (only the probe's ``up`` 0 samples after it) opened nothing."""
    db, endpoint = tmp_path / "dead.db", "v2+http://127.0.0.1:9/models/m"
    store = Store(db)
    write_requests(store, endpoint, 0, 10)
    store.write_batch([Sample(endpoint, T0, Metric.UP, 1.0)] + [
        Sample(endpoint, T0 + int(t * NS), Metric.UP, 0.0)  # each failed reconnect
        for t in (10.0, 10.5, 11.5, 13.5, 17.5, 22.5, 27.5, 32.5)], [])
    store.close()
    assert main(["incidents", "--db", str(db), "evaluate", "--step", "1"]) == 0
    assert "1 incident(s) opened" in capsys.readouterr().out
    store = Store(db, readonly=True)
    (incident,) = store.incidents()
    store.close()
    assert incident["rule"] == "down" and incident["opened_ns"] == T0 + 10 * NS
    assert incident["cleared_ns"] is None
