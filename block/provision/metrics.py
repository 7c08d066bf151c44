"""Provisioning metrics, registered in the router's own registry (so they appear on its /metrics)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

STATES = ("requested", "starting", "active", "unhealthy", "draining", "standby")


class ProvisionMetrics:
    def __init__(self, registry: CollectorRegistry, state_counts: Callable[[], dict[str, int]]) -> None:
        self.decisions = Counter(
            "block_router_provision_decisions_total",
            "Auto-provisioning decisions, by action and reason",
            ["action", "reason"],
            registry=registry,
        )
        self.failures = Counter(
            "block_router_provision_failures_total",
            "Provisioning actions the provider could not carry out",
            ["action"],
            registry=registry,
        )
        self.start_timeouts = Counter(
            "block_router_provision_start_timeouts_total",
            "Instances the provisioner added that were not healthy within the start timeout (released)",
            registry=registry,
        )
        self.instances = Gauge(
            "block_router_instances",
            "Instances by provisioning state (requested: a start asked of the provider, no URL yet)",
            ["state"],
            registry=registry,
        )
        # Counted at each scrape, so the gauge is never a tick behind the pool.
        for state in STATES:
            self.instances.labels(state).set_function(lambda s=state: state_counts().get(s, 0))
