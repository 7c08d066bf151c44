"""Prometheus metrics of one router, in its own registry (so several routers can live in one process).

Forecast quality per instance: `block_router_forecast_error_ratio{instance, metric}` is a histogram of
|forecast - actual| / actual for the TTFT (streams: time to the first byte relayed) and the E2E latency of
each completed request that was routed with a forecast. `block_router_decisions_total{policy, outcome}`
counts every decision: `forecast` (chosen by forecasts), `fallback` (forecasts were wanted but missing:
the fallback rule chose) or `no_forecast` (the policy does not use them), so the share of decisions made
without forecasts is a PromQL ratio (and `no_forecast_share()`, for GET /instances and the benchmarks).
`block_router_fallbacks_total{policy, reason}` says why forecasts were missing: budget (shed to protect the
event loop), deadline, sidecar (late or failed) or error (a forecast failed, or the request fits nowhere).
`block_router_request_latency_seconds{instance, metric}` is the latency of every completed request as the
router sees it (from the decision). A removed instance's series are forgotten. Prefix caching: of the prompt
tokens routed with a prefix identity (`block_router_prefix_prompt_tokens_total`), those the chosen instance
was believed to hold in its prefix cache when the request was sent there
(`block_router_prefix_cached_tokens_total`: the engine's snapshot, else the router's own prefix index); their
ratio is the hit rate the router expects. `block_router_calibration_factor{instance, phase}` is each
instance's online calibration factor (observed / profile step time, phase decode or prefill; 1 = the profile
is right; see block/fleet/calibration.py), read at scrape time.

Admission (block/router/admission.py, when --admission is queue or reject):
`block_router_admission_total{priority, outcome}` counts requests admitted, held and rejected per
priority (a held request is counted again when it is admitted or rejected), `block_router_held` is the
number held now, `block_router_held_seconds` how long each held request waited, and
`block_router_goodput_total{priority}` / `block_router_slo_missed_total{priority}` count the completed
requests that met / missed their target (TTFT judged for streams; the goodput is its rate()).
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from block.fleet.calibration import PHASES
from block.fleet.forecasts import MISSING_REASONS

_DECISION_BUCKETS = (2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)
_ERROR_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
_LATENCY_METRICS = ("ttft", "e2e")
_HELD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


class RouterMetrics:
    def __init__(self, policy: str) -> None:
        self.policy = policy
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "block_router_requests_total",
            "Requests routed, by instance and policy",
            ["instance", "policy"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            "block_router_decision_seconds",
            "Time to choose an instance (forecasts included)",
            buckets=_DECISION_BUCKETS,
            registry=r,
        )
        self.forecast_error = Histogram(
            "block_router_forecast_error_ratio",
            "|forecast - actual| / actual latency of completed requests, by instance and metric (ttft, e2e)",
            ["instance", "metric"],
            buckets=_ERROR_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "block_router_request_latency_seconds",
            "Latency of completed requests from the routing decision, by instance and metric (ttft, e2e)",
            ["instance", "metric"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "block_router_decisions_total",
            "Routing decisions by outcome: forecast, fallback (forecast missing), no_forecast (policy)",
            ["policy", "outcome"],
            registry=r,
        )
        self.fallbacks = Counter(
            "block_router_fallbacks_total",
            "Decisions made by the fallback rule (forecast missing), by reason: budget, deadline, sidecar, "
            "error",
            ["policy", "reason"],
            registry=r,
        )
        self.forecasts_missed = Counter(
            "block_router_forecasts_missed_total", "Forecasts late, failed or unavailable", registry=r
        )
        self.retries = Counter(
            "block_router_retries_total", "Attempts retried on another instance", registry=r
        )
        self.upstream_errors = Counter(
            "block_router_upstream_errors_total", "Upstream failures by kind", ["kind"], registry=r
        )
        self.healthy = Gauge(
            "block_router_instance_healthy", "1 when the instance is in rotation", ["instance"], registry=r
        )
        self.in_flight = Gauge(
            "block_router_in_flight", "Requests in flight per instance", ["instance"], registry=r
        )
        self.kv_events_dropped_total = Counter(
            "block_router_kv_events_dropped_total",
            "vLLM KV-event messages the router could not use, by reason: malformed (not a batch), "
            "gap (batches lost and not replayable), unappliable (an event inconsistent with the index); "
            "each one clears that instance's index, which falls back to the approximate one until resynced",
            ["instance", "reason"],
            registry=self.registry,
        )
        self.predictor_notices_dropped = Counter(
            "block_router_predictor_notifications_dropped_total",
            "/routed and /finished notices to predictor sidecars not delivered, by reason: overflow "
            "(too many outstanding to one sidecar), timeout, error (refused or an error answer)",
            ["reason"],
            registry=r,
        )
        self.prefix_prompt_tokens = Counter(
            "block_router_prefix_prompt_tokens_total",
            "Prompt tokens of requests routed with a prefix identity (block hashes of the prompt)",
            registry=r,
        )
        self.prefix_cached_tokens = Counter(
            "block_router_prefix_cached_tokens_total",
            "Of those, the tokens the chosen instance was believed to hold in its prefix cache",
            registry=r,
        )
        self.calibration_factor = Gauge(
            "block_router_calibration_factor",
            "Online calibration: observed / profile step time per instance and phase (decode, prefill)",
            ["instance", "phase"],
            registry=r,
        )
        self.admission = Counter(
            "block_router_admission_total",
            "Admission outcomes per priority: admitted, held, rejected",
            ["priority", "outcome"],
            registry=r,
        )
        self.held = Gauge("block_router_held", "Requests admission holds now", registry=r)
        self.held_seconds = Histogram(
            "block_router_held_seconds",
            "Time a held request waited (until placed, rejected or gone)",
            buckets=_HELD_BUCKETS,
            registry=r,
        )
        self.goodput = Counter(
            "block_router_goodput_total",
            "Completed requests that met their latency target, per priority",
            ["priority"],
            registry=r,
        )
        self.slo_missed = Counter(
            "block_router_slo_missed_total",
            "Completed requests that missed their latency target, per priority",
            ["priority"],
            registry=r,
        )
        self._requests_by_instance: dict[str, Counter] = {}
        self._in_flight_by_instance: dict[str, Gauge] = {}
        self._fallback = {reason: self.fallbacks.labels(policy, reason) for reason in MISSING_REASONS}
        self.decision_counts = {"forecast": 0, "fallback": 0, "no_forecast": 0}  # as decisions_total
        self.fallback_counts = dict.fromkeys(MISSING_REASONS, 0)  # as fallbacks_total
        # Exported at 0 before the first failure, so dashboards and rate() see the series from the start.
        for kind in ("connect", "status", "read", "first_byte", "mid_stream"):
            self.upstream_errors.labels(kind)
        # Every outcome exists from the start (at 0), so the share without forecasts is defined at once.
        self._decided = {o: self.decisions.labels(policy, o) for o in ("forecast", "fallback", "no_forecast")}
        self._forecast_error_by_instance: dict[str, dict[str, Histogram]] = {}
        self._latency_by_instance: dict[str, dict[str, Histogram]] = {}

    # Children are cached: label lookups cost more than the increments themselves.
    def routed(self, instance: str) -> None:
        child = self._requests_by_instance.get(instance)
        if child is None:
            child = self._requests_by_instance[instance] = self.requests.labels(instance, self.policy)
        child.inc()

    def prefix_routed(self, prompt_tokens: int, cached_tokens: int) -> None:
        self.prefix_prompt_tokens.inc(prompt_tokens)
        self.prefix_cached_tokens.inc(min(cached_tokens, prompt_tokens))

    def in_flight_child(self, instance: str) -> Gauge:
        child = self._in_flight_by_instance.get(instance)
        if child is None:
            child = self._in_flight_by_instance[instance] = self.in_flight.labels(instance)
        return child

    def decided(self, wants_forecasts: bool, fallback: bool, reason: str | None = None) -> None:
        """One decision; a fallback is counted in block_router_fallbacks_total as well, by `reason`
        (one of MISSING_REASONS; error when not given)."""
        if fallback:
            reason = reason if reason in self._fallback else "error"
            self._fallback[reason].inc()
            self.fallback_counts[reason] += 1
        outcome = "fallback" if fallback else "forecast" if wants_forecasts else "no_forecast"
        self._decided[outcome].inc()
        self.decision_counts[outcome] += 1

    def no_forecast_share(self) -> float | None:
        """The share of the decisions that wanted forecasts and went without (None before any)."""
        fallback = self.decision_counts["fallback"]
        wanted = fallback + self.decision_counts["forecast"]
        return None if wanted == 0 else fallback / wanted

    def forecast_error_observed(self, instance: str, metric: str, ratio: float) -> None:
        """`metric` is "ttft" or "e2e"."""
        _children(self.forecast_error, self._forecast_error_by_instance, instance)[metric].observe(ratio)

    def latency_observed(self, instance: str, metric: str, seconds: float) -> None:
        _children(self.latency, self._latency_by_instance, instance)[metric].observe(seconds)

    def kv_events_dropped(self, instance: str, reason: str) -> None:
        self.kv_events_dropped_total.labels(instance, reason).inc()

    def admission_outcome(self, priority: str, outcome: str) -> None:
        self.admission.labels(priority, outcome).inc()

    def target_observed(self, priority: str, met: bool) -> None:
        (self.goodput if met else self.slo_missed).labels(priority).inc()

    def predictor_notice_dropped(self, reason: str) -> None:
        self.predictor_notices_dropped.labels(reason).inc()

    def set_health(self, instance: str, healthy: bool) -> None:
        self.healthy.labels(instance).set(1 if healthy else 0)

    def calibration_observed(self, instance: str, factors: dict[str, float]) -> None:
        """`factors`: phase -> factor (InstanceCalibration.factors)."""
        for phase, factor in factors.items():
            self.calibration_factor.labels(instance, phase).set(factor)

    def forget_health(self, instance: str) -> None:
        with contextlib.suppress(KeyError):
            self.healthy.remove(instance)
        for phase in PHASES:
            with contextlib.suppress(KeyError):
                self.calibration_factor.remove(instance, phase)

    def forget_in_flight(self, instance: str) -> None:
        """Only once nothing is in flight there: a later dec() would start a new series at -1."""
        with contextlib.suppress(KeyError):
            self.in_flight.remove(instance)
        self._in_flight_by_instance.pop(instance, None)
        for histogram, cache in (
            (self.forecast_error, self._forecast_error_by_instance),
            (self.latency, self._latency_by_instance),
        ):
            if cache.pop(instance, None) is not None:
                for m in _LATENCY_METRICS:
                    with contextlib.suppress(KeyError):
                        histogram.remove(instance, m)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _children(
    histogram: Histogram, cache: dict[str, dict[str, Histogram]], instance: str
) -> dict[str, Histogram]:
    """An instance's (ttft, e2e) children of a histogram labelled by instance and metric, cached."""
    children = cache.get(instance)
    if children is None:
        children = cache[instance] = {m: histogram.labels(instance, m) for m in _LATENCY_METRICS}
    return children
