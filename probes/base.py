"""The one interface every probe implements, and the registry from URI scheme to probe class.

Thread: a probe is built and controlled from any one thread; ``run`` executes on the probe's
own thread and talks to the rest of the program only through the bus.
"""

from __future__ import annotations

import difflib
import enum
import errno
import logging
import math
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from app.core.bus import Bus
from app.core.domain import EndpointUri, Metric, Sample, UriError
from probes.health import FailureWindow

log = logging.getLogger(__name__)

PROBE_SWITCH_INTERVAL_S = 0.0005  # see Probe.start
# Errors of the machine, not of the probe, that pass: out of file descriptors (a flood of
# connections to the agent beside it), of kernel memory or buffers. A probe that meets one
# waits and runs again, from TRANSIENT_PAUSE_S doubling to TRANSIENT_MAX_PAUSE_S (back to
# the first after a run of TRANSIENT_RESET_S without one).
TRANSIENT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS,
                              errno.EAGAIN})
TRANSIENT_PAUSE_S = 0.5
TRANSIENT_MAX_PAUSE_S = 30.0
TRANSIENT_RESET_S = 60.0


class ProbeError(Exception):
    """Something about an endpoint that the user can fix; the message says what and how."""


class EndpointState(enum.StrEnum):
    STARTING = "starting"
    UP = "up"
    DEGRADED = "degraded"  # answering, but a share of requests fail (probes/health.py)
    DOWN = "down"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """Settings that the CLI or the attach dialog give every probe; the URI may override them."""

    rate_hz: float = 20.0  # active requests per second; 0 = as fast as the endpoint answers
    payload: Path | None = None  # rows to send; generated from the model's signature if absent
    capture_rate: float = 1.0  # share of successful requests kept as captures; failures always
    slo_ms: float | None = None
    min_confidence: float | None = None
    seed: int = 0
    # The workspace file the recorder commits to, for probes that resume from what was
    # committed (agent+http:). Set by Monitor.attach; None when nothing is recorded.
    workspace: Path | None = None


def float_param(uri: EndpointUri, key: str, default: float, *, positive: bool = False,
                non_negative: bool = False, at_most: float | None = None) -> float:
    """A finite number from the URI's query, or ``default``; a ProbeError naming the bad value."""
    raw = uri.param(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ProbeError(f"'{key}={raw}' in {uri} is not a number") from None
    if not math.isfinite(value):
        raise ProbeError(f"'{key}={raw}' in {uri} must be a finite number")
    if positive and value <= 0:
        raise ProbeError(f"'{key}={raw}' in {uri} must be positive")
    if non_negative and value < 0:
        raise ProbeError(f"'{key}={raw}' in {uri} must be 0 or more")
    if at_most is not None and value > at_most:
        raise ProbeError(f"'{key}={raw}' in {uri} must be at most {at_most:g}")
    return value


def opt_float_param(uri: EndpointUri, key: str, default: float | None, *,
                    positive: bool = False, non_negative: bool = False,
                    at_most: float | None = None) -> float | None:
    """Like ``float_param`` for settings that may be absent (an SLO, a threshold)."""
    if uri.param(key) is None:
        return default
    return float_param(uri, key, 0.0, positive=positive, non_negative=non_negative,
                       at_most=at_most)


def int_param(uri: EndpointUri, key: str, default: int | None, *, minimum: int = 1,
              maximum: int | None = None, why_maximum: str = "") -> int | None:
    """A whole number of at least ``minimum`` (and at most ``maximum``, ``why_maximum``
    saying why) from the URI's query, or ``default``."""
    raw = uri.param(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ProbeError(f"'{key}={raw}' in {uri} is not a whole number") from None
    if value < minimum:
        raise ProbeError(f"'{key}={raw}' in {uri} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ProbeError(f"'{key}={raw}' in {uri} must be at most {maximum}{why_maximum}")
    return value


def traffic_params(uri: EndpointUri, options: ProbeOptions
                   ) -> tuple[float, float, float | None, float | None]:
    """What an active probe sends and judges: rate, capture share, SLO, minimum confidence,
    from the URI, else from ``options``."""
    return (float_param(uri, "rate", options.rate_hz, non_negative=True),
            float_param(uri, "capture", options.capture_rate, non_negative=True, at_most=1.0),
            opt_float_param(uri, "slo_ms", options.slo_ms, positive=True),
            opt_float_param(uri, "min_confidence", options.min_confidence, non_negative=True,
                            at_most=1.0))


def first_line(exc: BaseException) -> str:
    """An exception as one line for a person: its first line, or its type if it is silent."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_REGISTRY: dict[str, type[Probe]] = {}


def register(scheme: str) -> Callable[[type[Probe]], type[Probe]]:
    def decorate(cls: type[Probe]) -> type[Probe]:
        cls.scheme = scheme
        _REGISTRY[scheme] = cls
        return cls

    return decorate


def schemes() -> list[str]:
    return sorted(_REGISTRY)


def params_of(scheme: str) -> frozenset[str]:
    """The URI parameters a probe of ``scheme`` takes (none for an unknown scheme)."""
    cls = _REGISTRY.get(scheme)
    return frozenset(cls.params) if cls is not None else frozenset()


def open_probe(uri: str | EndpointUri, bus: Bus, options: ProbeOptions | None = None) -> Probe:
    """Build the probe for a URI; raises ProbeError with a message meant for the user."""
    try:
        parsed = uri if isinstance(uri, EndpointUri) else EndpointUri.parse(uri)
    except UriError as exc:
        raise ProbeError(str(exc)) from exc
    cls = _REGISTRY.get(parsed.scheme)
    if cls is None:
        raise ProbeError(f"unknown endpoint kind '{parsed.scheme}' in '{uri}'; "
                         f"known kinds: {', '.join(s + ':' for s in schemes())}")
    _refuse_unknown_params(parsed, cls)
    return cls(parsed, bus, options or ProbeOptions())


def _refuse_unknown_params(uri: EndpointUri, cls: type[Probe]) -> None:
    unknown = [k for k, _ in uri.params if k not in cls.params]
    if not unknown:
        return
    key = unknown[0]
    close = difflib.get_close_matches(key, sorted(cls.params), n=1)
    hint = f"did you mean {close[0]}?" if close else "it takes none" if not cls.params else \
        f"it takes {', '.join(sorted(cls.params))}"
    raise ProbeError(f"'{key}' is not a parameter of {uri.scheme}: URIs; {hint}")


class Probe(ABC):
    scheme: ClassVar[str] = ""
    # The URI parameters this kind of probe reads: any other is refused, since a misspelt
    # one (?slo=5 for ?slo_ms=5) would otherwise be silently ignored.
    params: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, uri: EndpointUri, bus: Bus, options: ProbeOptions) -> None:
        self.uri = uri
        self.endpoint = str(uri)
        self.bus = bus
        self.options = options
        self.state = EndpointState.STARTING
        self.last_error: str | None = None
        # The outage last said in the log, and since when: a server whose health check
        # answers while every inference fails flips up and down each retry, and must be
        # said once, not once a retry.
        self._told_down: str | None = None
        self._down_since = 0.0
        self.requests = 0
        self.unanswered = 0  # requests that got no answer at all (timed out, unreachable)
        self.errors = 0
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._thread: threading.Thread | None = None
        self._unexpected_seen: set[str] = set()
        self.transient_errors = 0  # runs ended by a passing error of the machine, and retried

    def internal_error(self, exc: Exception, doing: str) -> str:
        """A bug of ours met while ``doing`` (e.g. "reading a page"): its traceback logged
        once per kind of error, so a server that keeps causing it does not flood the log;
        returns the one line for ``last_error``. The caller goes on probing."""
        kind = type(exc).__name__
        if kind not in self._unexpected_seen:
            self._unexpected_seen.add(kind)
            log.exception("%s: internal error %s (probing goes on)", self.endpoint, doing)
        return f"internal error {doing}: {kind}: {first_line(exc)}"

    # -- what a subclass provides ---------------------------------------------------------

    @abstractmethod
    def run(self, stop: threading.Event) -> None:
        """Measure until ``stop`` is set, putting samples and captures on the bus."""

    def info(self) -> dict[str, str]:
        """Facts for the endpoint list: kind, model version, provider..."""
        return {"kind": self.scheme}

    def close(self) -> None:
        """Release sessions and connections; called on the probe thread after ``run``."""
        return None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        # A probe reads its clock on its own thread, so any wait for the interpreter lock
        # between the answer arriving and the clock being read is counted as latency. At
        # Python's default 5 ms switch interval a busy thread beside it (the window's
        # painting, a drift evaluation) made a 1 ms server read 20-40 ms at p95; bounding
        # each wait keeps that to a fraction of a millisecond (docs/PERFORMANCE.md).
        sys.setswitchinterval(min(sys.getswitchinterval(), PROBE_SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._main, name=f"probe {self.endpoint}",
                                        daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the probe to stop after the request under way; returns at once."""
        self._stop.set()
        self._resume.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop and wait up to ``timeout_s`` for the probe's thread to end."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("probe %s did not stop within %.1f s", self.endpoint, timeout_s)

    def pause(self) -> None:
        self._resume.clear()
        self.state = EndpointState.PAUSED

    def resume(self) -> None:
        self.state = EndpointState.STARTING
        self._resume.set()

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def mark_down(self, reason: str) -> None:
        """The endpoint stopped answering: say so once in the log, every time in the data."""
        if self.state is not EndpointState.DOWN and reason != self._told_down:
            if self._told_down is None:
                self._down_since = time.monotonic()
            log.warning("%s is down: %s", self.endpoint, reason)
            self._told_down = reason
        self.state = EndpointState.DOWN
        self.last_error = reason
        self.bus.put(Sample(self.endpoint, time.time_ns(), Metric.UP, 0.0))

    @property
    def answered(self) -> int:
        return self.requests - self.unanswered

    def mark_answered(self) -> None:
        """The endpoint answered a request: an outage said in the log has ended."""
        if self._told_down is not None:
            log.warning("%s is back up after %.0f s", self.endpoint,
                        time.monotonic() - self._down_since)
            self._told_down = None

    def set_request_state(self, window: FailureWindow, now: float) -> None:
        """Up or degraded as ``window`` judges the recent requests at ``now`` (the one rule
        of probes/health.py); while degraded, ``last_error`` says why."""
        degraded = window.judge(now)
        if degraded:
            self.last_error = window.reason
        elif window.judged:
            self.last_error = None  # answering well again
        self.state = EndpointState.DEGRADED if degraded else EndpointState.UP

    def wait_if_paused(self) -> None:
        """Block while paused; call between requests."""
        self._resume.wait()

    def _main(self) -> None:
        try:
            self._run_through_transient_errors()
        except Exception as exc:  # a probe bug must not take the program down
            log.exception("probe %s stopped on an unexpected error", self.endpoint)
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.state = EndpointState.DOWN
        finally:
            try:
                self.close()
            finally:
                if self.state is not EndpointState.DOWN:
                    self.state = EndpointState.STOPPED

    def _run_through_transient_errors(self) -> None:
        """``run``, run again after an error that passes (``TRANSIENT_ERRNOS``): a probe
        that stopped for good on one EMFILE left the agent serving its buffer with nothing
        new in it, and no word of why. Each such error is counted; the first of each kind
        is logged. Any other error ends the probe (``_main``)."""
        pause_s = TRANSIENT_PAUSE_S
        told: set[int] = set()
        while True:
            started = time.monotonic()
            try:
                self.run(self._stop)
                return
            except OSError as exc:
                if exc.errno not in TRANSIENT_ERRNOS:
                    raise
                if self._stop.is_set():
                    return
                self.transient_errors += 1
                self.last_error = f"{first_line(exc)} (retrying)"
                if time.monotonic() - started >= TRANSIENT_RESET_S:
                    pause_s = TRANSIENT_PAUSE_S
                if exc.errno not in told:
                    told.add(exc.errno)
                    log.warning("probe %s: %s; it runs again in %g s, and again after each "
                                "such error (counted, not logged)", self.endpoint,
                                first_line(exc), pause_s)
            if self._stop.wait(pause_s):
                return
            pause_s = min(TRANSIENT_MAX_PAUSE_S, pause_s * 2)
