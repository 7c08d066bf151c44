"""The peers' cache-aware baselines on hand-made views: SGLang's cache-aware, llm-d's prefix + load
scorers, Dynamo's KV overlap cost, each with its published defaults."""

from __future__ import annotations

from dataclasses import dataclass

from block.policies import Candidates, RoutingRequest, make_policy
from block.policies.cache_aware import match_rate
from block.policies.predictive import FORECAST_E2E_ERROR
from tests.policies.test_policies import View, fc

# 20 blocks of 16 tokens: a 320-token prompt with a prefix identity
REQ = RoutingRequest(prompt_tokens=320, expected_output_tokens=50, prefix_hashes=tuple(range(20)))


@dataclass
class CachedView(View):
    cached: int = 0  # leading blocks of any request's prompt held here
    sharers: int = 0  # requests in flight here holding the prompt's first block

    def cached_prefix_blocks(self, request: RoutingRequest) -> int:
        return min(self.cached, len(request.prefix_hashes))

    def prefix_sharers(self, request: RoutingRequest) -> int:
        return self.sharers


def pick(policy: str, views: list[CachedView], request: RoutingRequest = REQ, **options: object) -> str:
    return make_policy(policy, seed=0, **options).choose(request, Candidates(views), 0.0).instance.id


# -- cache-aware (SGLang) -----------------------------------------------------------------------------


def test_cache_aware_defaults_are_sglangs() -> None:
    p = make_policy("cache-aware")
    assert (p.cache_threshold, p.balance_abs_threshold, p.balance_rel_threshold) == (0.3, 64, 1.5)


def test_cache_aware_follows_the_longest_prefix_above_the_threshold() -> None:
    views = [CachedView("a", in_flight=5, cached=2), CachedView("b", in_flight=9, cached=8), CachedView("c")]
    assert match_rate(REQ, 8) == 0.4
    assert pick("cache-aware", views) == "b"  # 40% cached > 30%, though it is the busiest


def test_cache_aware_below_the_threshold_takes_the_most_room() -> None:
    views = [
        CachedView("a", cached=6, free_blocks=10),  # 30%: not above the threshold
        CachedView("b", free_blocks=90),
        CachedView("c", free_blocks=50),
    ]
    assert pick("cache-aware", views) == "b"
    assert pick("cache-aware", views, cache_threshold=0.2) == "a"


def test_cache_aware_balances_when_both_imbalance_thresholds_are_crossed() -> None:
    hot = [CachedView("a", in_flight=100, cached=20), CachedView("b", in_flight=30)]
    assert pick("cache-aware", hot) == "b"  # 70 > 64 and 100 > 1.5 x 30: shortest queue
    relative_only = [CachedView("a", in_flight=60, cached=20), CachedView("b", in_flight=10)]
    assert pick("cache-aware", relative_only) == "a"  # 50 <= 64: still balanced, the cache wins
    absolute_only = [CachedView("a", in_flight=200, cached=20), CachedView("b", in_flight=135)]
    assert pick("cache-aware", absolute_only) == "a"  # 200 <= 1.5 x 135


def test_cache_aware_without_a_prefix_identity_takes_the_most_room() -> None:
    plain = RoutingRequest(prompt_tokens=320, expected_output_tokens=50)
    views = [CachedView("a", cached=20, free_blocks=10), CachedView("b", free_blocks=20)]
    assert pick("cache-aware", views, plain) == "b"


# -- prefix-load (llm-d) ------------------------------------------------------------------------------


def test_prefix_load_defaults_are_llm_ds() -> None:
    p = make_policy("prefix-load")
    assert (p.prefix_weight, p.kv_cache_weight, p.queue_weight) == (3.0, 2.0, 2.0)


def test_prefix_load_weighs_the_cache_against_the_queue_and_kv_use() -> None:
    # score = 3 x cached share + 2 x free KV share + 2 x (longest queue - own) / (longest - shortest)
    views = [
        CachedView("a", waiting=4, free_blocks=50, cached=20),
        CachedView("b", waiting=0, free_blocks=90),
    ]
    assert pick("prefix-load", views) == "a"  # 3 + 1 + 0 = 4 > 0 + 1.8 + 2 = 3.8
    views[1].free_blocks = 100
    views[0].free_blocks = 40
    assert pick("prefix-load", views) == "b"  # 3 + 0.8 + 0 = 3.8 < 0 + 2 + 2 = 4


def test_prefix_load_scores_a_partial_prefix_by_its_share_of_the_blocks() -> None:
    views = [CachedView("a", cached=5), CachedView("b", cached=10), CachedView("c", cached=15)]
    assert pick("prefix-load", views) == "c"


def test_prefix_load_equal_queues_score_alike() -> None:
    views = [CachedView("a", waiting=3, free_blocks=60), CachedView("b", waiting=3, free_blocks=70)]
    assert pick("prefix-load", views) == "b"  # the queues tie (1 each): the KV score decides


def test_prefix_load_ties_are_drawn_from_the_seeded_stream() -> None:
    views = [CachedView(str(i)) for i in range(8)]
    picks = {pick("prefix-load", views) for _ in range(3)}
    assert len(picks) == 1  # seeded: the same draw every time
    p = make_policy("prefix-load", seed=3)
    assert len({p.choose(REQ, Candidates(views), 0.0).instance.id for _ in range(40)}) > 1


# -- kv-overlap (Dynamo) ------------------------------------------------------------------------------


def test_kv_overlap_cost_is_uncached_prefill_plus_active_blocks() -> None:
    p = make_policy("kv-overlap")
    assert p.overlap_score_weight == 1.0
    v = CachedView("a", waiting_prompt_tokens=160, free_blocks=70, cached=5)
    # prefill: (160 + 320 - 80) / 16 = 25; active: 30 in use + 20 of this prompt = 50
    assert p.cost(REQ, v) == 75.0


def test_kv_overlap_trades_cached_blocks_against_load() -> None:
    views = [
        CachedView("warm", free_blocks=60, cached=20),  # 0 + 40 + 20 = 60
        CachedView("cold", free_blocks=90),  # 20 + 10 + 20 = 50
    ]
    assert pick("kv-overlap", views) == "cold"
    views[0].free_blocks = 80  # 0 + 20 + 20 = 40
    assert pick("kv-overlap", views) == "warm"
    assert pick("kv-overlap", views, overlap_score_weight=0.0) == "cold"  # weight 0: load only


def test_kv_overlap_counts_the_prefill_queue() -> None:
    views = [CachedView("a", waiting_prompt_tokens=1600), CachedView("b")]
    assert pick("kv-overlap", views) == "b"


# -- block: cache affinity among forecasts equal within the forecast's error ---------------------------


def block_pick(views: list[CachedView], **options: object) -> str:
    policy = make_policy("block", **options)
    return policy.choose(REQ, Candidates(views, [v.forecast for v in views]), 0.0).instance.id


def test_block_prefers_the_cached_prefix_among_forecasts_within_the_error() -> None:
    tol = FORECAST_E2E_ERROR
    views = [
        CachedView("a", forecast=fc(10.0)),
        CachedView("b", cached=8, forecast=fc(10.0 * (1 + tol) - 1e-6)),
    ]
    assert block_pick(views) == "b"  # within the error: the cache decides
    assert block_pick(views, affinity_tolerance=0.0) == "a"  # the forecast alone, as before
    views[1].forecast = fc(10.0 * (1 + tol) + 1e-3)
    assert block_pick(views) == "a"  # beyond the error: the forecast decides
    no_identity = RoutingRequest(prompt_tokens=320, expected_output_tokens=50)
    near = [CachedView("a", forecast=fc(10.0)), CachedView("b", cached=8, forecast=fc(10.1))]
    policy = make_policy("block")
    assert policy.choose(no_identity, Candidates(near, [v.forecast for v in near]), 0.0).instance.id == "a"


def test_block_joins_the_copy_most_requests_share_among_equal_caches() -> None:
    views = [
        CachedView("a", cached=20, sharers=1, forecast=fc(10.0)),
        CachedView("b", cached=20, sharers=6, forecast=fc(10.5)),
        CachedView("c", cached=8, sharers=9, forecast=fc(10.0)),
    ]
    assert block_pick(views) == "b"  # the longest prefix first, then the copy most in flight share
    views[1].forecast = fc(10.0 * (1 + FORECAST_E2E_ERROR) + 1e-3)
    assert block_pick(views) == "a"  # beyond the error it is not a candidate


def test_block_floor_never_prunes_an_instance_within_the_error() -> None:
    policy = make_policy("block")
    best = policy.forecast_score(fc(10.0), CachedView("a"))
    # a target whose e2e floor is within the error of the best forecast must still be forecast
    assert policy.score_floor(10.0 * (1 + FORECAST_E2E_ERROR) - 1e-6, CachedView("b")) < best
    assert not policy.score_floor(10.0 * (1 + FORECAST_E2E_ERROR) + 1e-3, CachedView("b")) < best
    # a request with no prefix identity is chosen by the forecast alone: the floor needs no allowance
    plain = RoutingRequest(prompt_tokens=320, expected_output_tokens=50)
    assert not policy.score_floor(10.0 + 1e-3, CachedView("b"), plain) < best
    assert policy.score_floor(10.0 - 1e-3, CachedView("b"), plain) < best


def test_block_floor_for_a_request_allows_the_error_only_where_some_of_it_is_cached() -> None:
    """An instance with none of the request cached wins only with the best score: its floor key needs
    no allowance for the forecast's error (so a decision forecasts fewer instances)."""
    policy = make_policy("block")
    best = policy.forecast_score(fc(10.0), CachedView("a"))
    within = 10.0 * (1 + FORECAST_E2E_ERROR) - 1e-6
    no_identity = RoutingRequest(prompt_tokens=320, expected_output_tokens=50)
    assert not policy.score_floor(within, CachedView("b"), REQ) < best  # nothing of REQ cached there
    assert not policy.score_floor(within, CachedView("b", cached=8), no_identity) < best
    assert policy.score_floor(within, CachedView("b", cached=8), REQ) < best  # may be near: forecast it
