"""Model-server probes under faults, from a server of our own: slow, garbage, oversized,
cut-off and failing answers, a server that is not there yet, one that dies and comes back.
Also the TorchServe and TF Serving wire formats (no TF Serving package exists to run here)."""

from __future__ import annotations

import itertools
import json
import socket

import pytest

from app.core.bus import Bus
from app.core.domain import Capture, CaptureStatus, Metric, Sample
from probes import EndpointState, ProbeError, ProbeOptions, open_probe
from tests.helpers import wait_until
from tests.remote.fault_server import SCORES, FaultServer

pytestmark = pytest.mark.timeout(60)


def _drain(bus: Bus) -> tuple[list[Sample], list[Capture]]:
    items, _ = bus.drain()
    return ([i for i in items if isinstance(i, Sample)],
            [i for i in items if isinstance(i, Capture)])


def _v2(server: FaultServer, query: str = "") -> str:
    return f"v2+http://127.0.0.1:{server.port}/models/m{query}"


def test_metadata_decides_the_request_and_the_answer_is_recorded(opened, fault_server, demo_dir):
    bus = Bus()
    probe = opened(_v2(fault_server), bus, ProbeOptions(payload=demo_dir / "reference.csv"))
    capture = probe.measure_one()
    sent = json.loads(fault_server.bodies[-1])
    [tensor] = sent["inputs"]
    assert tensor["name"] == "features" and tensor["datatype"] == "FP32"
    assert tensor["shape"] == [1, 13] and len(tensor["data"]) == 13
    assert capture.inputs[0].dtype == "<f4"
    assert capture.outputs[0].to_array().tolist() == [pytest.approx(SCORES)]
    assert (capture.prediction, capture.model_version) == ("1", "7")
    assert capture.confidence == pytest.approx(0.7)


def test_without_a_payload_requests_are_generated_from_the_metadata(opened, fault_server):
    probe = opened(_v2(fault_server, "?min_confidence=0.9"), Bus())
    capture = probe.measure_one()
    assert capture.inputs[0].shape == (1, 13)
    assert capture.status is CaptureStatus.LOW_CONFIDENCE


def test_a_slow_server_gives_timeout_failures_not_a_hang(opened, fault_server, demo_dir):
    fault_server.mode, fault_server.delay_s = "slow", 5.0
    bus = Bus()
    probe = opened(_v2(fault_server, "?timeout_s=0.3"), bus,
                       ProbeOptions(payload=demo_dir / "reference.csv"))
    capture = probe.measure_one()
    assert capture.status is CaptureStatus.TIMEOUT
    assert "no answer within 0.3 s" in capture.error
    samples, _ = _drain(bus)
    assert Metric.FAILURE in [s.metric for s in samples]
    assert probe.state is not EndpointState.DOWN  # slow is not gone
    assert "no answer within 0.3 s" in probe.last_error  # why it will read degraded
    fault_server.release.set()
    fault_server.mode = "ok"
    assert probe.measure_one().status is CaptureStatus.OK


def test_detaching_or_closing_does_not_wait_for_a_stuck_request(tmp_path, fault_server,
                                                                demo_dir):
    import time

    from app.core.monitor import CLOSE_WAIT_S, Monitor
    from tests.helpers import wait_until

    monitor = Monitor(tmp_path / "w.db")
    try:
        options = ProbeOptions(payload=demo_dir / "reference.csv")
        first = monitor.attach(_v2(fault_server, "?timeout_s=30"), options)
        second = monitor.attach(_v2(fault_server, "?timeout_s=30&rate=5"), options)
        fault_server.mode, fault_server.delay_s = "hang", 30.0
        seen = len(fault_server.bodies)
        assert wait_until(lambda: len(fault_server.bodies) >= seen + 2, 10)  # both stuck
        t0 = time.monotonic()
        monitor.detach(first.endpoint)
        assert time.monotonic() - t0 < 0.5  # the window would have frozen until the timeout
        assert first.endpoint not in monitor.probes
        t0 = time.monotonic()
        monitor.close()
        assert time.monotonic() - t0 < CLOSE_WAIT_S + 1.0  # once, not five seconds a probe
    finally:
        fault_server.release.set()
        monitor.close()
    assert wait_until(lambda: not first.alive and not second.alive, 10)  # then they end


def test_attaching_to_a_hung_server_does_not_hang_the_caller(opened, fault_server, demo_dir):
    fault_server.mode, fault_server.delay_s = "hang", 30.0
    probe = opened(_v2(fault_server), Bus(), ProbeOptions(payload=demo_dir / "reference.csv"))
    assert probe.state is EndpointState.DOWN
    assert "no answer within 2 s" in probe.last_error  # the attach-time cap, not timeout_s=10


def test_a_model_still_loading_is_down_until_ready(opened, fault_server, demo_dir):
    fault_server.model_ready = False
    probe = opened(_v2(fault_server), Bus(), ProbeOptions(payload=demo_dir / "reference.csv"))
    assert probe.state is EndpointState.DOWN
    assert "not ready" in probe.last_error and "still loading" in probe.last_error
    probe.start()
    try:
        fault_server.model_ready = True
        assert wait_until(lambda: probe.state is EndpointState.UP and probe.requests > 0)
    finally:
        probe.stop()


@pytest.mark.parametrize(("mode", "expected"), [
    ("garbage", "not JSON: '<html><body>502"),
    ("huge", "larger than the 1 MiB cap"),
    ("huge_stream", "larger than the 1 MiB cap"),
    ("error500", "HTTP 500: model crashed: CUDA out of memory"),
])
def test_unusable_answers_are_clear_errors(opened, fault_server, demo_dir, mode, expected):
    bus = Bus()
    probe = opened(_v2(fault_server, "?max_mb=1"), bus,
                       ProbeOptions(payload=demo_dir / "reference.csv"))
    fault_server.mode = mode
    capture = probe.measure_one()
    assert capture.status is CaptureStatus.ERROR
    assert expected in capture.error
    assert "\n" not in capture.error
    fault_server.mode = "ok"
    assert probe.measure_one().status is CaptureStatus.OK  # the probe carries on


def _probing_a_cutting_server(opened, fault_server, demo_dir, bus: Bus):
    """A started probe at rate 200 on a server that cuts every inference's answer short."""
    probe = opened(_v2(fault_server, "?rate=200"), bus,
                   ProbeOptions(payload=demo_dir / "reference.csv"))
    fault_server.mode = "cut"
    probe.start()
    return probe


def test_an_answer_cut_mid_stream_marks_the_server_down_until_it_answers(opened, fault_server,
                                                                         demo_dir):
    probe = _probing_a_cutting_server(opened, fault_server, demo_dir, Bus())
    try:
        assert wait_until(lambda: probe.state is EndpointState.DOWN)
        assert "connection lost" in probe.last_error
        fault_server.mode = "ok"
        assert wait_until(lambda: probe.state is EndpointState.UP and probe.requests > 5)
    finally:
        probe.stop()
    assert not probe.alive


def test_a_server_whose_every_inference_drops_is_asked_at_a_growing_pause(opened, fault_server,
                                                                          demo_dir, caplog):
    """A crashing model worker behind a live front end: health answers, each inference drops
    the connection. The probe was down and up again at once, asking about 450 times a second
    at rate 5 and writing as many error captures; it now pauses as it does for a server that
    is gone (0.25 s, doubling), and an answer makes the pauses short again."""
    bus = Bus()
    probe = _probing_a_cutting_server(opened, fault_server, demo_dir, bus)
    try:
        # Pauses of 0.25 + 0.5 + 1 s: the fourth inference comes after 1.75 s, not 10 ms.
        assert wait_until(lambda: probe.requests >= 4, timeout_s=20)
        fault_server.mode = "ok"
        assert wait_until(lambda: probe.state is not EndpointState.DOWN and probe.requests > 12)
    finally:
        probe.stop()
    _, captures = _drain(bus)
    dropped = [c for c in captures if c.status is CaptureStatus.ERROR]
    answered = next(i for i, c in enumerate(captures) if c.status is not CaptureStatus.ERROR)
    assert 4 <= len(dropped) == answered  # and none after the server answered again
    gaps_s = [(b.ts_ns - a.ts_ns) / 1e9 for a, b in itertools.pairwise(dropped)]
    assert all(later >= earlier for earlier, later in itertools.pairwise(gaps_s))  # growing
    assert gaps_s[0] >= 0.25  # no inference asked again before the first pause ended
    # Said once when it went down and once when it answered again, not once per retry (the
    # health check's answer in between flips the state up and down each time).
    said = [r.getMessage() for r in caplog.records if r.name == "probes.base"]
    assert len([m for m in said if " is down: " in m]) == 1, said
    assert len([m for m in said if " is back up after " in m]) == 1, said


def test_a_server_not_there_yet_is_down_then_up_by_itself(opened, demo_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bus = Bus()
    probe = opened(f"v2+http://127.0.0.1:{port}/models/m", bus,
                       ProbeOptions(payload=demo_dir / "reference.csv"))
    assert probe.state is EndpointState.DOWN  # attaching did not fail
    assert "connection refused" in probe.last_error
    server = FaultServer()
    server.port = port
    probe.start()
    try:
        server.start()
        assert wait_until(lambda: probe.state is EndpointState.UP and probe.requests > 3)
        server.stop()
        assert wait_until(lambda: probe.state is EndpointState.DOWN)
        server.start()
        assert wait_until(lambda: probe.state is EndpointState.UP and probe.last_error is None)
    finally:
        probe.stop()
        server.stop()
    samples, captures = _drain(bus)
    assert [s.value for s in samples if s.metric == "up"][-1] == 1.0
    assert any(c.status is CaptureStatus.OK for c in captures)


def test_bad_uris_and_user_errors_are_one_line_probe_errors(fault_server, monkeypatch):
    for uri, words in [
        ("v2+http://127.0.0.1:1", "does not name a model"),
        ("v2+http:/models/m", "expected v2+http://HOST:PORT/models/NAME"),
        ("v2+http://user:pw@127.0.0.1:1/models/m", "credentials do not belong"),
        ("v2+http://[::1/models/m", "is not a valid URL"),
        (f"v2+http://127.0.0.1:{fault_server.port}/models/m?timeout_s=-1", "must be positive"),
        (f"v2+http://127.0.0.1:{fault_server.port}/models/m?token_env=PS_NOT_SET",
         "PS_NOT_SET"),
        (f"v2+http://127.0.0.1:{fault_server.port}/models/gone", "no model 'gone'"),
        (f"torchserve+http://127.0.0.1:{fault_server.port}/m", "--payload"),
    ]:
        monkeypatch.delenv("PS_NOT_SET", raising=False)
        with pytest.raises(ProbeError, match=words.replace("+", r"\+").replace("[", r"\[")):
            open_probe(uri, Bus())


def test_a_bearer_token_comes_from_the_environment_never_the_uri(opened, fault_server, demo_dir,
                                                                 monkeypatch):
    monkeypatch.setenv("PS_TEST_TOKEN", "s3cret-value")
    probe = opened(_v2(fault_server, "?token_env=PS_TEST_TOKEN"), Bus(),
                       ProbeOptions(payload=demo_dir / "reference.csv"))
    probe.measure_one()
    assert fault_server.authorizations[-1] == "Bearer s3cret-value"
    assert "s3cret" not in probe.endpoint and "s3cret" not in json.dumps(probe.info())


def test_a_server_that_echoes_the_token_never_puts_it_in_a_message(opened, fault_server,
                                                                   demo_dir, monkeypatch):
    from app.core.replay import replay
    from app.core.replay_cases import Case
    from app.core.replay_targets import open_target

    monkeypatch.setenv("PS_TEST_TOKEN", "s3cret-value")
    fault_server.mode = "echo_auth"
    uri = _v2(fault_server, "?token_env=PS_TEST_TOKEN")
    probe = opened(uri, Bus(), ProbeOptions(payload=demo_dir / "reference.csv"))
    capture = probe.measure_one()
    assert fault_server.authorizations[-1] == "Bearer s3cret-value"  # it was sent
    assert "Bearer [token]" in capture.error and "s3cret" not in capture.error
    # The same through a replay: the per-case error (saved, exported) is masked too.
    row = Case(None, capture)
    result = replay([row], [open_target(uri)])
    (text,) = result.runs[0].errors.values()
    assert "Bearer [token]" in text and "s3cret" not in text


def test_torchserve_predictions_and_class_probabilities(opened, fault_server, demo_dir):
    probe = opened(f"torchserve+http://127.0.0.1:{fault_server.port}/m?min_confidence=0.5",
                       Bus(), ProbeOptions(payload=demo_dir / "reference.csv"))
    capture = probe.measure_one()
    assert len(json.loads(fault_server.bodies[-1])["data"]) == 13
    assert (capture.prediction, capture.confidence) == ("class_b", pytest.approx(0.7))
    assert capture.status is CaptureStatus.MISMATCH  # the payload's label is "1"


def test_tfserving_status_metadata_and_predict(opened, fault_server, demo_dir):
    probe = opened(f"tfserving+http://127.0.0.1:{fault_server.port}/m", Bus(),
                       ProbeOptions(payload=demo_dir / "reference.csv"))
    capture = probe.measure_one()
    [instance] = json.loads(fault_server.bodies[-1])["instances"]
    assert len(instance) == 13
    assert capture.inputs[0].name == "x" and capture.inputs[0].dtype == "<f4"
    assert (capture.prediction, capture.model_version) == ("1", "3")
    assert probe.info()["signature"] == "serving_default"


def test_watching_a_server_that_never_answers_says_so(fault_server, demo_dir, tmp_path, capsys):
    from app.cli import main

    fault_server.mode, fault_server.delay_s = "hang", 30.0
    try:
        assert main(["watch", _v2(fault_server, "?timeout_s=1"), "--db", str(tmp_path / "w.db"),
                     "--seconds", "1", "--payload", str(demo_dir / "reference.csv")]) == 1
    finally:
        fault_server.release.set()
    err = capsys.readouterr().err
    assert f"no request to {_v2(fault_server, '?timeout_s=1')} was answered" in err
    assert "no answer within" in err


def test_a_refused_token_is_refused_at_attach_with_the_server_s_words(fault_server, demo_dir,
                                                                      monkeypatch):
    """HTTP 401 read "server ... is not live: HTTP 401", the endpoint was marked down, retried
    for ever and opened an "Endpoint down" incident: no retry helps without the right token."""
    fault_server.token = "right-token"
    options = ProbeOptions(payload=demo_dir / "reference.csv")
    with pytest.raises(ProbeError) as no_token:
        open_probe(_v2(fault_server), Bus(), options)
    assert str(no_token.value).endswith(
        f"server at {fault_server.url} refused our credentials: HTTP 401: invalid bearer "
        "token; give its token with ?token_env=NAME (the token in that environment variable)")
    monkeypatch.setenv("SERVER_TOKEN", "wrong-token")
    with pytest.raises(ProbeError, match=r"HTTP 401: invalid bearer token; check the token "
                                         r"in \$SERVER_TOKEN$"):
        open_probe(_v2(fault_server, "?token_env=SERVER_TOKEN"), Bus(), options)
    monkeypatch.setenv("SERVER_TOKEN", "right-token")
    probe = open_probe(_v2(fault_server, "?token_env=SERVER_TOKEN"), Bus(), options)
    try:
        assert probe.state is EndpointState.UP
        probe.measure_one()
        assert probe.requests == 1 and probe.last_error is None
    finally:
        probe.close()


def test_a_watch_whose_every_request_timed_out_fails(fault_server, demo_dir, tmp_path, capsys):
    """Timed-out requests were counted as done: a script gating on the exit status passed
    a run in which the server never answered once, so long as one request had timed out."""
    from app.cli import main

    fault_server.mode, fault_server.delay_s = "slow", 30.0
    uri = _v2(fault_server, "?timeout_s=0.3&rate=20")
    try:
        assert main(["watch", uri, "--db", str(tmp_path / "w.db"), "--seconds", "2",
                     "--payload", str(demo_dir / "reference.csv"), "--json"]) == 1
    finally:
        fault_server.release.set()
    out, err = capsys.readouterr()
    assert json.loads(out)["endpoints"][0]["requests"] >= 3  # they were sent, and timed out
    assert f"no request to {uri} was answered" in err and "no answer within 0.3 s" in err


def test_an_endpoint_never_reached_does_not_claim_its_inputs_came_from_a_payload():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    probe = open_probe(f"v2+http://127.0.0.1:{port}/models/m", Bus())  # nobody listens
    try:
        assert probe.state is EndpointState.DOWN
        assert probe.info()["inputs"].startswith("not known yet")
    finally:
        probe.close()
