"""Incident rules: per-endpoint settings and one reading per rule at an instant, read from the
store. Pure functions over the caller's Store; any thread that owns that Store.

Each rule answers with a ``Reading``: the measured value, the threshold that opens an incident,
and whether the value is past it (``tripped``) or back below the lower closing threshold
(``clear``). Between the two is the hysteresis band: an open incident stays open there and a
closed one stays closed, so a metric hovering at its threshold cannot flap.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from app.core.domain import Metric, utc_text
from app.core.store import Store, StoreError

NS = 1_000_000_000
RULES = ("latency", "error_rate", "drift", "memory", "down")
RULE_TITLES = {
    "latency": "Latency above SLO",
    "error_rate": "Error-rate burst",
    "drift": "Input drift",
    "memory": "Memory growth",
    "down": "Endpoint down",
}


class IncidentError(Exception):
    """Incident settings or an incident that cannot be used; the message says what to fix."""


# Thresholds that are a share (failures of requests, drifted features), each with its rule: a
# share past 1 is never reached, so the rule would be off without a word. (close_ratio, a
# share of a threshold, has its own check.)
SHARE_RULES = {"error_rate": "error_rate", "drift_share": "drift"}

# Settings for which 0 means nothing sensible: an empty window, a rule that never waits.
_ABOVE_ZERO = frozenset({"window_s", "slo_ms", "p95_slo_factor", "p99_slo_factor",
                         "memory_window_s", "down_after_s", "open_after", "close_ratio"})


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """Thresholds for one endpoint. The defaults suit a model answering tens of requests a
    second; ``merged`` applies the per-endpoint overrides kept in the workspace."""

    window_s: float = 30.0  # latency and error rate are judged over this trailing window
    min_requests: int = 20  # fewer requests in the window: too few to judge
    slo_ms: float | None = None  # overrides the endpoint's own SLO
    p95_slo_factor: float = 1.0  # latency trips when p95 > SLO x this ...
    p99_slo_factor: float = 2.0  # ... or p99 > SLO x this
    error_rate: float = 0.15  # failures / requests over the window
    min_failures: int = 10  # a burst needs at least this many failures, whatever the rate
    drift_share: float = 0.5  # share of drifted features in the latest drift evaluation
    drift_max_age_s: float = 60.0  # older evaluations no longer say anything about now
    memory_window_s: float = 600.0
    memory_min_span_s: float = 120.0  # a slope over less than this is start-up, not a leak
    memory_slope_mb_per_min: float = 20.0
    down_after_s: float = 15.0  # no samples for this long (or the probe says down)
    open_after: int = 2  # consecutive tripped evaluations before an incident opens
    close_ratio: float = 0.8  # clear once below this share of the opening threshold ...
    close_after_s: float = 30.0  # ... continuously for this long
    reopen_within_s: float = 300.0  # tripping again this soon reopens the same incident
    disabled: tuple[str, ...] = field(default=())

    def merged(self, overrides: Mapping[str, object] | None) -> RuleConfig:
        """These settings with ``overrides`` applied; IncidentError names an unknown key."""
        if not overrides:
            return self
        known = {f.name: f for f in fields(self)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise IncidentError(f"unknown incident setting(s) {', '.join(unknown)}; "
                                f"known: {', '.join(known)}")
        values: dict[str, object] = {}
        for key, value in overrides.items():
            if key == "disabled":
                bad = sorted(set(value) - set(RULES))  # type: ignore[arg-type]
                if bad:
                    raise IncidentError(f"unknown rule(s) {', '.join(bad)}; "
                                        f"rules: {', '.join(RULES)}")
                values[key] = tuple(value)  # type: ignore[arg-type]
            elif value is None:
                values[key] = None
            else:
                kind = type(getattr(self, key) or 0.0)
                try:
                    values[key] = kind(value)  # type: ignore[call-arg]
                except (TypeError, ValueError):
                    raise IncidentError(f"incident setting {key}={value!r} is not a "
                                        f"{kind.__name__}") from None
                number = float(values[key])  # type: ignore[arg-type]
                low_ok = number > 0 if key in _ABOVE_ZERO else number >= 0
                if not (math.isfinite(number) and low_ok):
                    raise IncidentError(f"incident setting {key}={value!r} must be a finite "
                                        f"number {'above' if key in _ABOVE_ZERO else 'of at least'}"
                                        " 0")
                if key == "close_ratio" and number > 1:
                    raise IncidentError(f"incident setting close_ratio={value!r} must be at "
                                        "most 1: an incident clears below its threshold")
                if key in SHARE_RULES and number >= 1:
                    # An incident opens above its threshold: a share can never pass 1.
                    raise IncidentError(f"incident setting {key}={value!r} is a share and must "
                                        "be below 1 (0.2 is 20%); to switch the rule off, "
                                        f"give disabled={SHARE_RULES[key]}")
        return replace(self, **values)  # type: ignore[arg-type]

    def to_json(self) -> dict:
        data = asdict(self)
        data["disabled"] = list(self.disabled)
        return data


@dataclass(frozen=True, slots=True)
class Reading:
    """One rule's verdict at one instant."""

    rule: str
    value: float
    threshold: float
    tripped: bool
    clear: bool
    detail: str  # what a person reads: the figures and the window they cover
    unit: str = ""
    # When the trouble began, where the rule knows better than its first trip (an outage
    # starts at the last sign of life, not down_after_s later when the rule can tell).
    since_ns: int | None = None

    @property
    def severity(self) -> str:
        if self.rule == "down":
            return "critical"
        return "critical" if self.threshold > 0 and self.value >= 2 * self.threshold \
            else "warning"


def _judge(rule: str, value: float, threshold: float, cfg: RuleConfig, detail: str,
           unit: str = "") -> Reading:
    return Reading(rule, value, threshold, value > threshold,
                   value < threshold * cfg.close_ratio, detail, unit)


def latency(store: Store, endpoint: str, t_ns: int, cfg: RuleConfig,
            endpoint_slo_ms: float | None) -> Reading | None:
    slo = cfg.slo_ms if cfg.slo_ms is not None else endpoint_slo_ms
    if slo is None or slo <= 0:
        return None
    _, lat = store.values(endpoint, Metric.LATENCY_MS, t_ns - int(cfg.window_s * NS), t_ns)
    if len(lat) < cfg.min_requests:
        return None
    p95, p99 = (float(v) for v in np.percentile(lat, [95, 99]))
    t95, t99 = slo * cfg.p95_slo_factor, slo * cfg.p99_slo_factor
    detail = (f"p95 {p95:.2f} ms, p99 {p99:.2f} ms over {cfg.window_s:g} s "
              f"({len(lat):,} requests); SLO {slo:g} ms")
    # Whichever quantile is further past its threshold speaks for the rule.
    value, threshold = (p95, t95) if p95 / t95 >= p99 / t99 else (p99, t99)
    tripped = p95 > t95 or p99 > t99
    clear = p95 < t95 * cfg.close_ratio and p99 < t99 * cfg.close_ratio
    return Reading("latency", value, threshold, tripped, clear, detail, "ms")


def error_rate(store: Store, endpoint: str, t_ns: int, cfg: RuleConfig) -> Reading | None:
    start = t_ns - int(cfg.window_s * NS)
    requests = store.count_between(endpoint, Metric.LATENCY_MS, start, t_ns)
    if requests == 0 and endpoint.startswith("log:"):
        # A log imported without latencies: each row is a capture, and so a request.
        requests = store.count_captures_between(endpoint, start, t_ns)
    if requests < cfg.min_requests:
        return None
    failures = store.count_between(endpoint, Metric.FAILURE, start, t_ns)
    rate = failures / requests
    detail = (f"{failures:,} failures in {requests:,} requests ({rate:.1%}) over "
              f"{cfg.window_s:g} s; threshold {cfg.error_rate:.0%}")
    reading = _judge("error_rate", rate, cfg.error_rate, cfg, detail)
    if failures < cfg.min_failures:
        return replace(reading, tripped=False)
    return reading


def drift(store: Store, endpoint: str, t_ns: int, cfg: RuleConfig) -> Reading | None:
    try:
        evaluations = store.drift_evaluations(endpoint, t_ns - int(cfg.drift_max_age_s * NS),
                                              t_ns)
    except (AttributeError, sqlite3.Error, StoreError):
        return None  # a workspace without drift tables: nothing to judge
    if not evaluations:
        return None
    latest = evaluations[-1]
    share = float(latest["share_drifted"] or 0.0)
    detail = (f"{share:.0%} of features drifted in the latest evaluation "
              f"({latest['rows_current']} rows); threshold {cfg.drift_share:.0%}")
    return _judge("drift", share, cfg.drift_share, cfg, detail)


def memory(store: Store, endpoint: str, t_ns: int, cfg: RuleConfig) -> Reading | None:
    ts, rss = store.values(endpoint, Metric.RSS_MB, t_ns - int(cfg.memory_window_s * NS), t_ns)
    if len(ts) < 5 or (ts[-1] - ts[0]) < cfg.memory_min_span_s * NS:
        return None
    minutes = (ts - ts[0]) / (60 * NS)
    whole = float(np.polyfit(minutes, rss, 1)[0])
    # A leak keeps growing; start-up (a cache filling, a window opening) grows once and stops.
    # The later half of the window must climb as steeply as the whole of it.
    half = minutes >= minutes[-1] / 2
    later = float(np.polyfit(minutes[half], rss[half], 1)[0]) if half.sum() >= 3 else whole
    slope = min(whole, later)
    if not math.isfinite(slope):
        return None
    detail = (f"RSS grows {slope:.1f} MB/min over {minutes[-1]:.1f} min "
              f"({rss[0]:.0f} -> {rss[-1]:.0f} MB); threshold {cfg.memory_slope_mb_per_min:g}"
              " MB/min")
    return _judge("memory", slope, cfg.memory_slope_mb_per_min, cfg, detail, "MB/min")


def down(last_seen_ns: int | None, t_ns: int, cfg: RuleConfig,
         state: str | None = None, down_since_ns: int | None = None) -> Reading | None:
    """``last_seen_ns``: the endpoint's newest sign of life; ``state``: its probe's own
    verdict; ``down_since_ns``: when the probe began saying it is down, where known."""
    if (last_seen_ns is None and state is None) or state in ("paused", "stopped"):
        return None  # silence the user asked for is not an outage
    gap_s = max(0.0, (t_ns - last_seen_ns) / NS) if last_seen_ns is not None else math.inf
    said_down = state == "down"
    tripped = said_down or gap_s > cfg.down_after_s
    since_ns = down_since_ns if said_down else last_seen_ns
    if said_down:
        detail = ("the probe reports the endpoint down (its attempts to reach it got no answer)"
                  if down_since_ns is None else
                  f"the probe reports the endpoint down since {utc_text(down_since_ns)} "
                  "(its attempts to reach it got no answer)")
    elif tripped:
        # When the silence began, not only how long it is: the incident opens only once it
        # has lasted down_after_s (and an evaluation has run), and a write-up needs the start.
        since = ("no samples yet" if last_seen_ns is None else
                 f"no samples since {utc_text(last_seen_ns)} ({gap_s:.0f} s)")
        detail = f"{since}; threshold {cfg.down_after_s:g} s"
    else:
        assert last_seen_ns is not None
        detail = f"the endpoint answers again (newest sample {utc_text(last_seen_ns)})"
    return Reading("down", min(gap_s, 1e9), cfg.down_after_s, tripped,
                   not said_down and gap_s < cfg.down_after_s * cfg.close_ratio, detail, "s",
                   since_ns=since_ns if tripped else None)
