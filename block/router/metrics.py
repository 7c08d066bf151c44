"""Prometheus metrics of one router, in its own registry (so several routers can live in one process)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_DECISION_BUCKETS = (2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)
_ERROR_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)


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
            "|forecast - actual| / actual end-to-end latency of completed requests",
            buckets=_ERROR_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "block_router_fallbacks_total",
            "Decisions made by the fallback rule (forecast missing)",
            ["policy"],
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
        self.predictor_notices_dropped = Counter(
            "block_router_predictor_notifications_dropped_total",
            "/routed and /finished notices to predictor sidecars not delivered, by reason: overflow "
            "(too many outstanding to one sidecar), timeout, error (refused or an error answer)",
            ["reason"],
            registry=r,
        )
        self._requests_by_instance: dict[str, Counter] = {}
        self._in_flight_by_instance: dict[str, Gauge] = {}
        self._fallback = self.fallbacks.labels(policy)

    # Children are cached: label lookups cost more than the increments themselves.
    def routed(self, instance: str) -> None:
        child = self._requests_by_instance.get(instance)
        if child is None:
            child = self._requests_by_instance[instance] = self.requests.labels(instance, self.policy)
        child.inc()

    def in_flight_child(self, instance: str) -> Gauge:
        child = self._in_flight_by_instance.get(instance)
        if child is None:
            child = self._in_flight_by_instance[instance] = self.in_flight.labels(instance)
        return child

    def fallback(self) -> None:
        self._fallback.inc()

    def predictor_notice_dropped(self, reason: str) -> None:
        self.predictor_notices_dropped.labels(reason).inc()

    def set_health(self, instance: str, healthy: bool) -> None:
        self.healthy.labels(instance).set(1 if healthy else 0)

    def forget(self, instance: str) -> None:
        for metric in (self.healthy, self.in_flight):
            with contextlib.suppress(KeyError):
                metric.remove(instance)
        self._in_flight_by_instance.pop(instance, None)

    def render(self) -> bytes:
        return generate_latest(self.registry)
