"""One test per batching rule of the replica model."""

from __future__ import annotations

import pytest

from block.profiles.profile import Profile
from block.replica import Replica, ReplicaConfig, Request
from tests.conftest import make_test_profile


def replica(profile: Profile | None = None, **cfg: int) -> Replica:
    base = dict(
        max_num_seqs=8, max_num_batched_tokens=64, block_size=16, num_gpu_blocks=64, max_model_len=1024
    )
    base.update(cfg)
    return Replica(ReplicaConfig(**base), profile or make_test_profile())


def run_until_idle(r: Replica, limit: int = 10_000) -> None:
    for _ in range(limit):
        if r.step() is None:
            return
    raise AssertionError("replica did not drain")


def test_first_token_comes_from_the_step_that_completes_the_prefill() -> None:
    r = replica()
    req = Request("a", prompt_tokens=100, output_tokens=3)
    r.add(req)
    first = r.step()  # 64-token chunk
    assert first is not None and first.emitted == [] and req.num_computed_tokens == 64
    second = r.step()  # remaining 36 tokens: prefill completes, first token sampled
    assert second is not None and second.emitted == [req]
    assert req.first_token_time == second.end and req.num_generated == 1


def test_request_finishes_after_exactly_its_output_length() -> None:
    r = replica()
    req = Request("a", prompt_tokens=10, output_tokens=5)
    r.add(req)
    steps = 0
    while r.step() is not None:
        steps += 1
    assert req.num_generated == 5 and req.is_finished
    assert steps == 5  # one prefill step that samples token 1, then 4 decodes
    assert r.kv.free_blocks == r.kv.num_blocks


def test_decodes_are_scheduled_before_new_prefills_within_the_token_budget() -> None:
    r = replica(max_num_batched_tokens=32)
    a = Request("a", prompt_tokens=8, output_tokens=10)
    r.add(a)
    r.step()  # a prefilled, decoding from now on
    b = Request("b", prompt_tokens=100, output_tokens=2)
    r.add(b)
    batch = r.schedule()
    assert batch.requests == [a, b]
    assert batch.num_new_tokens == [1, 31]  # decode first, then a chunk of what is left


def test_running_prefill_continues_before_waiting_requests_start() -> None:
    r = replica(max_num_batched_tokens=32)
    a, b = Request("a", 100, 2), Request("b", 10, 2)
    r.add(a)
    r.add(b)
    r.complete(r.schedule(), 0.01)  # a takes the whole budget
    batch = r.schedule()
    assert batch.requests == [a] and batch.num_new_tokens == [32]


def test_max_num_seqs_caps_the_batch() -> None:
    r = replica(max_num_seqs=2)
    reqs = [Request(str(i), 4, 5) for i in range(4)]
    for q in reqs:
        r.add(q)
    batch = r.schedule()
    assert batch.requests == reqs[:2]
    assert list(r.waiting) == reqs[2:]


def test_waiting_queue_is_fcfs() -> None:
    r = replica(max_num_batched_tokens=16)
    a, b = Request("a", 16, 1), Request("b", 4, 1)
    r.add(a)
    r.add(b)
    batch = r.schedule()
    assert batch.requests == [a]  # b would fit the blocks but must not overtake a


def test_waiting_request_waits_when_blocks_run_out() -> None:
    r = replica(num_gpu_blocks=4, max_num_batched_tokens=512)
    a, b = Request("a", 48, 4), Request("b", 32, 2)
    r.add(a)
    r.add(b)
    batch = r.schedule()
    assert batch.requests == [a] and r.kv.free_blocks == 1  # b needs 2 blocks, 1 is free


def test_preemption_takes_the_newest_running_request_and_requeues_it_in_front() -> None:
    # 4 blocks of 16 tokens. a and b each fill two blocks exactly after prefill; a's first decode
    # needs a third block, so b (newest) is preempted and goes back to the front of the queue.
    r = replica(num_gpu_blocks=4, max_num_batched_tokens=512)
    a, b, c = Request("a", 32, 8), Request("b", 32, 8), Request("c", 4, 1)
    for q in (a, b):
        r.add(q)
    r.step()  # both prefilled: 32 computed tokens each, 2 blocks each, a first token each
    r.add(c)
    assert r.kv.free_blocks == 0
    batch = r.schedule()
    assert batch.preempted == [b]
    assert batch.requests == [a]
    assert list(r.waiting) == [b, c]
    assert b.num_computed_tokens == 0 and b.num_blocks == 0 and b.num_generated == 1
    assert r.num_preemptions == 1


def test_preempted_request_recomputes_prompt_and_generated_tokens() -> None:
    r = replica(num_gpu_blocks=4, max_num_batched_tokens=512)
    a, b = Request("a", 32, 3), Request("b", 32, 8)
    r.add(a)
    r.add(b)
    run_until_idle(r)
    assert a.num_generated == 3 and b.num_generated == 8
    assert b.num_preemptions >= 1
    assert r.kv.free_blocks == 4


def test_a_request_too_big_for_the_cache_is_refused() -> None:
    r = replica(num_gpu_blocks=2)
    with pytest.raises(ValueError):
        r.add(Request("a", 30, 10))


def test_a_request_over_max_model_len_is_refused() -> None:
    r = replica(max_model_len=64)
    with pytest.raises(ValueError):
        r.add(Request("a", 60, 10))


def test_abort_frees_blocks_even_mid_step() -> None:
    r = replica()
    a = Request("a", 40, 10)
    r.add(a)
    batch = r.schedule()
    assert r.kv.free_blocks < r.kv.num_blocks
    r.abort(a)
    r.complete(batch, 0.05)
    assert r.kv.free_blocks == r.kv.num_blocks and a.num_generated == 0 and not r.has_work


def test_step_time_follows_the_profile() -> None:
    r = replica()
    r.add(Request("a", 10, 2))
    out = r.step()
    assert out is not None
    assert out.end - out.start == pytest.approx(r.profile.step_time(out.batch.shape()))


def test_time_cannot_go_back() -> None:
    r = replica()
    r.add(Request("a", 10, 2))
    r.advance_to(1.0)
    with pytest.raises(ValueError):
        r.complete(r.schedule(), 0.5)
