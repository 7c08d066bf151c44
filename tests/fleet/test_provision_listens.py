"""Simulated provisioning is a request listener and a filter: it replaces nothing on the trackers or the
policy (no monkey-patching), and still sees only the active instances."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from block.fleet.tracker import InstanceTracker
from block.policies import Policy
from block.provision import sim as provision_sim
from block.provision.controller import ProvisionSettings
from block.provision.sim import SimProvisionPlan, simulate_provisioned
from block.sim.config import SimConfig
from block.sim.requests import SimRequests


def test_provisioned_runs_patch_no_tracker_and_wrap_no_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []
    real = provision_sim.Cluster

    def cluster(config: SimConfig) -> Any:
        built.append(real(config))
        return built[-1]

    monkeypatch.setattr(provision_sim, "Cluster", cluster)
    rng = np.random.default_rng(0)
    n = 60
    requests = SimRequests(rng.integers(50, 400, n), rng.integers(20, 200, n), np.sort(rng.uniform(0, 8, n)))
    config = SimConfig(instances=3, profile="llama-2-7b-a30", policy="block", record_itl=False)
    settings = ProvisionSettings("preemptive", 10.0, 1, 3, cooldown_s=1.0)
    plan = SimProvisionPlan(1, 3, settings, startup_delay_s=2.0, forecast_horizon_s=20.0)
    out = simulate_provisioned(config, requests, plan)
    (c,) = built
    assert type(c.policy).__mro__[1] is Policy  # the block policy itself, not a wrapper around it
    for t in c.trackers:
        assert isinstance(t, InstanceTracker)
        assert not {"predict", "on_finished", "on_routed"} & set(vars(t))  # nothing replaced
    served = {r.instance for r in out.outcome.records}
    started = {f"sim-{i}" for i in range(3)}
    assert served <= started and "sim-0" in served
    assert all(r.e2e_s is not None for r in out.outcome.records)
