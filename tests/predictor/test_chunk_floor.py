"""What a prompt's chunks add through the linear layers (chunk_floor.py): never more than they add, on
any sequence of steps they may join, and exactly the least of those where it is tabled."""

from __future__ import annotations

from itertools import accumulate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import block.predictor.chunk_floor as chunk_floor
from block.predictor.chunk_floor import ChunkFloor


@st.composite
def tables(draw, most: int = 12) -> tuple[list[float], int]:
    """A layers' time that never falls with more tokens (linear[0] = 0), and a step's token budget."""
    budget = draw(st.integers(1, most))
    steps = draw(st.lists(st.floats(0.0, 1.0), min_size=budget, max_size=budget))
    return [0.0, *accumulate(steps, initial=draw(st.floats(0.1, 2.0)))][: budget + 1], budget


def added(linear: list[float], budget: int, tokens: int, others: list[int]) -> float:
    """What a prompt of `tokens` adds through the layers when the steps it joins have `others` tokens of
    the others in turn (0: alone there, counted at the least step), each chunk all the budget left."""
    least = min(linear[1:])
    total, left, s = 0.0, tokens, 0
    while left:
        t = others[s % len(others)]
        k = min(left, budget - t)
        total += linear[t + k] - (linear[t] if t else least)
        left -= k
        s += 1
    return total


@settings(max_examples=400, deadline=None)
@given(tables(), st.integers(1, 60), st.sampled_from([chunk_floor.MAX_TOKENS_TABLED, 8]), st.data())
def test_never_more_than_the_chunks_add(table, tokens, tabled, data) -> None:
    """Tabled, and past the table (here from 8 tokens on: what 8 tokens add)."""
    linear, budget = table
    others = data.draw(st.lists(st.integers(0, budget - 1), min_size=1, max_size=6))
    saved, chunk_floor.MAX_TOKENS_TABLED = chunk_floor.MAX_TOKENS_TABLED, tabled
    try:
        floor = ChunkFloor(linear, budget, rising=True, scale=1.0)
        assert floor.adds(tokens) <= added(linear, budget, tokens, others) + 1e-12
    finally:
        chunk_floor.MAX_TOKENS_TABLED = saved


@settings(max_examples=100, deadline=None)
@given(tables(most=6), st.integers(1, 4))
def test_the_least_over_every_sequence(table, tokens) -> None:
    """Brute force over every sequence of the others' tokens, up to one chunk per token."""
    linear, budget = table
    best = min(added(linear, budget, tokens, list(seq)) for seq in _sequences(budget, tokens))
    assert ChunkFloor(linear, budget, rising=True, scale=1.0).adds(tokens) == pytest.approx(best, abs=1e-12)


def _sequences(budget: int, length: int) -> list[tuple[int, ...]]:
    seqs: list[tuple[int, ...]] = [()]
    for _ in range(length):
        seqs = [(*s, t) for s in seqs for t in range(budget)]
    return seqs


def test_nothing_where_a_step_may_get_shorter_and_scaled_otherwise() -> None:
    linear = [0.0, 1.0, 2.0, 4.0, 8.0]
    assert ChunkFloor(linear, 4, rising=False, scale=1.0).adds(3) == 0.0
    plain, scaled = ChunkFloor(linear, 4, True, 1.0), ChunkFloor(linear, 4, True, 0.5)
    assert plain.adds(3) > 0 and scaled.adds(3) == pytest.approx(plain.adds(3) / 2)


@settings(max_examples=200, deadline=None)
@given(tables(), st.integers(1, 30))
def test_never_falls_with_more_tokens(table, tokens) -> None:
    linear, budget = table
    floor = ChunkFloor(linear, budget, rising=True, scale=1.0)
    assert floor.adds(tokens) <= floor.adds(tokens + 1) + 1e-12
