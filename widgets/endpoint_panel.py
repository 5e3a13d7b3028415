"""One endpoint's row of plots (latency, throughput & errors, memory) and its header. Thread: GUI.

Live windows draw from the endpoint's rings; long windows draw the downsampled history its
owner fetched off the GUI thread. Which plots a panel has follows what the endpoint emits.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout

from widgets.incident_marks import IncidentSpan
from widgets.plots import PLOT_MIN_HEIGHT_PX, LatencyPlotWidget, SeriesPlotWidget
from widgets.series import (
    FAILURE,
    FAILURES_PER_S,
    LATENCY,
    REQUESTS_PER_S,
    SCRAPE_MS,
    UP,
    EndpointSeries,
    gapped,
)
from widgets.theme import Theme

SKIPPED = {"probescope.dropped"}
NS = 1e9
RATE_BIN_S = 1.0  # history's rates are counted over at least this long
# View > Shorter/Taller panels steps through these; the shortest fit about five endpoints
# at 1280x800 with the drift dock closed; the default one's plots have room for legends.
PANEL_HEIGHTS_PX = (120, 160, 230, 320, 440)
DEFAULT_PANEL_HEIGHT_PX = 230
COMPACT_BELOW_PX = 200  # shorter panels drop their legends and shrink their plot titles
PANEL_CHROME_PX = 40  # the header, margins and spacing above and below a panel's plots
NO_MAXIMUM_PX = 16_777_215  # Qt's QWIDGETSIZE_MAX, which PySide6 does not export


def rate_bins(t0: float, last: float, bucket_s: float) -> tuple[float, int]:
    """The grid history's rates are counted on: (bin width, bins) from ``t0``, the first
    bucket's start, to the bin holding ``last``, the last one's.
    A rate needs bins long enough to hold several events: the store's buckets can be far
    shorter than the gap between two requests (20 ms over 20 s at 50 req/s), and counting
    per bucket then reads 0, 50 or 100 req/s by turns."""
    width = max(bucket_s, RATE_BIN_S)
    return width, int((last - t0) // width) + 1


def binned_rate(t: np.ndarray, counts: np.ndarray, t0: float, end: float, width: float,
                bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Events per second in each bin of the grid (zeros included: a bin with no event is a
    rate of 0), plotted at its middle; the last bin counts over the part of it recorded."""
    k = np.clip(((t - t0) // width).astype(np.int64), 0, bins - 1)
    sums = np.bincount(k, weights=np.asarray(counts, dtype=np.float64), minlength=bins)
    starts = t0 + np.arange(bins) * width
    spans = np.maximum(np.minimum(width, end - starts), 1e-9)
    return starts + spans / 2, sums / spans


def short_name(endpoint: str) -> str:
    """``onnx:assets/demo/wine-v1.onnx?provider=cpu&...`` -> ``onnx: wine-v1.onnx``."""
    scheme, _, rest = endpoint.partition(":")
    target = rest.partition("?")[0]
    if target.startswith("//"):  # a URL: host and path are the useful part
        target = target[2:]
    elif "/" in target:  # a file: its name
        target = target.rstrip("/").rsplit("/", 1)[-1]
    return f"{scheme}: {target}" if target else f"{scheme}:"


def short_names(endpoints: list[str]) -> dict[str, str]:
    """``short_name`` of each, and where two come out the same (one model probed twice), the
    URI parameters that tell them apart: ``onnx: wine-v1.onnx (rate=50)``."""
    groups: dict[str, list[str]] = {}
    for e in endpoints:
        groups.setdefault(short_name(e), []).append(e)
    out = {}
    for name, members in groups.items():
        if len(members) == 1:
            out[members[0]] = name
            continue
        params = {e: e.partition("?")[2].split("&") if "?" in e else [] for e in members}
        shared = set.intersection(*(set(p) for p in params.values()))
        for e in members:
            differ = [p for p in params[e] if p and p not in shared]
            out[e] = f"{name} ({'&'.join(differ) or 'no parameters'})"
    return out


def _is_memory(metric: str) -> bool:
    return metric.endswith("_mb") and "total" not in metric and not _is_host(metric)


# A scraped server's own rates, drawn on the throughput plot, by legend text. Others
# (inferences/s, tokens/s) go with the page's other series: a third name overflows the
# legend of a plot a fifth of the row wide.
SERVER_RATES = {REQUESTS_PER_S: "requests", FAILURES_PER_S: "failed"}
# Fed to the request curves (latency_ms, failure) or shown otherwise (up: the state dot).
NOT_ROUTED = {LATENCY, FAILURE, UP, SCRAPE_MS}


def _is_server_latency(metric: str) -> bool:
    """A duration a server reports of itself (latency_p95_ms, queue_mean_ms, ttft_p50_ms...);
    scrape_ms is our own GET of its page, not its requests' latency."""
    return metric.endswith("_ms") and metric not in NOT_ROUTED


def is_scraped(endpoint: str, kind: str = "") -> bool:
    """A metrics page (``prom+http:``): it reports the server's figures and sends no request
    of its own to time."""
    return endpoint.partition(":")[0].startswith("prom+") or kind.startswith("prom+")


def _is_host(metric: str) -> bool:
    return metric.startswith("ram_used")


def _is_load(metric: str) -> bool:
    return metric.endswith("_percent")


def _label(metric: str) -> str:
    if metric in SERVER_RATES:
        return SERVER_RATES[metric]
    if metric.endswith("_per_s"):
        return metric.removesuffix("_per_s").replace("_", " ") + "/s"
    name = metric.removeprefix("latency_")
    for suffix in ("_mb", "_percent", "_ms"):
        name = name.removesuffix(suffix)
    return name.replace("_", " ")


DRIFT_SHARE = "drift_share"  # not a store metric: fed from the drift monitor's evaluations


class EndpointPanel(QFrame):
    """Header plus plots for one endpoint; ``plots()`` lists them so an owner can link x."""

    point_clicked = Signal(str, float, bool)  # endpoint, epoch seconds, failed?

    def __init__(self, endpoint: str, kind: str, theme: Theme, parent=None, *,
                 raw_capacity: int | None = None) -> None:
        super().__init__(parent)
        self.endpoint = endpoint
        self.kind = kind
        self.theme = theme
        self.series = EndpointSeries(raw_capacity) if raw_capacity else EndpointSeries()
        self.scraped = is_scraped(endpoint, kind)
        self._routed: dict[str, SeriesPlotWidget] = {}  # store series -> the plot drawing it
        self.mode = "live"
        self._drawn_version = -1
        self._drawn_start = 0.0
        self._fed: dict[tuple[int, str], int] = {}  # curve -> ring.total when last handed over
        self.setObjectName("endpointPanel")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        outer = QVBoxLayout(self)
        self.height_px = DEFAULT_PANEL_HEIGHT_PX
        header = QHBoxLayout()
        self.dot = QLabel("●")
        self.title = QLabel(short_name(endpoint))
        self.title.setToolTip(endpoint)
        self.title.setObjectName("panelTitle")
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.stats = QLabel("")
        self.stats.setObjectName("panelStats")
        # Selectable, to paste the figures into a ticket or a chat.
        self.stats.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        header.addWidget(self.dot)
        header.addWidget(self.title, 1)
        header.addWidget(self.stats)
        outer.addLayout(header)
        row = QHBoxLayout()
        row.setSpacing(6)
        outer.addLayout(row)
        self._row = row
        self.latency_plot: LatencyPlotWidget | None = None
        self.rate_plot: SeriesPlotWidget | None = None
        if kind != "system":
            self.latency_plot = LatencyPlotWidget(theme)
            self.latency_plot.point_clicked.connect(
                lambda t, failed: self.point_clicked.emit(self.endpoint, t, failed))
            self.rate_plot = SeriesPlotWidget("Throughput & errors", "/s", theme)
            if self.scraped:
                # No request of ours to time or count: the server's own figures take these
                # plots (made as its series arrive), and the request curves leave the legend.
                for key in ("points", "failures", "p50", "p95", "p99"):
                    self.latency_plot.show_curve(key, False)
            else:
                self.rate_plot.add_curve("throughput", "requests", theme.series[0])
                self.rate_plot.add_curve("errors", "failed", theme.failure)
            row.addWidget(self.latency_plot, 3)
            row.addWidget(self.rate_plot, 2)
            self.load_plot = None
            self.host_plot = None
        else:
            self.load_plot = SeriesPlotWidget("Load", "%", theme)
            self.host_plot = SeriesPlotWidget("Machine RAM", "MB", theme, zero_floor=False)
            row.addWidget(self.load_plot, 3)
            row.addWidget(self.host_plot, 2)
        # A server across the network reports no memory to a request probe: its plot waits
        # for a memory series (a metrics page's) instead of taking a third of the row empty.
        self.memory_plot: SeriesPlotWidget | None = None
        if not endpoint.partition(":")[0].endswith(("+http", "+https")):
            self.memory_plot = SeriesPlotWidget("Memory", "MB", theme, zero_floor=False)
            row.addWidget(self.memory_plot, 2)
        self.drift_plot: SeriesPlotWidget | None = None  # made when the first drift arrives
        # A scraped page's series that fit no other plot (queue depth, tokens/s, ?series=
        # picks in their own units), made when the first one arrives.
        self.other_plot: SeriesPlotWidget | None = None
        self.incidents: list[IncidentSpan] = []
        self.set_height(DEFAULT_PANEL_HEIGHT_PX)
        self.set_state("starting")

    def set_height(self, px: int) -> None:
        """The panel's height (View > Taller/Shorter panels). The default is a least height
        the panel may grow from; any other is the height, so that panels stack evenly.
        Short panels are compact: tighter margins, small plot titles, no legends."""
        was_compact = self.height_px < COMPACT_BELOW_PX
        self.height_px = px
        compact = px < COMPACT_BELOW_PX
        margin_x, margin_y = (6, 2) if compact else (8, 6)
        outer = self.layout()
        outer.setContentsMargins(margin_x, margin_y, margin_x, margin_y)
        outer.setSpacing(2 if compact else 4)
        if px == DEFAULT_PANEL_HEIGHT_PX:
            self.setMinimumHeight(px)
            self.setMaximumHeight(NO_MAXIMUM_PX)
        else:
            self.setFixedHeight(px)
        for plot in self.plots():
            self._fit_plot(plot)
        if compact != was_compact:
            self.set_incidents(self.incidents)

    def _fit_plot(self, plot: SeriesPlotWidget) -> None:
        compact = self.height_px < COMPACT_BELOW_PX
        plot.set_compact(compact, min(PLOT_MIN_HEIGHT_PX, self.height_px - PANEL_CHROME_PX))

    def plots(self) -> list[SeriesPlotWidget]:
        return [p for p in (self.latency_plot, self.rate_plot, self.load_plot, self.host_plot,
                            self.memory_plot, self.other_plot, self.drift_plot) if p is not None]

    def add_drift_share(self, t_s: float, share: float) -> SeriesPlotWidget | None:
        """One drift evaluation: the share of features drifted, in %. Returns the drift plot
        if this call made it (the owner links its time axis), else None."""
        made = None
        if self.drift_plot is None:
            made = self.drift_plot = SeriesPlotWidget("Drifted features", "%", self.theme)
            made.add_curve(DRIFT_SHARE, "share drifted", self.theme.series[1 % len(
                self.theme.series)])
            made.set_incidents(self.incidents, labelled=False)
            self._fit_plot(made)
            self._row.addWidget(made, 2)
            self._routed[DRIFT_SHARE] = made
        self.series.extend(DRIFT_SHARE, np.array([t_s]), np.array([100.0 * share]))
        return made

    # -- data in --------------------------------------------------------------------------

    def ingest(self, metrics: dict[str, tuple[np.ndarray, np.ndarray]],
               failures: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        for metric, (t, v) in metrics.items():
            if metric in SKIPPED:
                continue
            self.series.extend(metric, t, v)
            self._ensure_curve(metric)
        if failures is not None:
            self.series.extend_failures(*failures)

    def _plot_for(self, metric: str) -> SeriesPlotWidget | None:
        """Which plot draws a store series (made on first use), or None: not drawn."""
        if metric in NOT_ROUTED:
            return None
        if _is_memory(metric):
            return self.memory_plot or self._extra_plot("memory_plot", "Memory", "MB",
                                                         zero_floor=False)
        if _is_host(metric):
            return self.host_plot
        if _is_load(metric):
            # A server's GPU utilisation or KV-cache use; system: has its load plot already.
            if self.load_plot is None and self.scraped:
                return self._extra_plot("load_plot", "Utilisation", "%")
            return self.load_plot
        if metric in SERVER_RATES:
            return self.rate_plot
        if _is_server_latency(metric):
            return self.latency_plot
        if self.scraped:
            return self.other_plot or self._extra_plot("other_plot", "Other series",
                                                        "as exposed")
        return None

    def _extra_plot(self, attr: str, title: str, unit: str, *,
                    zero_floor: bool = True) -> SeriesPlotWidget:
        """A plot this endpoint's kind has no place for until a series of it arrives; the
        owner links its time axis (``plots()`` lists it)."""
        made = SeriesPlotWidget(title, unit, self.theme, zero_floor=zero_floor)
        setattr(self, attr, made)
        made.set_incidents(self.incidents, labelled=False)
        self._fit_plot(made)
        self._row.addWidget(made, 2)
        return made

    def _ensure_curve(self, metric: str) -> None:
        if metric in self._routed:
            return
        plot = self._plot_for(metric)
        if plot is None:
            return
        self._routed[metric] = plot
        if metric not in plot.curves:
            plot.add_curve(metric, _label(metric), self._color(metric),
                           width=1.6 if plot is self.latency_plot else 1.0)

    def _color(self, metric: str) -> str:
        """A series' colour: the latency percentiles' own, red for failures, else the next
        of the theme's colours on its plot (skipping the percentiles' on the latency plot)."""
        theme = self.theme
        fixed = {"latency_p50_ms": theme.p50, "latency_p95_ms": theme.p95,
                 "latency_p99_ms": theme.p99, FAILURES_PER_S: theme.failure,
                 REQUESTS_PER_S: theme.series[0]}
        if metric in fixed:
            return fixed[metric]
        plot = self._routed.get(metric)
        palette = [c for c in theme.series if plot is not self.latency_plot
                   or c not in (theme.p50, theme.p95, theme.p99)] or list(theme.series)
        others = [m for m, p in self._routed.items() if p is plot and m not in fixed]
        index = others.index(metric) if metric in others else len(others)
        if plot is self.rate_plot:
            index += 1  # the first colour is the requests'
        return palette[index % len(palette)]

    def set_incidents(self, spans: list[IncidentSpan]) -> None:
        """This endpoint's incidents, shaded on every one of its plots."""
        self.incidents = list(spans)
        # One label a row is enough; a compact plot is too short for labels at all (they
        # landed on each other), and the shading and the incident list still say it.
        labelled = self.height_px >= COMPACT_BELOW_PX
        for i, plot in enumerate(self.plots()):
            plot.set_incidents(self.incidents, labelled=labelled and i == 0)

    def set_slo(self, slo_ms: float | None) -> None:
        if self.latency_plot is not None:
            self.latency_plot.set_slo(slo_ms)

    def set_state(self, state: str, detail: str = "") -> None:
        changed = state != getattr(self, "_state", None)
        self._state = state
        if changed:  # a style sheet re-polishes the widget: once a second per panel added up
            self._paint_dot()
            self.update_stats()
        self.dot.setToolTip(state + (f": {detail}" if detail else ""))

    def _paint_dot(self) -> None:
        color = self.theme.states.get(self._state, self.theme.muted)
        self.dot.setStyleSheet(f"color: {color}; font-size: 14pt;")

    # -- drawing --------------------------------------------------------------------------

    def redraw(self, start_s: float, *, coarse: bool = False) -> bool:
        """Hand the live window's points to the curves; False when nothing changed.

        ``coarse`` draws per-second extremes instead of every point (long windows).
        """
        if self.mode != "live" or (self.series.version == self._drawn_version
                                   and start_s >= self._drawn_start):
            return False
        # A little margin before the window so lines enter from the left edge.
        lo = start_s - 2.0
        s = self.series
        if self.latency_plot is not None and not self.scraped:
            self._feed(self.latency_plot, "points", s.ring(LATENCY),
                       lambda: s.window(LATENCY, lo, coarse=coarse))
            self._feed(self.latency_plot, "failures", s.failures, lambda: s.failures.since(lo))
            for key, ring in (("p50", s.p50), ("p95", s.p95), ("p99", s.p99)):
                self._feed(self.latency_plot, key, ring, lambda r=ring: r.since(lo))
            self._feed(self.rate_plot, "throughput", s.throughput,
                       lambda: s.throughput.since(lo))
            self._feed(self.rate_plot, "errors", s.errors, lambda: s.errors.since(lo))
        for metric, plot in self._routed.items():
            # Broken where the series fell silent (a scrape page down), as the live
            # percentiles are where no request answered.
            self._feed(plot, metric, s.ring(metric),
                       lambda m=metric: gapped(*s.window(m, lo, coarse=coarse)))
        self._drawn_version = s.version
        self._drawn_start = lo
        self.update_stats()
        return True

    def _feed(self, plot: SeriesPlotWidget, key: str, ring, data) -> None:
        """setData only for curves whose ring grew: a curve's setData is most of a frame."""
        mark = (id(plot), key)
        if self._fed.get(mark) == ring.total:
            return
        self._fed[mark] = ring.total
        plot.set_curve(key, *data())

    def update_stats(self) -> None:
        """Write the header's figures from the series (on state changes and new seconds;
        the owner calls it when a setting they depend on changed)."""
        s = self.series
        parts = []
        if getattr(self, "_state", None) == "stopped" and s.newest_s() is not None:
            # What a reopened workspace recorded, or what came before a detach: the figures
            # are its last, not a server answering now.
            parts.append("stopped; last recorded:")
        if getattr(self, "_state", None) == "down":
            # No answers come while it is down: the last second's rate and p95 would read
            # as if it were still serving.
            parts.append("down: no answers")
        elif self.scraped:
            parts += self._server_stats()
        else:
            last_rate = s.throughput.last()
            if last_rate is not None and np.isfinite(last_rate[1]):
                parts.append(f"{last_rate[1]:.0f} req/s")
            # All three at a glance, as nvitop or perf_analyzer print them: p95 alone hid
            # a tail (p99) or a shift of the typical request (p50).
            last = [ring.last() for ring in (s.p50, s.p95, s.p99)]
            if all(v is not None and np.isfinite(v[1]) for v in last):
                parts.append("p50/p95/p99 " + "/".join(f"{v[1]:.2f}" for v in last)
                             + f" ms of {s.percentile_requests:,} in {s.percentile_window_s:g} s")
            rate = s.error_rate()
            if rate is not None:
                parts.append(f"failed {rate:.0%}")
        rss = s.metrics.get("rss_mb")
        if rss is not None and rss.n:
            parts.append(f"RSS {rss.last()[1]:.0f} MB")
        cpu = s.metrics.get("cpu_percent")
        if cpu is not None and cpu.n:
            parts.append(f"CPU {cpu.last()[1]:.0f} %")
        self.stats.setText("   ".join(parts))

    def _server_stats(self) -> list[str]:
        """A scraped page's header: the server's own request rate, p95 (or mean, where it
        exposes no quantiles) and share failed, and its GPU's utilisation."""
        s = self.series
        parts = []
        rate = s.last(REQUESTS_PER_S)
        if rate is not None:
            parts.append(f"{rate:.0f} req/s" if rate >= 10 else f"{rate:.2g} req/s")
        for metric, name in (("latency_p95_ms", "p95"), ("latency_mean_ms", "mean")):
            value = s.last(metric)
            if value is not None:
                parts.append(f"{name} {value:.2f} ms")
                break
        # Over the last 10 s, as for probed endpoints: one scrape's rates jump about.
        failed, requests = s.recent_mean(FAILURES_PER_S), s.recent_mean(REQUESTS_PER_S)
        if failed is not None and requests:
            parts.append(f"failed {failed / requests:.0%}")
        gpu = s.last("gpu_util_percent")
        if gpu is not None:
            parts.append(f"GPU {gpu:.0f} %")
        if not parts and s.has(SCRAPE_MS) and not self._routed:
            parts.append("scraped: no model-server series on this page (name some with "
                         "?series=)")
        return parts

    def set_mode(self, mode: str) -> None:
        """'live' draws the rings; 'history' waits for ``set_history``."""
        self.mode = mode
        self._fed.clear()
        self._drawn_version = -1
        self._drawn_start = 0.0
        for plot in self.plots():
            plot.reset_interaction()
        if self.latency_plot is not None and not self.scraped:
            live = mode == "live"
            names = (("points", "request", "max"), ("p50", "p50", "mean"))
            for key, live_name, history_name in names:
                self.latency_plot.rename(key, live_name if live else history_name)
            # History draws none of these; one the user hid from the legend stays hidden.
            for key in ("p95", "p99", "failures"):
                if key in self.latency_plot.curves:
                    self.latency_plot.show_curve(key, live)

    def set_history(self, history: dict[str, object]) -> None:
        """Draw downsampled history: {metric: app.core.store.History-like}."""
        self.mode = "history"
        empty = (np.empty(0), np.empty(0))

        def mid(h) -> np.ndarray:
            return np.asarray(h.ts_ns, dtype=np.float64) / NS

        if self.latency_plot is not None:
            lat = history.get(LATENCY)
            fail = history.get(FAILURE)
            if lat is not None and len(lat):
                t = mid(lat)
                bucket = getattr(lat, "width_ns", 0) / NS or 1.0
                vmax = np.asarray(lat.vmax, dtype=float)
                self.latency_plot.set_curve("points", t, vmax)
                # Buckets with no request (an outage) break the mean line, as the live view
                # does; a bucket's slowest answer kept the probe busy, which is no outage.
                self.latency_plot.set_curve("p50", *gapped(
                    t, np.asarray(lat.mean, dtype=float), width_s=bucket, counts=lat.count,
                    busy_s=vmax / 1e3))
                t0, end = float(t[0]), float(t[-1]) + bucket
                width, bins = rate_bins(t0, float(t[-1]), bucket)
                self.rate_plot.set_curve("throughput",
                                         *binned_rate(t, lat.count, t0, end, width, bins))
                for key in ("p95", "p99", "failures"):
                    self.latency_plot.set_curve(key, *empty)
                if fail is not None and len(fail):  # on the requests' grid: zeros line up
                    self.rate_plot.set_curve("errors", *binned_rate(
                        mid(fail), fail.count, t0, end, width, bins))
                else:
                    self.rate_plot.set_curve("errors", *empty)
        for metric, h in history.items():
            if metric in SKIPPED or h is None or not len(h):
                continue
            self._ensure_curve(metric)
            plot = self._routed.get(metric)
            if plot is not None:
                plot.set_curve(metric, *gapped(mid(h), np.asarray(h.mean, dtype=float),
                                               width_s=getattr(h, "width_ns", 0) / NS,
                                               counts=h.count))

    def apply_theme(self, theme: Theme) -> None:
        self.theme = theme
        for plot in self.plots():
            plot.apply_theme(theme)
        for metric, plot in self._routed.items():
            if metric != DRIFT_SHARE:
                plot.set_curve_color(metric, self._color(metric))
        if self.rate_plot is not None and not self.scraped:
            self.rate_plot.set_curve_color("throughput", theme.series[0])
            self.rate_plot.set_curve_color("errors", theme.failure)
        self._paint_dot()
