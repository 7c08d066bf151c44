"""Pinned requests and whole-cluster forks: the counterfactual the prediction experiment judges by."""

from __future__ import annotations

from block.experiments.counterfactual import fork_on
from block.sim.config import SimConfig
from block.sim.simulator import simulate
from block.sim.workload import WorkloadSpec, requests_for

CONFIG = SimConfig(instances=3, profile="llama-2-7b-a30", policy="block", seed=0, noise=0.03)


def _requests():
    return requests_for(WorkloadSpec("sharegpt", 120, "poisson", 1.0, 0), 9.0)


def test_a_pin_routes_the_request_and_leaves_the_rest_to_the_policy() -> None:
    reqs = _requests()
    plain = simulate(CONFIG, reqs).records
    i = 60
    other = next(k for k in range(3) if f"sim-{k}" != plain[i].instance)
    pinned = simulate(CONFIG, reqs, pins={i: other}).records
    assert pinned[i].instance == f"sim-{other}"
    # Up to the pinned arrival nothing differs: the run is deterministic until the decision.
    done_before = [k for k in range(i) if reqs.arrival_s[k] + plain[k].e2e_s < reqs.arrival_s[i]]
    assert done_before and all(pinned[k].e2e_s == plain[k].e2e_s for k in done_before)


def test_a_fork_on_the_chosen_instance_reproduces_the_run() -> None:
    reqs = _requests()
    plain = simulate(CONFIG, reqs).records
    i = 70
    chosen = int(plain[i].instance.removeprefix("sim-"))
    ttft, e2e = fork_on(CONFIG, reqs, i, chosen)
    assert (ttft, e2e) == (plain[i].ttft_s, plain[i].e2e_s)
    # A horizon too short to hold the request is doubled until it does: same answer.
    assert fork_on(CONFIG, reqs, i, chosen, horizon_s=0.01) == (ttft, e2e)
