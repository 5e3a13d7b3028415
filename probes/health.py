"""The one rule for up and degraded, shared by every probe that sends requests (``onnx:``,
``v2+http:``, ``torchserve+http:``, ``tfserving+http:``). Thread: the probe's own.

An endpoint reads **degraded** once 10 % or more of its recent requests failed, and **up**
again only once fewer than 5 % did: between the two it keeps its colour, so a share hovering
at a threshold does not flip the dot at every update. A failure is any request that is not
OK (``CaptureStatus``): an error, a timeout, a non-finite output, a wrong label, too slow for
the SLO, too unsure for ``min_confidence``.

The recent requests are the last 200, or those of the last 10 s when more came in that time,
and none older than 60 s unless fewer than 20 would be left: at 5 req/s that is the last
40 s, at 200 req/s the last 2,000 requests, either enough that a steady share reads steady.
Nothing is judged before 20 requests or 10 s of them. Down (nothing answers) is each probe's
own verdict; the share starts afresh after an outage, which it does not count.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from app.core.domain import CaptureStatus

DEGRADED_AT = 0.10  # share of recent requests failed at or above which an endpoint is degraded
UP_BELOW = 0.05  # ...and below which a degraded one is up again
WINDOW_REQUESTS = 200
WINDOW_S = 10.0
MAX_AGE_S = 60.0
MIN_REQUESTS = 20
BUCKET_S = 0.5  # outcomes are kept per half second, so a window of any rate costs ~120 counts
_NAMES = {CaptureStatus.NON_FINITE: "non-finite", CaptureStatus.LOW_CONFIDENCE: "low confidence"}
_NO_ANSWER = frozenset({CaptureStatus.ERROR, CaptureStatus.TIMEOUT})


def _enough(requests: int, covered_s: float) -> bool:
    """Whether the newest ``requests``, reaching ``covered_s`` back, are the whole window."""
    return requests >= MIN_REQUESTS and (
        covered_s >= MAX_AGE_S or (requests >= WINDOW_REQUESTS and covered_s >= WINDOW_S))


class _Bucket:
    __slots__ = ("failed", "requests", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.requests = 0
        self.failed: dict[CaptureStatus, int] = {}


def percent(share: float) -> str:
    """A share as a person reads it: 23%, and <1% rather than a misleading 0%."""
    return "<1%" if 0 < share < 0.01 else f"{share:.0%}"


class FailureWindow:
    """Outcomes of an endpoint's recent requests, and the up/degraded verdict on them."""

    def __init__(self) -> None:
        self._buckets: deque[_Bucket] = deque()
        self.degraded = False
        self.judged = False  # whether the last ``judge`` had enough requests to go by
        self.reason: str | None = None  # why it is degraded, while it is
        self._error: str | None = None  # the last error's text, said with an error share

    def add(self, status: CaptureStatus, now: float, error: str | None = None) -> None:
        """One request's outcome at ``now`` (monotonic seconds); ``error``: its error text."""
        self.add_counts(1, {} if status is CaptureStatus.OK else {status: 1}, now, error)

    def add_counts(self, requests: int, failed: Mapping[CaptureStatus, int], now: float,
                   error: str | None = None) -> None:
        """A batch of ``requests``, ``failed`` of them by status, all at ``now``."""
        if not self._buckets or now - self._buckets[-1].start >= BUCKET_S:
            self._buckets.append(_Bucket(now))
            self._forget(now)
        bucket = self._buckets[-1]
        bucket.requests += requests
        for status, count in failed.items():
            if status is not CaptureStatus.OK and count:
                bucket.failed[status] = bucket.failed.get(status, 0) + count
        if error is not None:
            self._error = error

    def reset(self) -> None:
        """Forget every outcome (after an outage): the next verdict is of what follows."""
        self._buckets.clear()
        self.degraded = self.judged = False
        self.reason = self._error = None

    def judge(self, now: float) -> bool:
        """Whether the endpoint is degraded at ``now``; with too few requests to go by, the
        verdict stands as it was (``judged`` False)."""
        requests, failed = self._window(now)
        span_s = now - self._buckets[0].start if self._buckets else 0.0
        self.judged = requests >= MIN_REQUESTS or (requests > 0 and span_s >= WINDOW_S)
        if not self.judged:
            return self.degraded
        share = sum(failed.values()) / requests
        self.degraded = share >= (UP_BELOW if self.degraded else DEGRADED_AT)
        self.reason = self._describe(share, requests, failed) if self.degraded else None
        return self.degraded

    def _window(self, now: float) -> tuple[int, dict[CaptureStatus, int]]:
        requests = 0
        covered_s = 0.0  # how far back the buckets taken so far reach
        failed: dict[CaptureStatus, int] = {}
        for bucket in reversed(self._buckets):
            if _enough(requests, covered_s):
                break
            requests += bucket.requests
            covered_s = now - bucket.start
            for status, count in bucket.failed.items():
                failed[status] = failed.get(status, 0) + count
        return requests, failed

    def _forget(self, now: float) -> None:
        """Drop the buckets no window will read again, oldest first."""
        newer = sum(b.requests for b in self._buckets) - self._buckets[0].requests
        while len(self._buckets) > 1 and _enough(newer, now - self._buckets[1].start):
            self._buckets.popleft()
            newer -= self._buckets[0].requests

    def _describe(self, share: float, requests: int, failed: Mapping[CaptureStatus, int]
                  ) -> str:
        kinds = sorted(((count, _NAMES.get(status, str(status)), status)
                        for status, count in failed.items() if count),
                       key=lambda k: (-k[0], k[1]))
        parts = ", ".join(f"{name} {percent(count / requests)}" for count, name, _ in kinds)
        text = f"{percent(share)} of the last {requests:,} requests failed ({parts})"
        if self._error and any(status in _NO_ANSWER for _, _, status in kinds):
            text += f"; last error: {self._error}"
        return text
