"""`block profile fit` keeps the per-request overhead it measures in the profile it writes, so the
emulator can apply it (it used to be only a line of text in the profile's assumptions)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from block.profiles.profile import Profile
from block.realengine.profile_fit import Observation, ProbePlan, fit, overhead_line
from tests.profiles.synthetic_probes import synthetic_observations, truth

OVERHEAD = 0.0187


@pytest.mark.parametrize("client_clock", [False, True])
def test_fitted_profile_carries_the_request_overhead(client_clock: bool) -> None:
    obs = synthetic_observations(truth(), ProbePlan(), OVERHEAD, client_clock)
    measured = None if client_clock else OVERHEAD  # the engine clock measures it directly
    result = fit(obs, ProbePlan(), "fitted", "m", "g", request_overhead_s=measured)
    assert result.profile.request_overhead_s == pytest.approx(OVERHEAD, rel=1e-2)
    assert Profile.from_dict(result.profile.to_dict()).request_overhead_s == result.profile.request_overhead_s


def test_a_negative_measured_overhead_is_clamped() -> None:
    # TTFT minus prefill time can come out slightly negative on a noisy host: the profile keeps 0.
    obs = synthetic_observations(truth(), ProbePlan(), OVERHEAD, client_clock=False)
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
    p = replace(truth(), request_overhead_s=0.01, request_overhead_per_token_s=2e-6)
    assert p.request_overhead(1000) == pytest.approx(0.012)
    again = Profile.from_dict(p.to_dict())
    assert again.request_overhead_per_token_s == 2e-6
    assert "request_overhead_per_token_s" not in truth().to_dict()
