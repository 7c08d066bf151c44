"""StepCost: the one step-time formula, its decode closed form and its inverse."""

from __future__ import annotations

import copy
import math
import pickle

from hypothesis import given
from hypothesis import strategies as st

from block.profiles import load_profile
from block.profiles.profile import BatchShape
from block.profiles.step_cost import MAX_TABLE_TOKENS
from tests.conftest import make_test_profile

PROFILE = make_test_profile()


@given(st.integers(0, 5000), st.integers(0, 64), st.integers(0, 10**6), st.integers(0, 10**7))
def test_seconds_is_the_documented_formula(tokens: int, seqs: int, kv: int, pairs: int) -> None:
    """The sum profile.py documents, bit for bit, whether the linear term comes from the table or not."""
    p = PROFILE
    expected = 0.0
    if seqs:
        expected = (
            p.step_overhead_s
            + p.per_seq_s * seqs
            + p.linear_time(tokens)
            + p.decode_kv_token_s * kv
            + p.prefill_pair_s * pairs
        )
    assert p.step_time(BatchShape(tokens, seqs, 0, kv, pairs)) == expected
    assert p.cost.seconds(tokens, seqs, kv, pairs) == expected


def test_batches_beyond_the_table_are_timed_without_growing_it() -> None:
    p = make_test_profile()
    big = MAX_TABLE_TOKENS + 7
    assert p.cost.seconds(big, 1) == p.step_overhead_s + p.per_seq_s + p.linear_time(big)
    assert len(p.cost.linear) <= MAX_TABLE_TOKENS + 1


@given(st.integers(1, 64), st.integers(1, 300), st.integers(0, 10**5))
def test_decodes_is_the_sum_of_decode_steps(n: int, k: int, first_kv: int) -> None:
    cost = PROFILE.cost
    cost.reserve(n)
    stepped = math.fsum(cost.seconds(n, n, first_kv + j * n) for j in range(k))
    assert math.isclose(cost.decodes(n, k, first_kv), stepped, rel_tol=1e-12)


@given(st.integers(1, 64), st.integers(1, 300), st.integers(0, 10**5), st.floats(-1.0, 20.0))
def test_decodes_starting_before_inverts_decodes(n: int, k: int, first_kv: int, dt: float) -> None:
    cost = PROFILE.cost
    cost.reserve(n)
    j = cost.decodes_starting_before(dt, n, k, first_kv)
    # exactly the steps whose start (the time the ones before them took) is before dt
    assert j == sum(1 for i in range(k) if cost.decodes(n, i, first_kv) < dt)


def test_the_cost_survives_pickle_and_deepcopy() -> None:
    """Profiles travel to simulator workers and replicas are deep-copied in tests: the closures
    are rebuilt, with the same results."""
    p = load_profile("llama-2-7b-a30")
    shape = BatchShape(300, 20, 19, 20_000, 45_150)
    t = p.step_time(shape)
    for other in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p)):
        assert other.step_time(shape) == t
        assert other.cost.decodes(20, 7, 999) == p.cost.decodes(20, 7, 999)
