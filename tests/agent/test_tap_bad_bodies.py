"""A body nested past what the JSON parser follows is kept raw by the tap's decoder, like any
other body it cannot read, instead of making the whole call undecodable."""

from __future__ import annotations

from app.core.domain import CaptureStatus
from app.core.tap_decode import Exchange, to_capture

DEEP = b"[" * 100000 + b"]" * 100000


def test_a_deeply_nested_answer_is_kept_raw():
    x = Exchange(1_700_000_000_000_000_000, "POST", "/v2/models/m/infer", DEEP, False, 200,
                 DEEP, False, 1.0)
    decoded = to_capture(x, "127.0.0.1:8000")
    assert decoded is not None
    capture, _ = decoded
    assert capture.status is CaptureStatus.OK
    assert [t.name for t in capture.inputs] == ["request_body"]
    assert [t.name for t in capture.outputs] == ["response_body"]
    assert capture.outputs[0].data == DEEP
