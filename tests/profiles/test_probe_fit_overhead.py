"""`block profile fit` keeps the per-request overhead it measures in the profile it writes, so the
emulator can apply it (it used to be only a line of text in the profile's assumptions)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from block.profiles.profile import Profile
from block.realengine.profile_fit import (
    Observation,
    ProbePlan,
    fit,
    itl_terms,
    knots_for,
    overhead_line,
    prefill_terms,
)

OVERHEAD = 0.0187


def _truth() -> Profile:
    plan = ProbePlan()
    xs = knots_for(plan)
    ys = [0.0 if x <= plan.flat_tokens else 2e-5 * x for x in xs]
    return Profile("truth", "m", "g", 0.004, 1e-4, 6e-7, 6e-8, tuple(xs), tuple(ys))


def _observations(p: Profile, client_clock: bool) -> list[Observation]:
    plan = ProbePlan()
    obs = []
    for prompt in plan.prefill_prompts:
        kind, api = ("ttft", 1.0) if client_clock else ("prefill", 0.0)
        obs.append(Observation(kind, 0.0, prefill_terms(prompt, plan.max_num_batched_tokens), api=api))
    for c in (1, 4, 16, 48):
        for ctx in (16, 1024):
            obs.append(Observation("itl", 0.0, itl_terms(c, ctx, 64, plan)))
    for o in obs:
        o.seconds = sum(w * p.step_time(s) for s, w in o.terms) + o.api * OVERHEAD
    return obs


@pytest.mark.parametrize("client_clock", [False, True])
def test_fitted_profile_carries_the_request_overhead(client_clock: bool) -> None:
    obs = _observations(_truth(), client_clock)
    measured = None if client_clock else OVERHEAD  # the engine clock measures it directly
    result = fit(obs, ProbePlan(), "fitted", "m", "g", request_overhead_s=measured)
    assert result.profile.request_overhead_s == pytest.approx(OVERHEAD, rel=1e-2)
    assert Profile.from_dict(result.profile.to_dict()).request_overhead_s == result.profile.request_overhead_s


def test_a_negative_measured_overhead_is_clamped() -> None:
    # TTFT minus prefill time can come out slightly negative on a noisy host: the profile keeps 0.
    obs = _observations(_truth(), client_clock=False)
    result = fit(obs, ProbePlan(), "fitted", "m", "g", request_overhead_s=-0.001)
    assert result.profile.request_overhead_s == 0.0


def test_the_fastest_repeat_is_kept() -> None:
    # Other tenants of a shared host only ever add time; a repeat too short to measure is NaN.
    from block.realengine.profile_fit import _fastest_obs

    reps = [Observation("itl", s) for s in (0.0061, 0.0046, float("nan"), 0.0120)]
    best = _fastest_obs(reps)
    assert best is not None and best.seconds == 0.0046
    assert _fastest_obs([Observation("window", float("nan"))]) is None


def test_the_overhead_line_takes_the_fastest_repeat_per_prompt_length() -> None:
    fixed, per_token = 0.008, 4e-6
    samples = []
    for p in (8, 64, 512, 2048):
        truth = fixed + per_token * p
        samples += [(p, truth + 0.003), (p, truth), (p, truth + 0.02)]  # contention only adds time
    got = overhead_line(samples)
    assert got == pytest.approx((fixed, per_token), rel=1e-6)
    assert overhead_line([(100, 0.01), (100, 0.02)]) == (0.01, 0.0)  # one length: a constant
    # Falling with the prompt is noise, not a negative cost: the per-token term stays at 0.
    assert overhead_line([(8, 0.02), (2048, 0.01)])[1] == pytest.approx(0.0, abs=1e-12)


def test_a_profile_charges_its_overhead_per_request_and_per_prompt_token() -> None:
    p = replace(_truth(), request_overhead_s=0.01, request_overhead_per_token_s=2e-6)
    assert p.request_overhead(1000) == pytest.approx(0.012)
    again = Profile.from_dict(p.to_dict())
    assert again.request_overhead_per_token_s == 2e-6
    assert "request_overhead_per_token_s" not in _truth().to_dict()
