"""Probe observations computed from a known profile, for testing that the fit recovers it."""

from __future__ import annotations

from block.profiles.profile import Profile
from block.realengine.profile_fit import Observation, ProbePlan, itl_terms, knots_for, prefill_terms


def truth() -> Profile:
    """A profile with every term non-zero, on the knots the fit uses."""
    plan = ProbePlan()
    xs = knots_for(plan)
    ys = [0.0 if x <= plan.flat_tokens else 2e-5 * x for x in xs]
    return Profile("truth", "m", "g", 0.003, 1e-4, 5e-8, 1e-8, tuple(xs), tuple(ys))


def predicted(p: Profile, o: Observation, overhead: float) -> float:
    return sum(w * p.step_time(shape) for shape, w in o.terms) + o.api * overhead


def synthetic_observations(
    p: Profile, plan: ProbePlan, overhead: float, client_clock: bool
) -> list[Observation]:
    """Prefill probes (client TTFT with the overhead, or the engine's prefill time) and decode probes."""
    obs = []
    for prompt in plan.prefill_prompts:
        kind, api = ("ttft", 1.0) if client_clock else ("prefill", 0.0)
        obs.append(Observation(kind, 0.0, prefill_terms(prompt, plan.max_num_batched_tokens), api=api))
    for c in (1, 4, 16, 48):
        for ctx in (16, 1024):
            obs.append(Observation("itl", 0.0, itl_terms(c, ctx, 64, plan)))
    for o in obs:
        o.seconds = predicted(p, o, overhead)
    return obs
