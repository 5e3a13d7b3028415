"""Which Prometheus series of known model servers mean what, and the arithmetic that turns
scrapes into our series: counters into rates, histograms and summaries into quantiles and means.

Stable names emitted (whatever the server): ``requests_per_s``, ``failures_per_s``,
``inferences_per_s``, ``latency_mean_ms``, ``latency_p50_ms``/``p95``/``p99``, ``queue_mean_ms``,
``compute_mean_ms``, ``running``, ``waiting``, ``ttft_p50_ms``..., ``tpot_p50_ms``...,
``prompt_tokens_per_s``, ``generation_tokens_per_s``, ``kv_cache_usage_percent``,
``gpu_util_percent``, ``gpu_mem_used_mb``, ``cpu_mem_used_mb``.
Pure functions and frozen tables; any thread.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
MODEL_LABELS = ("model", "model_name")


@dataclass(frozen=True, slots=True)
class Source:
    """One family of a scrape, optionally narrowed to series whose label ends with a text."""

    family: str
    kind: str  # counter | gauge | histogram | summary
    label: str | None = None
    label_endswith: str = ""

    @property
    def key(self) -> str:
        return f"{self.family}|{self.label}={self.label_endswith}" if self.label else self.family


@dataclass(frozen=True, slots=True)
class Rule:
    """How one stable series is made. ``out`` holds ``{q}`` for quantile rules."""

    out: str
    op: str  # rate | gauge | ratio (window Δnum/Δden) | quantiles (histogram/summary)
    sources: tuple[Source, ...]
    scale: float = 1.0


def _c(f: str) -> Source:
    return Source(f, "counter")


def _g(f: str) -> Source:
    return Source(f, "gauge")


US, S = 1e-3, 1e3  # to milliseconds from microseconds, from seconds

# Order matters: for each stable name the first rule whose series are present wins.
KNOWN: tuple[Rule, ...] = (
    # Triton (nv_inference_*, nv_gpu_*)
    Rule("requests_per_s", "rate", (_c("nv_inference_request_success"),
                                    _c("nv_inference_request_failure"))),
    Rule("failures_per_s", "rate", (_c("nv_inference_request_failure"),)),
    Rule("inferences_per_s", "rate", (_c("nv_inference_count"),)),
    Rule("latency_mean_ms", "ratio", (_c("nv_inference_request_duration_us"),
                                      _c("nv_inference_request_success")), US),
    Rule("queue_mean_ms", "ratio", (_c("nv_inference_queue_duration_us"),
                                    _c("nv_inference_request_success")), US),
    Rule("compute_mean_ms", "ratio", (_c("nv_inference_compute_infer_duration_us"),
                                      _c("nv_inference_request_success")), US),
    Rule("latency_{q}_ms", "quantiles", (Source("nv_inference_request_summary_us", "summary"),),
         US),
    Rule("waiting", "gauge", (_g("nv_inference_pending_request_count"),)),
    Rule("gpu_util_percent", "gauge", (_g("nv_gpu_utilization"),), 100.0),
    Rule("gpu_mem_used_mb", "gauge", (_g("nv_gpu_memory_used_bytes"),), 1 / 2**20),
    Rule("cpu_mem_used_mb", "gauge", (_g("nv_cpu_memory_used_bytes"),), 1 / 2**20),
    # TorchServe (ts_*, and its Requests*XX counters)
    Rule("requests_per_s", "rate", (_c("ts_inference_requests"),)),
    Rule("failures_per_s", "rate", (_c("Requests4XX"), _c("Requests5XX"))),
    Rule("latency_mean_ms", "ratio", (_c("ts_inference_latency_microseconds"),
                                      _c("ts_inference_requests")), US),
    Rule("queue_mean_ms", "ratio", (_c("ts_queue_latency_microseconds"),
                                    _c("ts_inference_requests")), US),
    # MLServer
    Rule("requests_per_s", "rate", (_c("model_infer_request_success"),
                                    _c("model_infer_request_failure"))),
    Rule("failures_per_s", "rate", (_c("model_infer_request_failure"),)),
    Rule("latency_mean_ms", "ratio", (Source("model_infer_request_duration", "summary"),), S),
    Rule("latency_{q}_ms", "quantiles", (Source("rest_server_request_duration_seconds",
                                                "histogram", "path", "/infer"),), S),
    # vLLM
    Rule("requests_per_s", "rate", (_c("vllm:request_success"),)),
    Rule("latency_mean_ms", "ratio", (Source("vllm:e2e_request_latency_seconds", "histogram"),),
         S),
    Rule("latency_{q}_ms", "quantiles", (Source("vllm:e2e_request_latency_seconds",
                                                "histogram"),), S),
    Rule("ttft_{q}_ms", "quantiles", (Source("vllm:time_to_first_token_seconds",
                                             "histogram"),), S),
    Rule("tpot_{q}_ms", "quantiles", (Source("vllm:time_per_output_token_seconds",
                                             "histogram"),), S),
    Rule("tpot_{q}_ms", "quantiles", (Source("vllm:inter_token_latency_seconds",
                                             "histogram"),), S),
    Rule("running", "gauge", (_g("vllm:num_requests_running"),)),
    Rule("waiting", "gauge", (_g("vllm:num_requests_waiting"),)),
    Rule("prompt_tokens_per_s", "rate", (_c("vllm:prompt_tokens"),)),
    Rule("generation_tokens_per_s", "rate", (_c("vllm:generation_tokens"),)),
    Rule("kv_cache_usage_percent", "gauge", (_g("vllm:gpu_cache_usage_perc"),), 100.0),
    Rule("kv_cache_usage_percent", "gauge", (_g("vllm:kv_cache_usage_perc"),), 100.0),
)


def picked_rules(names: Iterable[str], kinds: Mapping[str, str]) -> list[Rule]:
    """Rules for series the user named (``?series=``), by the type the scrape declares."""
    rules = []
    for raw in names:
        name = raw.removesuffix("_total")
        kind = kinds.get(name, "gauge")
        if kind == "counter":
            rules.append(Rule(f"{name}_per_s", "rate", (_c(name),)))
        elif kind in ("histogram", "summary"):
            source = Source(name, kind)
            rules.append(Rule(f"{name}_mean", "ratio", (source,)))
            rules.append(Rule(f"{name}_{{q}}", "quantiles", (source,)))
        else:
            rules.append(Rule(name, "gauge", (_g(name),)))
    return rules


# -- reducing one scrape --------------------------------------------------------------------

def reduce_family(source: Source, family: Any, model: str | None) -> Any:
    """Sum a family's series (those that pass the filters) into one reading for ``source``.

    counter/gauge -> float; histogram -> (buckets {le: count}, sum, count);
    summary -> (sum, count, {quantile: worst value over series}).
    """
    name = family.name

    def wanted(labels: Mapping[str, str]) -> bool:
        if model is not None:
            for key in MODEL_LABELS:
                if key in labels and labels[key] != model:
                    return False
        return not source.label or labels.get(source.label, "").endswith(source.label_endswith)

    samples = [s for s in family.samples if wanted(s.labels)]
    if source.kind in ("counter", "gauge"):
        values = [s.value for s in samples if s.name in (name, f"{name}_total")]
        return math.fsum(values) if values else None
    total = math.fsum(s.value for s in samples if s.name == f"{name}_sum")
    count = math.fsum(s.value for s in samples if s.name == f"{name}_count")
    if source.kind == "histogram":
        buckets: dict[float, float] = {}
        for s in samples:
            if s.name == f"{name}_bucket" and "le" in s.labels:
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
        return buckets, total, count
    quantiles: dict[float, float] = {}
    for s in samples:
        if s.name == name and "quantile" in s.labels and math.isfinite(s.value):
            q = float(s.labels["quantile"])
            quantiles[q] = max(quantiles.get(q, -math.inf), s.value)
    return total, count, quantiles


def delta(now: float, before: float) -> float:
    """A counter's increase; a drop means the server restarted and counts from zero again."""
    return now - before if now >= before else now


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """PromQL's estimate: linear interpolation inside the bucket that holds the q-th rank."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower  # above the last finite bound: the best we can say
            if count == below:
                return le
            if le <= 0:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def window_buckets(now: Mapping[float, float], old: Mapping[float, float]) -> dict[float, float]:
    restarted = any(now.get(le, 0.0) < old.get(le, 0.0) for le in old)
    if restarted:
        return dict(now)
    return {le: now[le] - old.get(le, 0.0) for le in now}
