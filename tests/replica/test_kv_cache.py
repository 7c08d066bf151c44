"""KVCache: the named operations the scheduler uses, on counts of blocks."""

from __future__ import annotations

from block.replica import KVCache, Request


def test_allocate_append_and_free_account_for_blocks() -> None:
    kv = KVCache(num_blocks=4, block_size=16)
    a = Request("a", prompt_tokens=20, output_tokens=5)
    assert kv.blocks_needed(a, 20) == 2 and kv.can_allocate(a, 20)
    assert kv.allocate(a, 20)
    assert (a.num_blocks, kv.free_blocks) == (2, 2)
    a.num_computed_tokens = 20
    assert kv.blocks_needed(a, 1) == 0 and kv.append(a, 1)  # token 21 fits in the second block
    assert kv.free_blocks == 2
    a.num_computed_tokens = 32
    assert kv.append(a, 1) and (a.num_blocks, kv.free_blocks) == (3, 1)  # token 33 opens a third
    kv.free(a)
    assert (a.num_blocks, kv.free_blocks, kv.used_blocks) == (0, 4, 0)


def test_a_failed_allocation_takes_nothing() -> None:
    kv = KVCache(num_blocks=2, block_size=4)
    a, b = Request("a", 8, 1), Request("b", 5, 1)
    assert kv.allocate(a, 8) and kv.free_blocks == 0
    assert not kv.can_allocate(b, 5)
    assert not kv.allocate(b, 5) and b.num_blocks == 0 and kv.free_blocks == 0


def test_demand_and_append_all_match_one_append_each() -> None:
    one, many = KVCache(100, 4), KVCache(100, 4)
    reqs = {}
    for name, kv in (("one", one), ("many", many)):
        reqs[name] = [Request(f"{name}{c}", 30, 20, num_computed_tokens=c) for c in (3, 4, 5, 8, 13)]
        for r in reqs[name]:
            kv.adopt(r)
    demand = many.demand(reqs["many"], 6)
    assert demand == sum(one.blocks_needed(r, 6) for r in reqs["one"])
    for r in reqs["one"]:
        assert one.append(r, 6)
    many.append_all(reqs["many"], 6)
    assert many.free_blocks == one.free_blocks == 100 - sum(r.num_blocks for r in reqs["one"])
    assert [r.num_blocks for r in reqs["many"]] == [r.num_blocks for r in reqs["one"]]
    assert one.free_blocks == 100 - sum(-(-c // 4) for c in (3, 4, 5, 8, 13)) - demand


def test_fits_is_about_an_empty_cache() -> None:
    kv = KVCache(num_blocks=3, block_size=16)
    assert kv.fits(48) and not kv.fits(49)
