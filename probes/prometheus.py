"""Scrapes any Prometheus text endpoint: ``prom+http://HOST:PORT/metrics`` (Triton, TorchServe,
MLServer, vLLM...), parsed with prometheus_client. Known servers' series come out under stable
names (see probes.prom_series); ``?series=a,b`` adds any other series by its family name.

Parameters: ``interval_s`` (scrape period, default 2), ``window_s`` (span for quantiles and
means, default 30), ``model`` (keep only series whose model/model_name label matches),
``series``, plus the common HTTP ones (``timeout_s``, ``max_mb``, ``token_env``...).
Thread: ``run`` on the probe's own thread; it only puts samples on the bus.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from app.core.bus import Bus
from app.core.domain import EndpointUri, Sample
from probes.base import (
    EndpointState,
    Probe,
    ProbeError,
    ProbeOptions,
    float_param,
    register,
)
from probes.http_common import (
    HTTP_PARAMS,
    BadResponse,
    HttpClient,
    HttpSettings,
    RemoteError,
    TimedOut,
    Unreachable,
    one_line,
    split_http_target,
)
from probes.http_model import UP_METRIC
from probes.prom_series import (
    KNOWN,
    QUANTILES,
    Rule,
    delta,
    histogram_quantile,
    picked_rules,
    reduce_family,
    window_buckets,
)

log = logging.getLogger(__name__)

SCRAPE_METRIC = "scrape_ms"
Reading = tuple[float, dict[str, Any]]  # (monotonic s, reduced value per source key)


def parse_families(text: str) -> dict[str, Any]:
    """Metric families by name; BadResponse when the text is not the Prometheus format."""
    try:
        return {f.name: f for f in text_string_to_metric_families(text)}
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise BadResponse(f"not Prometheus text format: {one_line(str(exc) or repr(exc), 120)}"
                          ) from None


@register("prom+http")
class PrometheusProbe(Probe):
    example = "prom+http://HOST:PORT/metrics"
    params = HTTP_PARAMS | {"interval_s", "window_s", "model", "series"}

    def __init__(self, uri: EndpointUri, bus: Bus, options: ProbeOptions) -> None:
        super().__init__(uri, bus, options)
        self.base_url, path = split_http_target(uri, self.example)
        self.path = path or "/metrics"
        self.settings = HttpSettings.from_uri(uri)
        self.interval_s = float_param(uri, "interval_s", 2.0, positive=True)
        self.window_s = float_param(uri, "window_s", 30.0, positive=True)
        self.model = uri.param("model")
        wanted = uri.param("series") or ""
        self.series = [s.strip() for s in wanted.split(",") if s.strip()]
        self.client = HttpClient(self.base_url, self.settings)
        self.families_seen = 0
        self._history: deque[Reading] = deque()
        try:
            with self.client.quick():
                self.bus.put_many(self.scrape_once())
        except (Unreachable, TimedOut) as exc:
            self.mark_down(str(exc))  # not the user's fault yet: retried from the probe thread
        except BadResponse as exc:
            self.client.close()
            raise ProbeError(f"{self.endpoint}: {exc}") from None

    def scrape_once(self) -> list[Sample]:
        """One scrape, turned into samples; raises RemoteError when there is nothing to read."""
        answer = self.client.request("GET", self.path)
        self.requests += 1
        if answer.status_code >= 400:
            raise BadResponse(f"GET {self.base_url}{self.path}: HTTP {answer.status_code}: "
                              f"{answer.error_text()}", answer.status_code)
        families = parse_families(answer.body.decode("utf-8", "replace"))
        now = time.monotonic()
        ts_ns = time.time_ns()
        self.families_seen = len(families)
        kinds = {name: f.type for name, f in families.items()}
        rules = list(KNOWN) + picked_rules(self.series, kinds)
        readings: dict[str, Any] = {}
        for rule in rules:
            for source in rule.sources:
                family = families.get(source.family)
                if family is not None and source.key not in readings:
                    readings[source.key] = reduce_family(source, family, self.model)
        previous = self._history[-1] if self._history else None
        self._history.append((now, readings))
        while len(self._history) > 2 and self._history[1][0] <= now - self.window_s:
            self._history.popleft()
        window_start = self._history[0]

        samples = [Sample(self.endpoint, ts_ns, UP_METRIC, 1.0),
                   Sample(self.endpoint, ts_ns, SCRAPE_METRIC, answer.elapsed_ms)]
        claimed: set[str] = set()
        for rule in rules:
            if rule.out in claimed or not any(s.key in readings for s in rule.sources):
                continue
            claimed.add(rule.out)
            for name, value in self._evaluate(rule, (now, readings), previous, window_start):
                samples.append(Sample(self.endpoint, ts_ns, name, value))
        missing = [s for s in self.series if s.removesuffix("_total") not in families]
        if missing:
            some = ", ".join(sorted(families)[:5])
            self.last_error = (f"series {', '.join(missing)} not found at {self.base_url}"
                               f"{self.path} ({len(families)} families, e.g. {some})")
            self.state = EndpointState.DEGRADED
        else:
            self.last_error = None
            self.state = EndpointState.UP
        return samples

    @staticmethod
    def _evaluate(rule: Rule, now: Reading, previous: Reading | None,
                  start: Reading) -> list[tuple[str, float]]:
        t, cur = now
        if rule.op == "gauge":
            values = [cur[s.key] for s in rule.sources if cur.get(s.key) is not None]
            return [(rule.out, sum(values) * rule.scale)] if values else []
        if rule.op == "rate":
            if previous is None or t <= previous[0]:
                return []
            old = previous[1]
            # A series absent from the previous scrape was created since: it counted from zero.
            increases = [delta(cur[s.key], old.get(s.key) or 0.0) for s in rule.sources
                         if cur.get(s.key) is not None]
            return [(rule.out, sum(increases) / (t - previous[0]))] if increases else []
        if start[0] >= t:
            return []  # the first scrape: no window yet
        old = start[1]
        if rule.op == "ratio":
            if len(rule.sources) == 2:
                num_key, den_key = (s.key for s in rule.sources)
                if cur.get(num_key) is None or cur.get(den_key) is None:
                    return []
                num = delta(cur[num_key], old.get(num_key) or 0.0)
                den = delta(cur[den_key], old.get(den_key) or 0.0)
            else:
                key = rule.sources[0].key
                if key not in cur:
                    return []
                c = cur[key]
                o = old.get(key) or (({}, 0.0, 0.0) if isinstance(c[0], dict) else (0.0, 0.0, {}))
                # histogram: (buckets, sum, count); summary: (sum, count, quantiles)
                (s1, n1), (s0, n0) = ((c[1], c[2]), (o[1], o[2])) if isinstance(c[0], dict) \
                    else ((c[0], c[1]), (o[0], o[1]))
                num, den = delta(s1, s0), delta(n1, n0)
            return [(rule.out, num / den * rule.scale)] if den > 0 else []
        key = rule.sources[0].key  # quantiles
        if key not in cur:
            return []
        c = cur[key]
        if isinstance(c[0], dict):  # histogram: over the window
            buckets = window_buckets(c[0], old[key][0] if key in old else {})
            out = []
            for label, q in QUANTILES:
                value = histogram_quantile(q, buckets)
                if value is not None:
                    out.append((rule.out.format(q=label), value * rule.scale))
            return out
        quantiles = c[2]  # summary: the server already computed them over its own window
        return [(rule.out.format(q=label), quantiles[q] * rule.scale)
                for label, q in QUANTILES if q in quantiles]

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            if self.paused:
                self.wait_if_paused()
                continue
            try:
                self.bus.put_many(self.scrape_once())
                self.mark_answered()
            except (Unreachable, TimedOut) as exc:
                self.mark_down(str(exc))
            except RemoteError as exc:
                self.errors += 1
                self.state = EndpointState.DEGRADED
                self.last_error = self.client.redact(str(exc))
                self.bus.put(Sample(self.endpoint, time.time_ns(), UP_METRIC, 0.0))
            except Exception as exc:
                # A bug of ours on an odd scrape: report it, keep scraping.
                self.errors += 1
                self.state = EndpointState.DEGRADED
                self.last_error = self.client.redact(self.internal_error(exc, "reading a scrape"))

    def info(self) -> dict[str, str]:
        facts = {"kind": self.scheme, "server": self.base_url,
                 "families": str(self.families_seen)}
        if self.model:
            facts["model"] = self.model
        return facts

    def close(self) -> None:
        self.client.close()


@register("prom+https")
class PrometheusHttpsProbe(PrometheusProbe):
    example = "prom+https://HOST:PORT/metrics"
