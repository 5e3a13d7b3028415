"""The dashboard tells when an agent's own probes stop measuring: the agent keeps answering
pulls, only with nothing new in them, so a calm UP over an empty plot would hide a dead model
server at the edge. Real processes: our v2 model server, the agent, and the dashboard's
Monitor pulling from it."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

import probes.agent
from app.core.agent_auth import TOKEN_ENV
from app.core.monitor import Monitor
from probes import EndpointState
from tests.agent.conftest import Proc
from tests.agent.test_agent import STREAM
from tests.agent.test_tap import ModelServer
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(120)


def test_a_dead_model_server_behind_the_agent_is_down_on_the_dashboard_and_clears(
        tmp_path, token_file, token, procs, monkeypatch, caplog):
    monkeypatch.setattr(probes.agent, "INFO_EVERY_S", 0.2)  # the agent's info, read often
    monkeypatch.setenv(TOKEN_ENV, token)
    server = ModelServer()
    procs.append(server)
    port = urlsplit(server.url).port
    agent = Proc(["agent", "--listen", "127.0.0.1:0", "--token-file", str(token_file),
                  "--upstream", f"v2+{server.url}/models/wine-v1", "--payload", str(STREAM),
                  "--rate", "50", "--buffer", str(tmp_path / "agent.sqlite")])
    procs.append(agent)
    monitor = Monitor(tmp_path / "ws.db")
    try:
        probe = monitor.attach(f"agent+{agent.url}?interval=0.05")
        assert wait_until(lambda: probe.pulled > 20, 30), probe.last_error
        assert wait_until(lambda: probe.state is EndpointState.UP and probe.last_error is None,
                          10), probe.last_error
        # The same machine's clock: read from the agent's /v1/info, and nothing to say.
        assert wait_until(lambda: "agent clock" in probe.info(), 10)
        assert abs(float(probe.info()["agent clock"].split()[0])) < probes.agent.CLOCK_TOLERANCE_S
        upstream = f"v2+{server.url}/models/wine-v1"
        assert wait_until(lambda: f"{upstream}: up" in probe.info().get("agent probes", ""), 10)

        server.kill()  # the model server at the edge dies; the agent itself is fine
        # The model at the edge is gone: the endpoint is down, as the model's own probe here
        # would say (the window stops showing its last rate; the live down rule trips).
        assert wait_until(lambda: probe.state is EndpointState.DOWN, 30), probe.last_error
        assert probe.last_error.startswith(f"the agent's probe of {upstream} is down: ")
        assert f"{upstream}: down" in probe.info()["agent probes"]
        told = [r.getMessage() for r in caplog.records if "the agent's probe of" in r.getMessage()]
        # Said in the log (`probescope watch`) when it changes (degraded, then down), not at
        # every pull.
        assert 1 <= len(told) <= 2, told

        again = ModelServer(port)  # back on its port: the agent's probe recovers, and so
        procs.append(again)        # does what the dashboard says
        assert wait_until(lambda: probe.state is EndpointState.UP, 30), probe.last_error
        assert probe.last_error is None
        assert any("the agent's probes measure again" in r.getMessage() for r in caplog.records)
    finally:
        monitor.close()
