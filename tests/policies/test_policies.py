"""Each policy's rule on hand-made instance views."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from block.policies import POLICIES, Candidates, Forecast, Policy, RoutingRequest, make_policy, register
from block.policies.predictive import on_grid

REQ = RoutingRequest(prompt_tokens=100, expected_output_tokens=50)


@dataclass
class View:
    id: str
    in_flight: int = 0
    running: int = 0
    waiting: int = 0
    free_blocks: int = 100
    num_gpu_blocks: int = 100
    block_size: int = 16
    waiting_prompt_tokens: int = 0
    forecast: Forecast | None = None
    routed_at: list[float] = field(default_factory=list)

    def routed_in_last(self, seconds: float, now: float) -> int:
        return sum(1 for t in self.routed_at if now - seconds < t <= now)


def cands(views: list[View]) -> Candidates:
    """One decision's candidates, each with the forecast its hand-made view names."""
    return Candidates(views, [v.forecast for v in views])


def fc(e2e: float, added: float = 0.0) -> Forecast:
    return Forecast(ttft_s=0.1, e2e_s=e2e, queue_delay_s=0.0, added_delay_s=added)


def test_all_architecture_policies_are_registered() -> None:
    expected = {
        "block",
        "block-po2",
        "llumnix",
        "infaas",
        "min-qpm",
        "least-requests",
        "round-robin",
        "random",
    }
    assert expected <= set(POLICIES)


def test_unknown_policy_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        make_policy("nope")


def test_round_robin_cycles() -> None:
    views = [View("a"), View("b"), View("c")]
    p = make_policy("round-robin")
    assert [p.choose(REQ, cands(views), 0).instance.id for _ in range(4)] == ["a", "b", "c", "a"]


def test_random_is_seeded() -> None:
    views = [View(str(i)) for i in range(10)]
    picks = [
        [make_policy("random", seed=7).choose(REQ, cands(views), 0).instance.id for _ in range(1)]
        for _ in range(2)
    ]
    assert picks[0] == picks[1]


def test_least_requests_picks_fewest_in_flight() -> None:
    views = [View("a", in_flight=3), View("b", in_flight=1), View("c", in_flight=2)]
    assert make_policy("least-requests").choose(REQ, cands(views), 0).instance.id == "b"


def test_min_qpm_counts_only_the_last_minute() -> None:
    views = [View("a", routed_at=[1.0, 2.0, 3.0]), View("b", routed_at=[70.0, 80.0])]
    assert (
        make_policy("min-qpm").choose(REQ, cands(views), now=100.0).instance.id == "a"
    )  # a's were > 60 s ago


def test_llumnix_reserves_blocks_for_waiting_prompts() -> None:
    # a: (50 - 0) / 5 = 10; b: (90 - 64 blocks for 1024 waiting tokens) / 2 = 13; c: (40 - 0) / 1 = 40
    views = [
        View("a", free_blocks=50, running=5),
        View("b", free_blocks=90, running=2, waiting_prompt_tokens=1024),
        View("c", free_blocks=40, running=1),
    ]
    assert make_policy("llumnix").choose(REQ, cands(views), 0).instance.id == "c"
    views[2].waiting_prompt_tokens = 16 * 39  # c: (40 - 39) / 1 = 1
    assert make_policy("llumnix").choose(REQ, cands(views), 0).instance.id == "b"


def test_infaas_ignores_waiting_prompts() -> None:
    views = [
        View("a", free_blocks=50, running=5),
        View("b", free_blocks=90, running=2, waiting_prompt_tokens=4096),
    ]
    assert make_policy("infaas").choose(REQ, cands(views), 0).instance.id == "b"


def test_block_picks_the_earliest_forecast_finish() -> None:
    views = [
        View("a", forecast=fc(3.0)),
        View("b", forecast=fc(1.5), in_flight=9),
        View("c", forecast=fc(2.0)),
    ]
    choice = make_policy("block").choose(REQ, cands(views), 0)
    assert choice.instance.id == "b" and not choice.fallback


def test_block_can_weigh_the_delay_caused_to_others() -> None:
    views = [View("a", forecast=fc(1.0, added=5.0)), View("b", forecast=fc(1.5, added=0.0))]
    assert make_policy("block").choose(REQ, cands(views), 0).instance.id == "a"
    assert make_policy("block", harm_weight=0.5).choose(REQ, cands(views), 0).instance.id == "b"


def test_block_falls_back_to_least_requests_when_a_forecast_is_missing() -> None:
    views = [View("a", forecast=fc(1.0), in_flight=5), View("b", forecast=None, in_flight=1)]
    choice = make_policy("block").choose(REQ, cands(views), 0)
    assert choice.fallback and choice.instance.id == "b"


def test_block_po2_forecasts_two_random_instances() -> None:
    views = [View(str(i)) for i in range(8)]
    p = make_policy("block-po2", seed=3)
    assert p.wants_forecasts
    targets = p.forecast_targets(views)
    assert len(targets) == 2 and len({v.id for v in targets}) == 2


def test_adding_a_policy_is_one_class() -> None:
    @register
    class Last(Policy):
        name = "test-last"

        def choose(self, request, instances, now):  # noqa: ANN001, ANN202
            from block.policies import Choice

            return Choice(instances[-1])

    try:
        assert make_policy("test-last").choose(REQ, cands([View("a"), View("z")]), 0).instance.id == "z"
    finally:
        POLICIES.pop("test-last")


@dataclass
class CalibratedView(View):
    decode_scale: float = 1.0  # the calibrated decode factor its forecasts were made with


def test_block_counts_the_requests_own_decode_at_the_profiles_speed() -> None:
    """A calibrated fast decoder's shorter decode does not buy the request a longer queue there."""
    policy = make_policy("block")
    # fast: 2 s queue, 4 s of decode at 0.5x the step time (8 s at the profile's); slow: no queue, 10 s
    # of decode at 1.25x (8 s at the profile's)
    fast = CalibratedView("fast", forecast=Forecast(2.0, 6.0, 2.0, 0.0), decode_scale=0.5)
    slow = CalibratedView("slow", forecast=Forecast(0.1, 10.1, 0.0, 0.0), decode_scale=1.25)
    assert policy.choose(REQ, cands([fast, slow]), 0.0).instance.id == "slow"
    uncalibrated = [View("fast", forecast=fast.forecast), View("slow", forecast=slow.forecast)]
    assert policy.choose(REQ, cands(uncalibrated), 0.0).instance.id == "fast"  # the plain E2E
    # the pruning floor stays below the score whatever the scale
    for v in (fast, slow):
        assert v.forecast is not None
        floor = policy.score_floor(v.forecast.e2e_s, v)
        assert floor is not None and floor <= policy.forecast_score(v.forecast, v)


@given(st.integers(1, 10**13), st.integers(-4, 4))
def test_scores_on_the_grid_absorb_last_bit_differences(nanoseconds: int, bits: int) -> None:
    """A forecast read off a recorded run and the same forecast replayed differ in their last bits. A
    profile's round coefficients put forecasts on whole nanoseconds, where both must land on the same
    point of the grid, whichever side of it they fall (a property test found a read and a replay of
    one forecast split across it when the grid cut instead of rounding); and the grid keeps order."""
    exact = nanoseconds / 1e9
    off = exact
    for _ in range(abs(bits)):
        off = math.nextafter(off, math.inf if bits > 0 else 0.0)
    assert on_grid(off) == on_grid(exact) == exact
    assert on_grid(min(off, exact)) <= on_grid(max(off, exact))
