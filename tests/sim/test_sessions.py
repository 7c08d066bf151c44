"""Session workloads in the simulator: a turn arrives when the one before it finished plus a think time."""

from __future__ import annotations

import numpy as np
import pytest

from block.sim import SimRequests, simulate
from block.sim.workload import WorkloadSpec, requests_for
from block.workload import Sample
from block.workload.sessions import session_plan
from tests.sim.helpers import signature, small_config


def session_workload(sessions: int, turns: int, qps: float, think_s: float, seed: int = 0) -> SimRequests:
    rng = np.random.default_rng(seed)
    samples = []
    for s in range(sessions):
        prompt = int(rng.integers(20, 200))
        for k in range(turns):
            output = int(rng.integers(5, 120))
            samples.append(Sample("", prompt, output, session=s, turn=k))
            prompt += output + int(rng.integers(5, 60))  # the next turn resends this one and its answer
    plan = session_plan(samples, qps, seed=seed, think_time_s=think_s)
    prompts = np.array([s.prompt_tokens for s in samples], dtype=np.int64)
    outputs = np.array([s.output_tokens for s in samples], dtype=np.int64)
    return SimRequests(prompts, outputs, plan.not_before_s, sessions=plan)


@pytest.mark.parametrize("policy", ["round-robin", "block"])
def test_a_turn_arrives_after_its_predecessor_finished_plus_think_time(policy: str) -> None:
    reqs = session_workload(sessions=12, turns=4, qps=4.0, think_s=0.5)
    out = simulate(small_config(policy=policy, instances=2), reqs)
    recs = out.records
    assert all(r.ok for r in recs)
    plan = reqs.sessions
    assert plan is not None
    for i, j in enumerate(plan.next_turn.tolist()):
        if j >= 0:
            finished = recs[i].scheduled_s + recs[i].e2e_s
            assert recs[j].scheduled_s == pytest.approx(finished + plan.think_s[j], abs=1e-9)
    for i in plan.first_turns().tolist():
        assert recs[i].scheduled_s == plan.not_before_s[i]


@pytest.mark.parametrize("policy", ["round-robin", "block"])
def test_closed_loop_equals_an_open_loop_replay_of_the_same_arrivals(policy: str) -> None:
    """Replaying the arrivals the closed loop produced, known up front, gives the same run: the loop
    routed every released turn at its time, with every step before it complete and none after."""
    reqs = session_workload(sessions=10, turns=3, qps=8.0, think_s=0.3, seed=2)
    config = small_config(policy=policy, instances=2, noise=0.05, seed=3)
    closed = simulate(config, reqs)
    arrivals = np.array([r.scheduled_s for r in closed.records])
    order = np.argsort(arrivals, kind="stable")
    open_loop = SimRequests(reqs.prompt_tokens[order], reqs.output_tokens[order], arrivals[order])
    replay = simulate(config, open_loop)
    assert signature(replay) == [signature(closed)[i] for i in order]


def test_sharegpt_chat_runs_through_the_workload_spec() -> None:
    spec = WorkloadSpec("sharegpt-chat", num_requests=120, seed=0, think_time_s=2.0)
    reqs = requests_for(spec, 2.0)
    assert reqs.sessions is not None
    out = simulate(small_config(policy="round-robin", instances=2), reqs)
    assert sum(r.ok for r in out.records) == 120
    # Later turns came after their session's start; sessions start at the rate asked for.
    firsts = reqs.sessions.first_turns()
    assert len(firsts) < 120
    starts = reqs.arrival_s[firsts]
    assert np.all(np.diff(starts) >= 0)


def test_sessions_are_not_simulated_with_literal_polling() -> None:
    reqs = session_workload(sessions=2, turns=2, qps=1.0, think_s=0.1)
    with pytest.raises(ValueError, match="poll"):
        simulate(small_config(policy="block", refresh="poll"), reqs)
