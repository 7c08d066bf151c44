"""Model error in the simulator: replicas really run at their true speed, step by step, while the router
keeps forecasting with the nominal profile."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from block.profiles import load_profile
from block.profiles.model_error import ModelError
from block.replica import Replica, Request
from block.sim import SimRequests, simulate
from tests.sim.helpers import signature, small_config, small_workload


def test_static_error_makes_each_replica_run_at_its_own_factor() -> None:
    """Everything arrives at once and round robin deals it out the same way with and without the error,
    so each replica runs the very same batches: its latencies scale by exactly its factor."""
    n = 4
    reqs = small_workload(80, qps=20)
    burst = SimRequests(reqs.prompt_tokens, reqs.output_tokens, np.zeros(len(reqs)))
    kw = dict(instances=n, noise=0.0, stall_probability=0.0, policy="round-robin", seed=3)
    nominal = simulate(small_config(**kw), burst)
    skewed = simulate(small_config(**kw, model_error="static:0.3"), burst)
    factors = [ModelError("static", 0.3, seed=3).factor(r)(0.0) for r in range(n)]
    ratios = []
    for r in range(n):
        a = [x.e2e_s for x in nominal.records if x.instance == f"sim-{r}"]
        b = [x.e2e_s for x in skewed.records if x.instance == f"sim-{r}"]
        ratio = np.mean(np.array(b) / np.array(a))
        assert ratio == pytest.approx(factors[r], rel=1e-9)
        ratios.append(ratio)
    assert min(ratios) < 0.95 and max(ratios) > 1.05  # slower and faster replicas in one fleet


def test_forecasts_keep_the_nominal_profile() -> None:
    """The router is not told: on one replica 20%+ slower than its profile, requests finish that much
    later than block forecast them, while without the error forecast and outcome agree."""
    from block.sim.simulator import Cluster

    reqs = small_workload(100, qps=0.2)  # mostly alone: no later arrivals to blur the forecasts
    kw = dict(policy="block", noise=0.0, stall_probability=0.0, instances=1, seed=2)
    factor = ModelError("static", 0.3, seed=2).factor(0)(0.0)
    assert factor > 1.2  # this seed's replica is slow

    def late_by(model_error: str) -> float:
        forecast: dict[int, float] = {}

        def hook(cluster, i, now, candidates, choice) -> None:  # noqa: ANN001
            forecast[i] = candidates.forecast_for(choice.instance).e2e_s

        cluster = Cluster(small_config(**kw, model_error=model_error))
        assert cluster.trackers[0].profile.name == "llama-2-7b-a30"
        out = cluster.run(reqs, hook)
        return float(np.median([r.e2e_s / forecast[i] for i, r in enumerate(out.records)]))

    assert late_by("") == pytest.approx(1.0, abs=0.03)
    assert late_by("static:0.3") == pytest.approx(factor, rel=0.03)


def test_no_error_is_the_nominal_run_bit_for_bit() -> None:
    reqs = small_workload(150, qps=15)
    nominal = signature(simulate(small_config(policy="block"), reqs))
    for zero in ("static:0", "drift:0", "correlated:0", "none"):
        assert signature(simulate(small_config(policy="block", model_error=zero), reqs)) == nominal


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(["static", "drift", "correlated"]),
    policy=st.sampled_from(["round-robin", "llumnix", "block"]),  # lazy and eager schedules
    noise=st.sampled_from([0.0, 0.05]),
)
def test_skipping_decode_stretches_stays_exact_with_model_error(
    seed: int, kind: str, policy: str, noise: float
) -> None:
    """A stretch skipped in one go gives each step the factor at its own start, as stepping does."""
    reqs = small_workload(120, qps=6, seed=seed, max_prompt=300, max_output=400)  # ~20 s: stretches cross
    kw = dict(policy=policy, noise=noise, seed=seed, instances=2, model_error=f"{kind}:0.5")
    fast = simulate(small_config(**kw, fast_forward=True), reqs)
    slow = simulate(small_config(**kw, fast_forward=False), reqs)
    assert signature(fast) == signature(slow)
    assert fast.stats["steps"] == slow.stats["steps"]


def test_a_single_replica_steps_at_the_true_factor_of_each_steps_start() -> None:
    """Against one Replica driven step by step, each step's time the profile's x the factor at its start."""
    reqs = small_workload(100, qps=4, max_output=300)
    cfg = small_config(instances=1, noise=0.0, stall_probability=0.0, model_error="correlated:0.5", seed=2)
    out = simulate(cfg, reqs)
    profile = load_profile(cfg.profile)
    rep = Replica(cfg.replica_config(profile), profile)
    factor = ModelError("correlated", 0.5, seed=2).factor(0)
    arrivals = reqs.arrival_s.tolist()
    objs = [
        Request(str(i), p, o, a, o)
        for i, (p, o, a) in enumerate(
            zip(reqs.prompt_tokens.tolist(), reqs.output_tokens.tolist(), arrivals, strict=True)
        )
    ]
    j = 0
    slowed_steps = 0
    while j < len(objs) or rep.has_work:
        if not rep.has_work:
            rep.advance_to(arrivals[j])
        while j < len(objs) and arrivals[j] <= rep.now:
            rep.add(objs[j])
            j += 1
        slowed_steps += factor(rep.now) > 1
        rep.step(lambda d: d * factor(rep.now))
    expected = [(q.first_token_time - q.arrival_time, q.finish_time - q.arrival_time) for q in objs]
    assert [(r.ttft_s, r.e2e_s) for r in out.records] == expected
    assert slowed_steps > 100  # the run crossed slowdowns


def test_a_bad_model_error_is_refused_with_its_reason() -> None:
    with pytest.raises(ValueError, match="write KIND:E"):
        small_config(model_error="fast")
