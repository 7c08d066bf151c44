"""The sidecar's Prometheus metrics, in a registry of its own (several sidecars may share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PredictorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.predictions = Counter(
            "block_predictor_predictions", "Forecasts answered.", registry=self.registry
        )
        self.predict_seconds = Histogram(
            "block_predictor_predict_seconds",
            "Time to compute one forecast.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1),
            registry=self.registry,
        )
        self.snapshot_age = Gauge(
            "block_predictor_snapshot_age_seconds",
            "Age of the latest engine snapshot.",
            registry=self.registry,
        )
        self.refresh_errors = Counter(
            "block_predictor_refresh_errors", "Failed engine /state polls.", registry=self.registry
        )
        self.pending = Gauge(
            "block_predictor_pending_requests",
            "Requests routed since the latest snapshot and not yet in one.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
