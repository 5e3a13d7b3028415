"""The frames between the tap and its recording process: every field survives the trip, a
stream cut inside a frame is refused with a clear error, and the recording process records
inference calls, skips the rest and reports its counts."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from app.core.domain import CaptureStatus
from app.core.store import Store
from app.core.tap_decode import Exchange
from app.core.tap_record import FrameError, encode_exchange, read_exchanges
from tests.agent.conftest import ROOT, env_with

V2_REQUEST = json.dumps({"id": "r-7", "inputs": [
    {"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]}).encode()
V2_ANSWER = json.dumps({"outputs": [
    {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}]}).encode()

EXCHANGES = [
    Exchange(1_700_000_000_000_000_000, "POST", "/v2/models/m/infer", V2_REQUEST, False, 200,
             V2_ANSWER, False, 1.25),
    Exchange(1_700_000_000_100_000_000, "POST", "/v2/models/m/infer", b"\x00\xff binary", True,
             None, b"", False, 30_000.0, "upstream x: did not answer", True, "rid-\u00e9"),
    Exchange(1_700_000_000_200_000_000, "GET", "/v2/health/ready", b"", False, 200, b"", False,
             0.5),
]


def test_every_field_survives_the_frames():
    stream = io.BytesIO(b"".join(encode_exchange(x) for x in EXCHANGES))
    assert list(read_exchanges(stream)) == EXCHANGES


@pytest.mark.parametrize("cut", [2, 10, -1])
def test_a_stream_cut_inside_a_frame_is_refused(cut):
    data = b"".join(encode_exchange(x) for x in EXCHANGES)
    with pytest.raises(FrameError):
        list(read_exchanges(io.BytesIO(data[:cut])))


def test_the_recording_process_records_inference_calls_and_reports_counts(tmp_path):
    db = tmp_path / "ws.db"
    Store(db).close()
    done = subprocess.run(
        [sys.executable, "-m", "app.core.tap_record", "--db", str(db),
         "--upstream", "127.0.0.1:8000"],
        input=b"".join(encode_exchange(x) for x in EXCHANGES), capture_output=True,
        cwd=ROOT, env=env_with(), timeout=60, check=True)
    counts = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert counts == {"exchanges": 3, "recorded": 2, "not_inference": 1, "undecodable": 0,
                      "unwritten": 0}
    store = Store(db, readonly=True)
    try:
        caps = sorted((c.capture for c in store.captures()), key=lambda c: c.ts_ns)
    finally:
        store.close()
    assert [c.status for c in caps] == [CaptureStatus.OK, CaptureStatus.TIMEOUT]
    assert caps[0].request_id == "r-7" and caps[0].prediction == "1"
    assert caps[0].inputs[0].to_array().tolist() == [[1.0, 2.0, 3.0]]
    assert caps[1].truncated and "did not answer" in caps[1].error
