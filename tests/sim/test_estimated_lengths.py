"""Planning with estimated lengths in the simulator: the router (policy, trackers, snapshots) sees the
plan, the replicas generate the true lengths, and runs stay deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from block.length import load_default_estimator
from block.sim import SimRequests, simulate
from block.sim.workload import WorkloadSpec, parse_lengths, requests_for
from tests.sim.helpers import signature, small_config, small_workload


def test_parse_lengths() -> None:
    assert parse_lengths("known") is None
    assert parse_lengths("estimated") == parse_lengths("median") == 0.5
    assert parse_lengths("quantile:0.9") == parse_lengths("q:0.9") == 0.9
    for bad in ("quantile:1", "quantile:x", "quantile:", "p90", ""):
        with pytest.raises(ValueError):
            parse_lengths(bad)
    with pytest.raises(ValueError):
        WorkloadSpec(lengths="sometimes")
    with pytest.raises(ValueError):
        WorkloadSpec(split="train")


def test_estimated_workload_plans_with_the_length_model() -> None:
    known = requests_for(WorkloadSpec("sharegpt", 60, seed=4, split="held-out"), 5.0)
    med = requests_for(WorkloadSpec("sharegpt", 60, seed=4, split="held-out", lengths="estimated"), 5.0)
    q90 = requests_for(WorkloadSpec("sharegpt", 60, seed=4, split="held-out", lengths="quantile:0.9"), 5.0)
    assert known.planned_tokens is None and med.planned_tokens is not None and q90.planned_tokens is not None
    # Same requests and arrivals: only the plan differs.
    for r in (med, q90):
        assert np.array_equal(r.prompt_tokens, known.prompt_tokens)
        assert np.array_equal(r.output_tokens, known.output_tokens)
        assert np.array_equal(r.arrival_s, known.arrival_s)
    assert (q90.planned_tokens >= med.planned_tokens).all() and (
        q90.planned_tokens > med.planned_tokens
    ).any()
    assert not np.array_equal(med.planned_tokens, known.output_tokens)

    # The plan is the estimator's prediction on each sample's prompt text (held-out prompts only).
    from block.length.split import is_held_out
    from block.sim.workload import _samples

    samples = _samples("sharegpt", 60, 4, "llama3", 4096, "held-out")
    assert all(is_held_out(s.prompt) for s in samples)
    direct = load_default_estimator().predict_many(
        [s.prompt for s in samples], [s.prompt_tokens for s in samples]
    )
    room = 4096 - np.array([s.prompt_tokens for s in samples])  # a free-length answer ends at the context
    assert np.array_equal(np.minimum(direct, room), med.planned_tokens)  # Poisson arrivals keep sample order


def test_router_plans_estimates_while_replicas_generate_the_truth() -> None:
    base = small_workload(150, qps=30.0, seed=3)
    planned = np.maximum(1, base.output_tokens // 3 + 7)  # deliberately wrong plans
    reqs = SimRequests(base.prompt_tokens, base.output_tokens, base.arrival_s, planned)
    seen: list[bool] = []

    def check(cluster, i, now, targets, choice) -> None:  # noqa: ANN001 - a DecisionHook
        # Every routed request's plan, as the instance reports it, is the estimate, not the truth.
        for rep in cluster.replicas:
            snap = rep.snapshot()
            for s in snap.running + snap.waiting:
                seen.append(s.expected_output_tokens == planned[int(s.id)])

    out = simulate(small_config(policy="block"), reqs, check)
    assert seen and all(seen)
    for rec, true, plan in zip(out.records, base.output_tokens.tolist(), planned.tolist(), strict=True):
        assert rec.ok and rec.output_tokens == true and rec.expected_output_tokens == plan
    # Deterministic, and the plan changes the block policy's choices.
    again = simulate(small_config(policy="block"), reqs)
    assert signature(again) == signature(out)
    truth = simulate(small_config(policy="block"), base)
    assert [r.instance for r in truth.records] != [r.instance for r in out.records]
