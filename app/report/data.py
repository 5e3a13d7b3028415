"""Everything an incident report shows, read from the store into plain data. Qt-free; runs on
the caller's thread with the caller's Store.

Each figure keeps the query that produced it, so a reader can reproduce the plot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np

from app.core.domain import Capture, EndpointUri, Metric, UriError
from app.core.incident_rules import NS
from app.core.incidents import incident_window
from app.core.store import History, Store, StoredCapture
from app.core.summary import SCRAPE_MS
from app.report.impact import (
    BUCKETS,
    Impact,
    Slo,
    first_sample_in,
    impact,
    incident_end,
    observed_end,
)

log = logging.getLogger(__name__)

# The report's public face: what the writer, the plots and the tests import from here,
# the incident's cost (impact.py) included.
__all__ = ["BUCKETS", "HISTORY_SQL", "MAX_BEFORE_ROWS", "MAX_ERROR_GROUPS", "MAX_FAILURE_ROWS",
           "MAX_GROUPED", "NICE_WIDTHS_S", "OUTCOME_CHARS", "STATUS_MEANING", "ErrorGroup",
           "Figure", "HeatmapFigure", "Impact", "ReportData", "SeriesFigure", "Slo", "bucket_grid",
           "capture_versions", "clip", "contract_rows", "down_spans", "error_groups",
           "failed_in_window", "failure_rows", "figures", "first_sample_in", "gather",
           "hardware_info", "impact", "incident_end", "model_info", "observed_end", "probe_cover",
           "recording_span", "related_incidents", "replay_rows", "report_window", "resolve_time",
           "serving_info", "sha256_of", "slo_of", "spans_days", "summarize_inputs"]

MAX_FAILURE_ROWS = 40
MAX_BEFORE_ROWS = 10  # of those, at most this many from before the rule tripped
MAX_ERROR_GROUPS = 8  # distinct errors in the top-errors summary; the rest are counted
MAX_GROUPED = 200_000  # failures read (without tensors) to group them; past it, a sample
OUTCOME_CHARS = 48  # an error text longer than this is cut in the table (the summary has it)

HISTORY_SQL = ("Store.history(endpoint, metric, start_ns, end_ns, buckets) runs "
               "SELECT (ts_ns - :start) / :width AS bucket, min(value), max(value), avg(value),"
               " count(*) FROM samples WHERE endpoint_id = :endpoint AND metric_id = :metric"
               " AND ts_ns >= :start AND ts_ns < :end GROUP BY bucket"
               " with width = ceil((end_ns - start_ns) / buckets)")


@dataclass(frozen=True, slots=True)
class Figure:
    title: str
    query: str  # how to get the same numbers back from the workspace


@dataclass(frozen=True, slots=True)
class SeriesFigure(Figure):
    ts_ns: np.ndarray
    lines: dict[str, np.ndarray]  # legend -> values (NaN = gap)
    band: tuple[np.ndarray, np.ndarray] | None  # min/max envelope of the first line
    y_label: str
    hlines: dict[str, float] = field(default_factory=dict)  # legend -> value (e.g. the SLO)
    zero_based: bool = True  # the y axis starts at 0 (rates, latency); not for memory
    down: tuple[tuple[int, int], ...] = ()  # (from, to) ns where the probe said "down"


@dataclass(frozen=True, slots=True)
class HeatmapFigure(Figure):
    ts_ns: np.ndarray
    features: tuple[str, ...]
    severity: np.ndarray  # (T, F); 1.0 = at the drift threshold


@dataclass(frozen=True, slots=True)
class ErrorGroup:
    """Failures with the same status and error text: one line of the top-errors summary."""

    label: str  # "E1", "E2", ...: how the failures table refers to it
    status: str
    text: str  # the error text, or what the status means when the capture has none
    count: int
    first_ns: int
    last_ns: int


@dataclass(slots=True)
class ReportData:
    incident: dict
    endpoint: dict
    start_ns: int
    end_ns: int
    model: dict[str, str]  # path, version, sha256
    hardware: dict[str, str]
    figures: list[Figure]
    status_counts: dict[str, int]
    failures: list[list[str]]  # rows of the failures table
    failures_total: int  # failed captures in the plotted window (start_ns to end_ns)
    notes: list[dict]
    replays: list[list[str]]
    contract: list[list[str]]
    related: list[dict]  # other incidents of the endpoint that overlap the window
    probescope_version: str
    slo: Slo = field(default_factory=lambda: Slo(None, None))
    resolved_ns: int | None = None  # when a person resolved it; None if not (or the rule did)
    served_by: str = "not recorded in the workspace"
    remote: bool = False  # served by a server (or a logged service), not by a ProbeScope probe
    impact: Impact | None = None
    errors: list[ErrorGroup] = field(default_factory=list)  # most frequent first
    errors_left_out: int = 0  # failures in groups past MAX_ERROR_GROUPS
    listed_before: int = 0  # rows of ``failures`` from before the rule tripped
    # The window was cut short of the context asked for at (start, end): the recording began
    # after, or ended before, it (``report_window``).
    clipped: tuple[bool, bool] = (False, False)
    workspace: str = ""  # the workspace's file name (set by the writer, which knows it)
    acknowledged: dict | None = None  # the note written with the acknowledge, if any
    resolve_note: dict | None = None  # the note written with the resolve, if any


def _positive(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def slo_of(incident: dict, endpoint: dict) -> Slo:
    """The incident's rules are kept with it (details.config, a snapshot taken when it opened
    or last peaked), so an override set later does not rewrite an older incident's SLO."""
    config = (incident.get("details") or {}).get("config") or {}
    own = _positive(endpoint.get("slo_ms"))
    rule = _positive(config.get("slo_ms")) if isinstance(config, dict) else None
    return Slo(rule if rule is not None else own, own)


def resolve_time(incident: dict, notes: Sequence[dict]) -> int | None:
    """When a person resolved an incident the rule had not cleared; None otherwise, or when no
    record of the resolve is found.

    A recorded ``resolved_ns`` column wins. Without one, the workspace's only record of the
    status change is the note written with it in the same transaction, "Resolved." or
    "Resolved: why" (``probescope incidents resolve``, the incidents panel). A resolved incident
    cannot be resolved again until the rule reopens it, so the resolve is the first such note
    since the last (re)opening; anything later that begins with "Resolved" is a person's text
    about it, not the status change."""
    if incident.get("status") != "resolved" or incident.get("cleared_ns") is not None:
        return None
    recorded = incident.get("resolved_ns")
    if recorded:
        return int(recorded)
    since = max((int(n["ts_ns"]) for n in notes if n.get("author") == "probescope"
                 and str(n["text"]).startswith("Reopened")), default=int(incident["opened_ns"]))
    return next((int(n["ts_ns"]) for n in notes
                 if int(n["ts_ns"]) >= since and n.get("author") != "probescope"
                 and (n["text"] == "Resolved." or str(n["text"]).startswith("Resolved: "))),
                None)


def sha256_of(path: Path) -> str | None:
    try:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError:
        return None


def model_info(endpoint: dict, registered_paths: Sequence[str] = ()) -> dict[str, str]:
    """The endpoint's model: version, and for a local ONNX file its path and sha256. A path
    given relative to where the probe ran is found again through ``registered_paths`` (the
    registry keeps absolute ones), so the report is the same from any folder."""
    info = {"version": endpoint.get("model_version") or "unknown"}
    try:
        uri = EndpointUri.parse(endpoint["uri"])
    except UriError:
        return info
    if uri.scheme == "onnx":
        path = Path(unquote(uri.target))
        if not path.is_absolute() and not path.is_file():
            tail = "/" + path.as_posix().lstrip("./")
            path = next((Path(p) for p in registered_paths
                         if Path(p).as_posix().endswith(tail) and Path(p).is_file()), path)
        info["path"] = str(path)
        info["sha256"] = sha256_of(path) or "file not readable here"
    return info


def capture_versions(store: Store, uri: str, start: int, end: int) -> str | None:
    """The model version(s) the endpoint's captures in ``[start, end]`` carry, with counts
    when there are several, for an endpoint that records none itself (an imported log keeps
    its version on each request, not on the endpoint). None when they carry none."""
    counts = {v: n for v, n in store.capture_value_counts(
        "model_version", endpoint=uri, start_ns=start, end_ns=end).items() if v}
    if not counts:
        return None
    if len(counts) == 1:
        return f"{next(iter(counts))} (from the endpoint's captures in the incident)"
    listed = ", ".join(f"{v} ({n:,} captures)" for v, n in counts.items())
    return f"{listed} (from the endpoint's captures in the incident)"


def serving_info(uri_text: str) -> tuple[str, bool]:
    """Where the endpoint's model ran, as far as its URI tells, and whether it was served
    outside ProbeScope (a server, a logged service). The workspace keeps no hardware of the
    machine that served or probed it."""
    try:
        uri = EndpointUri.parse(uri_text)
    except UriError:
        return "not recorded in the workspace", False
    unknown = "its hardware is not recorded in the workspace"
    if uri.scheme == "onnx":
        return ("in process, with onnxruntime, on the machine that probed it; " + unknown,
                False)
    if uri.scheme == "system":
        return "no model: this endpoint measures the machine its probe ran on", False
    if uri.scheme == "log":
        return f"the service whose log was imported; {unknown}", True
    if uri.scheme.endswith(("+http", "+https")):
        host = urlsplit(uri.target).netloc or uri.target
        # The address as the probing machine saw it: 127.0.0.1 there need not be this machine.
        return f"a server at {host} (as the probing machine reached it); {unknown}", True
    return f"not recorded in the workspace ({uri.scheme} endpoint)", False


def hardware_info() -> dict[str, str]:
    """The machine writing the report, read now: not what served or probed the model."""
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpu": _cpu_name(), "cores": str(os.cpu_count() or "?")}
    try:
        import onnxruntime

        info["onnxruntime"] = (f"{onnxruntime.__version__} (providers on this machine: "
                               f"{', '.join(onnxruntime.get_available_providers())})")
    except ImportError:
        info["onnxruntime"] = "not installed on this machine"
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _query(metric: str, start: int, end: int, buckets: int) -> str:
    return (f"Store.history(ENDPOINT, '{metric}', start_ns={start}, end_ns={end}, "
            f"buckets={buckets})")


def probe_cover(h: History, width_ns: int, n: int, start: int, end: int,
                span: tuple[int, int] | None) -> tuple[np.ndarray, float]:
    """How many ns of each bucket the endpoint was being probed (``h``: its requests on the
    grid; ``span``: its first and last request ever), and the spacing of its requests in the
    window. The last request stands for one spacing after it: a probe at 10/s whose last
    request is 0.9 s into a bucket ran all of that second."""
    lo = start + np.arange(n, dtype=np.int64) * width_ns
    if span is None:
        return np.full(n, float(width_ns)), float(width_ns)
    total = int(h.count.sum()) if len(h) else 0
    seen_ns = min(end, span[1]) - max(start, span[0])
    spacing = min(float(width_ns), seen_ns / (total - 1)) if total > 1 and seen_ns > 0 \
        else float(width_ns)
    hi = np.minimum(lo + width_ns, span[1] + spacing)
    return np.clip(hi - np.maximum(lo, span[0]), 0.0, float(width_ns)), spacing


def _per_s(requests: History, failures: History, width_ns: int, n: int, start: int,
           cover: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Requests and failures per second in each bucket, over the time the probe ran in it
    (``probe_cover``): a bucket it ran through reads count / its width; one it ran only part
    of (the first and last of a recording, or a window far longer than it), count / that
    part, so a steady 50/s reads 50/s at the edges too. Zero where the probe ran and nothing
    came; NaN (no line) where it did not run, or ran for less than one request's spacing and
    got none, where 0 would read as an outage."""
    rates = []
    for h in (requests, failures):
        out = np.zeros(n)
        if len(h):
            out[((h.ts_ns - start) // width_ns).astype(np.int64).clip(0, n - 1)] = h.count
        # At least one spacing: a bucket whose first request came just before its end would
        # otherwise read one request over a sliver of time as a spike.
        rates.append(out / (np.maximum(cover, spacing) / 1e9))
    blank = (cover <= 0) | ((cover < spacing) & (rates[0] == 0))
    for out in rates:
        out[blank] = np.nan
    return rates[0], rates[1]


def _on_grid(h: History, values: np.ndarray, width_ns: int, n: int, start: int) -> np.ndarray:
    out = np.full(n, np.nan)
    if len(h):
        out[((h.ts_ns - start) // width_ns).astype(np.int64).clip(0, n - 1)] = values
    return out


def _request_span(store: Store, uri: str) -> tuple[int, int] | None:
    """First and last request (latency or failure sample) of the endpoint, in any window."""
    spans = [s for s in (store.time_range(uri, Metric.LATENCY_MS),
                         store.time_range(uri, Metric.FAILURE)) if s]
    return (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else None


def recording_span(store: Store, uri: str) -> tuple[int, int] | None:
    """First and last sample of what a report reads of an endpoint: its requests, memory,
    probe state (``up``), scrapes and captures; None when it has none. Read from the indexes,
    not the rows."""
    spans = [s for s in (store.time_range(uri, m) for m in (
        Metric.LATENCY_MS, Metric.FAILURE, Metric.RSS_MB, Metric.UP, SCRAPE_MS)) if s]
    if hasattr(store, "capture_span"):
        spans += [s for s in [store.capture_span(uri)] if s]
    return (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else None


def report_window(store: Store, incident: dict, *, last_ns: int | None, context_s: float
                  ) -> tuple[int, int, tuple[bool, bool]]:
    """The plotted window: the incident with ``context_s`` before it (``incident_window``),
    cut to the recording with a little padding (a fiftieth of what it keeps, at least 1 s,
    on whole seconds so buckets of a second stay even). A context of days around 90 s of
    data drew empty plots with the data in a sliver at one edge. The incident itself always
    stays in. Returns start, end, and whether each end was cut."""
    start, end = incident_window(incident, last_ns=last_ns, pad_s=context_s)
    recorded = recording_span(store, incident["endpoint"])
    if recorded is None:
        return start, end, (False, False)
    opened = int(incident["opened_ns"])
    closed = int(incident["cleared_ns"] or opened)
    first, last = recorded
    pad = max(NS, (min(end, last) - max(start, first)) // 50)
    lo = min(first - pad, opened)
    cut_start = lo - lo % NS > start
    start = max(start, lo - lo % NS)
    # Whole seconds from the start: then buckets of a second each hold as many requests of a
    # steady probe (buckets of 1.01 s held 10 or 11 of 10/s, and the line became a comb).
    hi = start + -(-(max(last + pad, closed + 1) - start) // NS) * NS
    if cut_start:  # an open incident's end (one past its newest sample) too
        end = start + -(-(end - start) // NS) * NS
    return start, min(end, hi), (cut_start, hi < end)


def down_spans(store: Store, uri: str, start: int, end: int) -> tuple[tuple[int, int], ...]:
    """Where in ``start..end`` the endpoint's probe said it was down: from its first ``up`` 0
    sample (or ``start``, when it was already down) to its next ``up`` 1, or to its last
    ``up`` 0 when the recording ends down. A remote probe writes ``up`` 0 at each failed
    attempt to reach its server; a local model writes no ``up``, and has no spans."""
    ts, up = store.values(uri, Metric.UP, start, end)
    opened: int | None = start if store.down_since_ns(uri, start) is not None else None
    spans: list[tuple[int, int]] = []
    last_down = opened
    for t, v in zip(ts.tolist(), up.tolist(), strict=True):
        if v == 0:
            opened = t if opened is None else opened
            last_down = t
        elif opened is not None:
            spans.append((opened, t))
            opened = None
    if opened is not None and last_down is not None and last_down > opened:
        spans.append((opened, last_down))
    return tuple(spans)


# Bucket widths a report's figures use, in seconds: each a whole multiple of the spacing of
# the usual steady sources (10/s, 1/s, one every 5 s or 15 s), so every bucket holds as many
# of their samples and a steady rate draws flat; a width of 54 s over a sample every 5 s held
# 10 or 11 of them, and the line became a comb.
NICE_WIDTHS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
                 43200, 86400)


def bucket_grid(start: int, end: int) -> tuple[int, int, int]:
    """The figures' buckets over ``[start, end)``: how many, their width (a NICE_WIDTHS_S
    entry, at least a second: finer ones turn a steady rate into comb teeth, and at most
    BUCKETS of them), and the end they reach (``end`` rounded up to a whole bucket, so
    ``Store.history`` bins with exactly that width)."""
    need_s = (end - start) / BUCKETS / NS
    width_s = next((w for w in NICE_WIDTHS_S if w >= need_s),
                   86400 * math.ceil(need_s / 86400))
    width = width_s * NS
    n = max(1, -(-(end - start) // width))
    return n, width, start + n * width


def figures(store: Store, endpoint: dict, start: int, end: int,
            slo: Slo | None = None) -> list[Figure]:
    """``slo``: the one the incident was judged against; by default the endpoint's own."""
    uri = endpoint["uri"]
    slo = slo or Slo(_positive(endpoint.get("slo_ms")), _positive(endpoint.get("slo_ms")))
    n, width, end = bucket_grid(start, end)
    grid = start + np.arange(n, dtype=np.int64) * width
    out: list[Figure] = []
    lat = store.history(uri, Metric.LATENCY_MS, start, end, n)
    fails = store.history(uri, Metric.FAILURE, start, end, n)
    if len(lat):
        # The line the latency was judged against; named for the rule when it is not the
        # endpoint's own, so the two cannot be mistaken for each other.
        hl = {} if slo.judged_ms is None else {
            ("rule's SLO" if slo.overridden else "SLO"): slo.judged_ms}
        span = _request_span(store, uri)
        down = down_spans(store, uri, start, end)
        out.append(SeriesFigure(
            "Latency per request (mean, with min-max band)",
            _query(Metric.LATENCY_MS, start, end, n), grid,
            {"mean latency": _on_grid(lat, lat.mean, width, n, start)},
            (_on_grid(lat, lat.vmin, width, n, start), _on_grid(lat, lat.vmax, width, n, start)),
            "ms", hl, down=down))
        cover, spacing = probe_cover(lat, width, n, start, end, span)
        per_s, failed_per_s = _per_s(lat, fails, width, n, start, cover, spacing)
        out.append(SeriesFigure(
            "Throughput and failures",
            _query(Metric.LATENCY_MS, start, end, n) + " and "
            + _query(Metric.FAILURE, start, end, n) + "; count per bucket / the seconds of "
            "it the probe ran (its first request to one spacing past its last)",
            grid,
            {"requests/s": per_s, "failures/s": failed_per_s}, None, "per second",
            down=down))
    elif store.time_range(uri, Metric.UP) is not None:
        up = store.history(uri, Metric.UP, start, end, n)
        if len(up):
            # No requests to plot (the probe never got through): its tries are the data.
            out.append(SeriesFigure(
                "Probe state (1 = the endpoint answered, 0 = no answer)",
                _query(Metric.UP, start, end, n), grid,
                {"answered": _on_grid(up, up.vmin, width, n, start)}, None, "up",
                zero_based=False, down=down_spans(store, uri, start, end)))
    rss = store.history(uri, Metric.RSS_MB, start, end, n)
    if len(rss):
        out.append(SeriesFigure(
            "Memory (resident set size)",
            _query(Metric.RSS_MB, start, end, n), grid,
            {"RSS": _on_grid(rss, rss.mean, width, n, start)},
            (_on_grid(rss, rss.vmin, width, n, start), _on_grid(rss, rss.vmax, width, n, start)),
            "MB", zero_based=False))
    heat = _drift(store, uri, start, end)
    if heat is not None:
        out.append(heat)
    return out


def _drift(store: Store, uri: str, start: int, end: int) -> HeatmapFigure | None:
    try:
        from app.core.drift_history import drift_matrix

        m = drift_matrix(store, uri, start, end)
    except Exception as exc:  # drift is another feature's tables: absent or odd, no heat map
        log.info("no drift heat map in the report: %s", exc)
        return None
    if len(m) == 0 or not m.features:
        return None
    return HeatmapFigure(
        "Drift by feature (severity: 1 = at the drift threshold)",
        f"app.core.drift_history.drift_matrix(store, ENDPOINT, start_ns={start}, "
        f"end_ns={end}) over SELECT evaluation_id, ts_ns, feature, method, score, threshold, "
        "drifted FROM drift_points WHERE endpoint_id = :endpoint AND source = 'fast' AND "
        "ts_ns BETWEEN :start AND :end", m.ts_ns, m.features, m.severity)


def summarize_inputs(capture: Capture) -> str:
    """Each input tensor in one line: dtype and shape, NaN count, range, first values."""
    parts = []
    for blob in capture.inputs:
        try:
            a = blob.to_array()
        except (ValueError, TypeError):
            parts.append(f"{blob.name}: {blob.dtype}{list(blob.shape)} (unreadable)")
            continue
        shape = "x".join(str(d) for d in a.shape)
        text = f"{blob.name} {a.dtype} {shape}"
        if a.dtype.kind in "fiub" and a.size:
            f = a.astype(np.float64).reshape(-1)
            finite = f[np.isfinite(f)]
            if len(finite) < len(f):
                text += f"; {len(f) - len(finite)} NaN/inf"
            if len(finite):
                text += f"; min {finite.min():.3g}, max {finite.max():.3g}"
            text += "; [" + ", ".join(f"{v:.3g}" for v in f[:5]) + (", …]" if f.size > 5
                                                                      else "]")
        parts.append(text)
    return "; ".join(parts) or "(no inputs kept)"


def spans_days(start_ns: int, end_ns: int) -> bool:
    """Whether a window crosses a UTC midnight: then a time of day alone is ambiguous."""
    first, last = (datetime.fromtimestamp(ns / 1e9, UTC).date() for ns in (start_ns, end_ns))
    return first != last


# What a failure without an error text means, for the top-errors summary.
STATUS_MEANING = {
    "mismatch": "prediction disagrees with the label",
    "low_confidence": "confidence below the minimum",
    "non_finite": "NaN or inf in the output",
    "slow": "latency above the SLO",
    "timeout": "no answer in time",
    "error": "the runtime or the server raised",
}


# Numbers that vary from one request to the next (a Content-Length, a request id, a port)
# would make each failure its own error; an HTTP status code is what tells errors apart.
_VARYING = re.compile(r"(?<!HTTP )(?<!\d)(\d+)")


def _group_key(c: Capture) -> tuple[str, str]:
    text = c.error or STATUS_MEANING.get(str(c.status), str(c.status))
    return str(c.status), _VARYING.sub("#", text)


def failed_in_window(store: Store, uri: str, start: int, end: int) -> list[StoredCapture]:
    """The window's failed captures without their tensors, oldest first: read once, then
    grouped (``error_groups``) and searched for the lead-up (``failure_rows``)."""
    return store.captures_between(uri, start, end, failed=True, limit=MAX_GROUPED,
                                  with_tensors=False)


def error_groups(failed: Sequence[StoredCapture]) -> tuple[list[ErrorGroup], int]:
    """``failed`` grouped by status and error text, most frequent first (a dead server's
    one message, 800 times, is one line with its count); and how many failures fall in the
    groups past MAX_ERROR_GROUPS. Texts that differ only in a number are one error, shown
    with "#" where the number varied."""
    groups: dict[tuple[str, str], list] = {}  # key -> [count, first, last, parts of the text]
    for sc in failed:
        c = sc.capture
        key = _group_key(c)
        parts = _VARYING.split(c.error or key[1])  # odd places: the numbers
        g = groups.setdefault(key, [0, c.ts_ns, 0, parts])
        g[0] += 1
        g[2] = c.ts_ns
        g[3] = [p if p == q else "#" for p, q in zip(g[3], parts, strict=True)]
    ranked = sorted(groups.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
    kept = [ErrorGroup(f"E{i}", status, "".join(parts), n, first, last)
            for i, ((status, _), (n, first, last, parts)) in enumerate(
                ranked[:MAX_ERROR_GROUPS], start=1)]
    return kept, sum(g[0] for _, g in ranked[MAX_ERROR_GROUPS:])


def clip(text: str, limit: int = 1200) -> str:
    """An error text for the summary: in full unless a server dumped pages into it."""
    return text if len(text) <= limit else text[:limit - 1] + f"… ({len(text):,} characters)"


def _short(text: str, limit: int = OUTCOME_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _lead_up(store: Store, failed: Sequence[StoredCapture], opened: int
             ) -> list[StoredCapture]:
    """The failures in the padding before the incident opened that show how it began: the
    last MAX_BEFORE_ROWS before the rule tripped (a hung server's first timeouts), and the
    first of each status there (the one refused connection of an outage), oldest first."""
    seen = [sc for sc in failed if sc.capture.ts_ns < opened]
    firsts: dict[str, int] = {}
    for sc in seen:
        firsts.setdefault(str(sc.capture.status), sc.id)
    ids = {sc.id for sc in seen[-MAX_BEFORE_ROWS:]} | set(firsts.values())
    chosen = [store.capture(sc.id) for sc in seen if sc.id in ids]  # now with their tensors
    return [sc for sc in chosen if sc is not None]


def failure_rows(store: Store, uri: str, failed: Sequence[StoredCapture], opened: int,
                 end: int, *, dated: bool = False, groups: Sequence[ErrorGroup] = ()
                 ) -> tuple[list[list[str]], int]:
    """The failures table: of the window's ``failed`` (``failed_in_window``), those that led
    up to the rule tripping (see ``_lead_up``; they are marked so), then the first ones from
    ``opened`` on, with their tensors; and how many rows are from before. An error text that
    one of ``groups`` holds is named by its label and cut short: the summary has it in full.

    ``dated``: times carry their UTC date (a window over more than one day), else a row
    from the day before reads as a time before the incident opened."""
    fmt = "%Y-%m-%d %H:%M:%S.%f" if dated else "%H:%M:%S.%f"
    before = _lead_up(store, failed, opened)
    after = store.captures_between(uri, opened, end, failed=True,
                                   limit=MAX_FAILURE_ROWS - len(before))
    labels = {(g.status, _VARYING.sub("#", g.text)): g.label for g in groups}
    rows = []
    for sc in [*before, *after]:
        c = sc.capture
        when = datetime.fromtimestamp(c.ts_ns / 1e9, UTC).strftime(fmt)[:-3]
        if c.ts_ns < opened:
            when += " (before opening)"
        label = labels.get(_group_key(c))
        if c.error:
            outcome = f"{label}: {_short(c.error)}" if label else _short(c.error, 400)
        else:
            outcome = f"predicted {c.prediction}" if c.prediction is not None \
                else "no prediction"
        if c.label is not None:
            outcome += f", label {c.label}"
        if c.confidence is not None:
            outcome += f", conf {c.confidence:.2f}"
        rows.append([str(sc.id), when, str(c.status), f"{c.latency_ms:.2f}", outcome,
                     summarize_inputs(c)])
    return rows, len(before)


def replay_rows(store: Store, uri: str, start: int, end: int) -> list[list[str]]:
    """One row per version of each saved replay that replayed failures of this endpoint from
    the window: of those failures, how many it fixes, how many still fail, how many it could
    not be asked about; and of the replay's passing controls, how many it newly breaks (the
    same verdicts as ``probescope replay``). Empty when replay is absent."""
    if not hasattr(store, "replays"):
        return []
    out: list[list[str]] = []
    try:
        ids = {sc.id for sc in store.captures_between(uri, start, end, limit=1_000_000,
                                                      with_tensors=False)}
        for meta in store.replays():
            loaded = store.replay_rows(meta["id"])
            if loaded is None:
                continue
            _, cases, results = loaded
            # Cases: (idx, capture_id, control, first_failing).
            mine = {int(c[0]) for c in cases
                    if not c[2] and c[1] is not None and int(c[1]) in ids}
            if not mine:
                continue
            controls = {int(c[0]) for c in cases if c[2]}
            names = [v.get("name", "?") if isinstance(v, dict) else str(v)
                     for v in _json_list(meta.get("versions"))]
            # failing is NULL where the version could not be asked (its server down).
            by_version: dict[int, dict[int, int | None]] = {}
            for r in results:
                by_version.setdefault(int(r[1]), {})[int(r[0])] = (
                    None if r[6] is None else int(bool(r[6])))
            title = f"#{meta['id']} {meta.get('title') or ''}".strip()
            for vi, failing in sorted(by_version.items()):
                name = names[vi] if vi < len(names) else f"version {vi}"
                still = sum(1 for i in mine if failing.get(i) == 1)
                unasked = sum(1 for i in mine if failing.get(i) is None)
                broken = sum(1 for i in controls if failing.get(i) == 1)
                out.append([title, name, str(len(mine)), str(len(mine) - still - unasked),
                            str(still), str(unasked), f"{broken} of {len(controls)}"])
    except Exception as exc:  # another feature's tables: a report must not fail on them
        log.warning("replay results left out of the report: %s", exc)
        return []
    return out


def _json_list(text: object) -> list:
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def contract_rows(model_path: str | None) -> list[list[str]]:
    """The handover contract beside the model, when there is one: its path, a header row, then
    one row per clause. Clauses the file answers (parameters, framework, version) are checked
    here; measured ones (accuracy, latency, memory) are listed with their limits, since
    measuring them is ``probescope contract``'s job."""
    if not model_path:
        return []
    try:
        from app.core import contract as contracts  # another feature; optional here
        from app.core.versions import inspect_onnx

        found = contracts.contract_path_for(model_path)
        if found is None:
            return []
        contract = contracts.load_contract(found)
        clauses = contracts.static_clauses(inspect_onnx(model_path), contract)
    except Exception as exc:  # absent or unreadable: the report goes on without it
        log.info("contract status left out of the report: %s", exc)
        return []
    rows = [["Clause", "Status", "Measured", "Limit"]]
    rows += [[c.name, c.status, _plain(c.measured), _plain(c.limit)] for c in clauses]
    measured_later = [("min_accuracy", contract.min_accuracy),
                      ("max_peak_memory_mb", contract.max_peak_memory_mb),
                      *[(f"max_latency_p95_ms ({t})", v)
                        for t, v in contract.max_latency_p95_ms.items()]]
    rows += [[name, "not measured here", "run probescope contract", _plain(limit)]
             for name, limit in measured_later if limit is not None]
    return [[str(found)], *rows]


def _plain(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def gather(store: Store, incident: dict, version: str, *, context_s: float = 30.0
           ) -> ReportData:
    """``context_s``: this much is plotted before the incident opened, unless the recording
    began later (``report_window``)."""
    uri = incident["endpoint"]
    endpoint = next((e for e in store.endpoints() if e["uri"] == uri), {"uri": uri})
    last = store.last_sample_ns(uri)
    start, end, clipped = report_window(store, incident, last_ns=last, context_s=context_s)
    model = model_info(endpoint, [v["location"] for v in store.versions()]
                       if hasattr(store, "versions") else ())
    eid_failed = store.capture_status_counts(uri, start, end)
    failures_total = sum(n for s, n in eid_failed.items() if s != "ok")
    slo = slo_of(incident, endpoint)
    notes = store.incident_notes(incident["id"])
    served_by, remote = serving_info(uri)
    resolved_ns = resolve_time(incident, notes)
    failed = failed_in_window(store, uri, start, end)
    groups, left_out = error_groups(failed)
    rows, before = failure_rows(store, uri, failed, int(incident["opened_ns"]), end,
                                dated=spans_days(start, end), groups=groups)
    cost = impact(store, incident, start, observed_end(store, uri), resolved_ns, slo)
    if model["version"] == "unknown":
        model["version"] = capture_versions(store, uri, cost.start_ns, cost.end_ns) \
            or capture_versions(store, uri, start, end) or "unknown"
    return ReportData(
        incident=incident, endpoint=endpoint, start_ns=start, end_ns=end, model=model,
        hardware=hardware_info(), figures=figures(store, endpoint, start, end, slo),
        status_counts=eid_failed,
        failures=rows, failures_total=failures_total, notes=notes,
        replays=replay_rows(store, uri, start, end), contract=contract_rows(model.get("path")),
        related=related_incidents(store, incident, (start, end), (cost.start_ns, cost.end_ns)),
        probescope_version=version, slo=slo, resolved_ns=resolved_ns,
        served_by=served_by, remote=remote, impact=cost,
        errors=groups, errors_left_out=left_out, listed_before=before, clipped=clipped,
        acknowledged=_status_note(notes, "Acknowledged"),
        resolve_note=next((n for n in notes if n["ts_ns"] == resolved_ns
                           and n.get("author") != "probescope"), None) if resolved_ns else None)


def related_incidents(store: Store, incident: dict, window: tuple[int, int],
                      span: tuple[int, int]) -> list[dict]:
    """Other incidents of the endpoint that overlap the plotted ``window``, and incidents of
    other endpoints that overlap the incident's own ``span`` (what else was affected at the
    time): the endpoint's own first, each oldest first. An open one is still running."""
    out = []
    for r in store.incidents(limit=500):
        if r["id"] == incident["id"]:
            continue
        lo, hi = window if r["endpoint"] == incident["endpoint"] else span
        until = r["cleared_ns"] or r.get("resolved_ns") or hi
        if r["opened_ns"] <= hi and until >= lo:
            out.append(r)
    return sorted(out, key=lambda r: (r["endpoint"] != incident["endpoint"], r["opened_ns"]))


def _status_note(notes: Sequence[dict], word: str) -> dict | None:
    """The first note a person's status change wrote ("Acknowledged." or "Acknowledged:
    why"): its time and author are when and by whom."""
    return next((n for n in notes if n.get("author") != "probescope"
                 and (n["text"] == f"{word}." or str(n["text"]).startswith(f"{word}: "))),
                None)
