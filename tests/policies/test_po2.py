"""`po2`: two random instances, the one with fewer requests in flight (sglang-router's power_of_two)."""

from __future__ import annotations

from collections import Counter

from block.policies import POLICIES, make_policy
from tests.policies.test_policies import REQ, View


def picks(policy_seed: int, views: list[View], n: int) -> Counter[str]:
    p = make_policy("po2", seed=policy_seed)
    return Counter(p.choose(REQ, views, 0.0).instance.id for _ in range(n))


def test_po2_is_registered_and_reads_only_the_routers_counts() -> None:
    cls = POLICIES["po2"]
    assert not cls.wants_forecasts and not cls.needs_snapshots and cls.reads_state


def test_the_busiest_instance_never_wins_a_pair() -> None:
    views = [View("a", in_flight=0), View("b", in_flight=5), View("c", in_flight=10)]
    got = picks(0, views, 600)
    assert got["c"] == 0  # it loses against either partner
    # a wins both pairs it is in (2 of 3), b only the pair with c (1 of 3)
    assert 330 <= got["a"] <= 470 and 130 <= got["b"] <= 270


def test_fewer_in_flight_wins_between_two() -> None:
    views = [View("a", in_flight=3), View("b", in_flight=1)]
    assert picks(1, views, 50) == Counter({"b": 50})


def test_ties_are_broken_at_random() -> None:
    views = [View("a", in_flight=2), View("b", in_flight=2)]
    got = picks(2, views, 400)
    assert 140 <= got["a"] <= 260 and got["a"] + got["b"] == 400


def test_po2_is_seeded_and_works_with_one_instance() -> None:
    views = [View(str(i), in_flight=i % 3) for i in range(6)]
    assert picks(7, views, 50) == picks(7, views, 50)
    assert picks(7, [View("only", in_flight=9)], 3) == Counter({"only": 3})
