"""Opens, updates and closes incidents from the rules in incident_rules.py, with hysteresis.

``IncidentEngine`` judges every endpoint at one instant on the caller's Store (one thread).
``IncidentMonitor`` is a Recorder listener: on the recorder thread it only notes which
endpoints reported; its own worker thread owns a separate Store connection and runs the engine
every few seconds. ``evaluate_range`` runs the engine over stored history (CLI, tests).

Hysteresis: a rule must trip on ``open_after`` consecutive evaluations to open an incident; it
closes only after staying below ``close_ratio`` x its threshold for ``close_after_s``; and
tripping again within ``reopen_within_s`` reopens the same incident instead of a new one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.core import incident_rules as rules
from app.core.background import BackgroundEvaluator
from app.core.domain import Batch, Metric
from app.core.incident_actions import (
    Status,
    StatusChange,
    change_status,
    find_incident,
    status_text,
)
from app.core.incident_rules import NS, RULE_TITLES, IncidentError, Reading, RuleConfig
from app.core.store import Store, StoreError

log = logging.getLogger(__name__)

__all__ = ["IncidentEngine", "IncidentError", "IncidentEvent", "IncidentMonitor", "RuleConfig",
           "Status", "StatusChange", "change_status", "evaluate_range", "find_incident",
           "incident_window", "status_text"]


SEVERITY_RANK = {"warning": 1, "critical": 2}


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    """What the engine did: ``kind`` is opened, reopened, escalated or cleared."""

    kind: str
    incident_id: int
    endpoint: str
    rule: str
    ts_ns: int  # when the engine confirmed it
    detail: str
    # The time the incident records for it (the rule's first trip, the clearing's start),
    # where that differs from ``ts_ns``; as `incidents list` shows them.
    at_ns: int | None = None


@dataclass(slots=True)
class _Track:
    """Hysteresis state of one rule of one endpoint."""

    loaded: bool = False
    trips: int = 0
    first_trip_ns: int | None = None
    clear_since_ns: int | None = None
    incident_id: int | None = None
    severity: str = "warning"
    peak: tuple[float, float] = (0.0, 0.0)  # _peak_key of the stored value and threshold


@dataclass(slots=True)
class _Context:
    """What the engine knows beyond the store: when each endpoint last reported, and what its
    probe says (live only)."""

    last_seen_ns: dict[str, int] = field(default_factory=dict)
    states: Callable[[], Mapping[str, str]] | None = None


def _title(rule: str) -> str:
    return RULE_TITLES.get(rule, rule)


def _peak_key(value: float | None, threshold: float | None) -> tuple[float, float]:
    """How far past its own threshold a reading is. The latency rule's value is p95 or p99,
    each against its threshold (1x or 2x the SLO), so values alone do not compare: a p99 of
    8 ms against 6 ms is not a worse peak than a p95 of 4 ms against 3 ms."""
    value, threshold = float(value or 0.0), float(threshold or 0.0)
    return (value / threshold if threshold > 0 else math.inf, value)


class IncidentEngine:
    def __init__(self, store: Store, defaults: RuleConfig | None = None) -> None:
        self.store = store
        self.defaults = defaults or RuleConfig()
        self._tracks: dict[tuple[str, str], _Track] = {}

    def config(self, endpoint: str) -> RuleConfig:
        return self.defaults.merged(self.store.incident_rules(endpoint))

    def evaluate(self, t_ns: int, endpoints: Iterable[str] | None = None, *,
                 last_seen_ns: Mapping[str, int] | None = None,
                 states: Mapping[str, str] | None = None) -> list[IncidentEvent]:
        """Judge each endpoint at ``t_ns``. With ``last_seen_ns`` (live), the down rule uses it;
        without, it asks the store for the newest sample at or before ``t_ns``."""
        infos = {e["uri"]: e for e in self.store.endpoints()}
        events: list[IncidentEvent] = []
        for endpoint in (endpoints if endpoints is not None else infos):
            info = infos.get(endpoint)
            if info is None:
                continue
            try:
                cfg = self.config(endpoint)
            except IncidentError as exc:
                log.warning("incident rules of %s: %s; using the defaults", endpoint, exc)
                cfg = self.defaults
            for reading in self._readings(endpoint, info, t_ns, cfg, last_seen_ns, states):
                event = self._step(endpoint, reading, t_ns, cfg)
                if event is not None:
                    events.append(event)
        return events

    def _readings(self, endpoint: str, info: dict, t_ns: int, cfg: RuleConfig,
                  last_seen_ns: Mapping[str, int] | None,
                  states: Mapping[str, str] | None) -> list[Reading]:
        off = set(cfg.disabled)
        out: list[Reading | None] = []
        if "latency" not in off:
            out.append(rules.latency(self.store, endpoint, t_ns, cfg, info.get("slo_ms")))
        if "error_rate" not in off:
            out.append(rules.error_rate(self.store, endpoint, t_ns, cfg))
        if "drift" not in off:
            out.append(rules.drift(self.store, endpoint, t_ns, cfg))
        if "memory" not in off:
            out.append(rules.memory(self.store, endpoint, t_ns, cfg))
        # An imported log (log:NAME) records requests as they came; a quiet stretch in it
        # is no traffic, not an outage, and nothing probes it to tell the two apart.
        if "down" not in off and not endpoint.startswith("log:"):
            state = (states or {}).get(endpoint)
            if last_seen_ns is not None:
                seen = last_seen_ns.get(endpoint)
                # The probe's ``up`` 0 samples say since when: the incident opens then, as
                # it does when the same history is judged again, not at this evaluation.
                since = self.store.down_since_ns(endpoint, t_ns) if state == "down" else None
            else:
                # History: the probe's ``up`` 0 samples say down, and are no sign of life.
                seen = self.store.last_sample_ns(endpoint, t_ns, alive=True)
                since = self.store.down_since_ns(endpoint, t_ns)
                if since is not None and state is None:
                    state = "down"
            out.append(rules.down(seen, t_ns, cfg, state, since))
        return [r for r in out if r is not None]

    # -- the state machine ----------------------------------------------------------------

    def _latest(self, endpoint: str, rule: str, t_ns: int) -> dict | None:
        """The newest incident of this rule that had opened by ``t_ns``."""
        rows = self.store.incidents(endpoint=endpoint, rule=rule, limit=50)
        return next((r for r in rows if r["opened_ns"] <= t_ns), None)

    def _load(self, endpoint: str, rule: str, track: _Track, t_ns: int) -> None:
        """Adopt an incident still active at ``t_ns``: one this rule left open before a
        restart, or one found earlier when the same history is judged again."""
        track.loaded = True
        latest = self._latest(endpoint, rule, t_ns)
        if latest and (latest["cleared_ns"] is None or latest["cleared_ns"] >= t_ns):
            track.incident_id = latest["id"]
            track.severity = latest["severity"]
            track.peak = _peak_key(latest["value"], latest["threshold"])

    def _step(self, endpoint: str, r: Reading, t_ns: int, cfg: RuleConfig
              ) -> IncidentEvent | None:
        track = self._tracks.setdefault((endpoint, r.rule), _Track())
        if not track.loaded:
            self._load(endpoint, r.rule, track, t_ns)
        if r.tripped:
            track.trips += 1
            track.clear_since_ns = None
            if track.first_trip_ns is None:
                track.first_trip_ns = t_ns
            if track.incident_id is None:
                return self._open(endpoint, r, t_ns, cfg, track) \
                    if track.trips >= cfg.open_after else None
            return self._escalate(endpoint, r, t_ns, track)
        track.trips = 0
        track.first_trip_ns = None
        if track.incident_id is None:
            return None
        if not r.clear:
            track.clear_since_ns = None  # in the hysteresis band: stays open
            return None
        if track.clear_since_ns is None:
            track.clear_since_ns = t_ns
        if t_ns - track.clear_since_ns < cfg.close_after_s * NS:
            return None
        incident_id, track.incident_id = track.incident_id, None
        cleared = track.clear_since_ns
        track.clear_since_ns = None
        recorded = self.store.incident(incident_id)
        if recorded is None or recorded["cleared_ns"] is not None:
            # Already cleared: history judged again, or judged first after the live monitor
            # recorded it, whose evaluations fell at other instants (so its clearing time
            # differs by a step); a second "Cleared" note would only repeat the first.
            return None
        note = f"Cleared: {r.detail}."
        # Cleared by the rule; a person who resolved it first keeps their resolve.
        self.store.update_incident(incident_id, cleared_ns=cleared, updated_ns=t_ns,
                                   status=Status.RESOLVED, note=note, note_ts_ns=t_ns,
                                   resolved_ns=recorded["resolved_ns"])
        return IncidentEvent("cleared", incident_id, endpoint, r.rule, t_ns, note, cleared)

    def _open(self, endpoint: str, r: Reading, t_ns: int, cfg: RuleConfig,
              track: _Track) -> IncidentEvent | None:
        opened_ns = min(r.since_ns or t_ns, track.first_trip_ns or t_ns)
        summary = f"{_title(r.rule)}: {r.detail}"
        details = {"detail": r.detail, "unit": r.unit, "config": cfg.to_json()}
        recent = self._latest(endpoint, r.rule, t_ns)
        if recent is not None and (recent["cleared_ns"] is None or recent["cleared_ns"] >= t_ns):
            # Already recorded (history judged twice): continue it, say nothing new.
            track.incident_id, track.severity = recent["id"], recent["severity"]
            track.peak = _peak_key(recent["value"], recent["threshold"])
            return None
        if (recent is not None and recent["cleared_ns"] is not None
                and recent["cleared_ns"] >= opened_ns - int(cfg.reopen_within_s * NS)):
            # Flapping: the same trouble again soon after it cleared is the same incident.
            track.incident_id, track.severity = recent["id"], r.severity
            track.peak = _peak_key(recent["value"], recent["threshold"])
            if SEVERITY_RANK[recent["severity"]] > SEVERITY_RANK[r.severity]:
                track.severity = recent["severity"]
            peak = self._peak_changes(endpoint, r, track)
            note = f"Reopened: {r.detail}."
            self.store.update_incident(
                recent["id"], cleared_ns=None, status=Status.OPEN, updated_ns=t_ns,
                severity=track.severity, note=note, note_ts_ns=t_ns, **peak)
            return IncidentEvent("reopened", recent["id"], endpoint, r.rule, t_ns, note)
        note = f"Opened: {r.detail}."
        track.incident_id = self.store.insert_incident(
            endpoint, rule=r.rule, severity=r.severity, status=Status.OPEN, opened_ns=opened_ns,
            trigger_ns=t_ns, value=r.value, threshold=r.threshold, summary=summary,
            details=details, note=note)
        track.severity, track.peak = r.severity, _peak_key(r.value, r.threshold)
        log.info("incident %d opened on %s: %s", track.incident_id, endpoint, summary)
        return IncidentEvent("opened", track.incident_id, endpoint, r.rule, t_ns, note,
                             opened_ns)

    def _escalate(self, endpoint: str, r: Reading, t_ns: int, track: _Track
                  ) -> IncidentEvent | None:
        assert track.incident_id is not None
        worse = SEVERITY_RANK[r.severity] > SEVERITY_RANK[track.severity]
        peak = self._peak_changes(endpoint, r, track)
        if peak:
            self.store.update_incident(track.incident_id, updated_ns=t_ns, **peak)
        if not worse:
            return None
        track.severity = r.severity
        note = f"Escalated to {r.severity}: {r.detail}."
        self.store.update_incident(track.incident_id, severity=r.severity, updated_ns=t_ns,
                                   note=note, note_ts_ns=t_ns)
        return IncidentEvent("escalated", track.incident_id, endpoint, r.rule, t_ns, note)

    def _peak_changes(self, endpoint: str, r: Reading, track: _Track) -> dict[str, object]:
        """The columns a reading past the incident's peak replaces (none when it is not):
        its value with its own threshold, so the pair always belongs to one quantile."""
        key = _peak_key(r.value, r.threshold)
        if key <= track.peak:
            return {}
        track.peak = key
        return {"value": r.value, "threshold": r.threshold,
                "summary": f"{_title(r.rule)}: {r.detail}",
                "details": {"detail": r.detail, "unit": r.unit,
                            "config": self.config(endpoint).to_json()}}


# Each evaluation reads every endpoint's windows; past this many a run takes hours, not seconds.
MAX_EVALUATIONS = 100_000


def evaluate_range(store: Store, start_ns: int, end_ns: int, *, step_s: float = 5.0,
                   defaults: RuleConfig | None = None, endpoints: Iterable[str] | None = None,
                   progress: Callable[[float], None] = lambda _: None,
                   cancelled: Callable[[], bool] = lambda: False) -> list[IncidentEvent]:
    """Run the rules over stored history, one evaluation every ``step_s``; incidents found are
    written to the store (ones already there are continued, not duplicated)."""
    if not step_s > 0:
        raise IncidentError(f"the step must be above 0 seconds, not {step_s}")
    step = max(1, int(step_s * NS))
    evaluations = (end_ns - start_ns) // step + 1
    if evaluations > MAX_EVALUATIONS:
        shortest = math.ceil((end_ns - start_ns) / NS / (MAX_EVALUATIONS - 1))
        raise IncidentError(f"a step of {step_s:g} s over {(end_ns - start_ns) / NS:,.0f} s of "
                            f"history is {evaluations:,} evaluations; use a step of "
                            f"{shortest} s or more")
    engine = IncidentEngine(store, defaults)
    chosen = list(endpoints) if endpoints is not None else None
    events: list[IncidentEvent] = []
    total = max(1, end_ns - start_ns)
    t = start_ns
    while t <= end_ns and not cancelled():
        events += engine.evaluate(t, chosen)
        progress(min(1.0, (t - start_ns) / total))
        t += step
    progress(1.0)
    return events


class IncidentMonitor(BackgroundEvaluator):
    """Live incidents: subscribe the instance to a Recorder, ``start`` it, ``close`` it."""

    thread_name = "incidents"

    def __init__(self, db_path: str | Path, *, defaults: RuleConfig | None = None,
                 interval_s: float = 5.0,
                 states: Callable[[], Mapping[str, str]] | None = None) -> None:
        super().__init__(db_path, interval_s=interval_s)
        self.defaults = defaults or RuleConfig()
        self.states = states  # probe verdicts by endpoint (live only)
        self._last_seen: dict[str, int] = {}
        self._engine: IncidentEngine | None = None
        self.opened = 0

    def __call__(self, batch: Batch) -> None:
        """Recorder listener: note who reported and when; the judging happens elsewhere."""
        now = time.time_ns()
        seen = {s.endpoint for s in batch.samples if s.metric != Metric.DROPPED}
        seen.update(c.endpoint for c in batch.captures)
        if seen:
            self._queue.put((now, seen))

    # -- worker thread --------------------------------------------------------------------

    def _opened(self, store: Store) -> None:
        self._engine = IncidentEngine(store, self.defaults)

    def _take(self, item: tuple[int, set[str]]) -> None:
        now, seen = item
        for endpoint in seen:
            self._last_seen[endpoint] = now

    def _evaluate(self, store: Store) -> None:
        engine = self._engine
        assert engine is not None
        states: Mapping[str, str] = {}
        if self.states is not None:
            try:
                states = {k: str(v) for k, v in self.states().items()}
            except Exception:  # a probe going away mid-read: judge again next time
                log.debug("probe states unavailable", exc_info=True)
                return
        # With probe states known, only attached endpoints are judged: a detached one is
        # silent by choice, not down.
        endpoints = [e for e in self._last_seen if self.states is None or e in states]
        try:
            events = engine.evaluate(time.time_ns(), endpoints,
                                     last_seen_ns=self._last_seen, states=states)
        except (StoreError, IncidentError) as exc:
            if self.last_error != str(exc):
                log.warning("incident evaluation failed: %s", exc)
            self.last_error = str(exc)
            return
        self.last_error = None
        for event in events:
            self.opened += event.kind == "opened"
            self._notify(event)


def incident_window(incident: Mapping, *, last_ns: int | None = None,
                    pad_s: float = 30.0) -> tuple[int, int]:
    """The time span a report or a plot shows: the incident with some context either side,
    as a half-open ``[start, end)`` (what ``Store.history`` reads)."""
    start = int(incident["opened_ns"])
    end = int(incident["cleared_ns"] or last_ns or incident["updated_ns"] or start)
    span = max(int(pad_s * NS), (end - start) // 5)
    if incident["cleared_ns"] is None:
        # Still active: up to the newest data, no empty margin; one past it, so the newest
        # sample itself is drawn (a workspace of one sample had "no samples").
        return start - span, end + 1
    return start - span, end + span // 2
