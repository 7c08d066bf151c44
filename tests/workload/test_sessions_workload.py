"""Prefix-caching workloads: multi-turn ShareGPT sessions, shared system prompts, session plans."""

from __future__ import annotations

import numpy as np
import pytest

from block.prefix import PREFIX_BLOCK_SIZE, chain_hashes
from block.workload import Sample, get_tokenizer, load_workload
from block.workload.reuse import reusable_share
from block.workload.sessions import session_plan
from block.workload.shared_prefix import shared_prefix_samples
from block.workload.sharegpt_chat import ChatTurn, chat_samples, session_turns, turn_prompts


def test_session_turns_merge_consecutive_messages_and_drop_an_unanswered_tail() -> None:
    conv = {
        "conversations": [
            {"from": "gpt", "value": "stray"},
            {"from": "human", "value": "q1"},
            {"from": "human", "value": "more"},
            {"from": "gpt", "value": "a1"},
            {"from": "gpt", "value": "a1 again"},
            {"from": "human", "value": "q2"},
            {"from": "gpt", "value": "a2"},
            {"from": "human", "value": "unanswered"},
        ]
    }
    assert session_turns(conv) == [ChatTurn("q1\n\nmore", "a1\n\na1 again"), ChatTurn("q2", "a2")]


def test_each_turn_resends_the_chat_and_its_tokens_extend_the_previous_prompt() -> None:
    turns = (ChatTurn("Hello there, how are you?", "Fine, thanks."), ChatTurn("And the weather?", "Sunny."))
    first, second = turn_prompts(turns)
    assert first == "User: Hello there, how are you?\n\nAssistant:"
    assert second == first + " Fine, thanks.\n\nUser: And the weather?\n\nAssistant:"
    samples = chat_samples((turns,), 2, np.random.default_rng(0))
    assert [(s.session, s.turn) for s in samples] == [(0, 0), (0, 1)]
    ids = get_tokenizer().encode(second)
    assert samples[1].prefix_hashes == chain_hashes(ids)
    assert samples[1].output_tokens == get_tokenizer().count("Sunny.")
    # The second prompt starts with the first: every full block of the first is a block of the second.
    shared = samples[0].prompt_tokens // PREFIX_BLOCK_SIZE
    assert samples[1].prefix_hashes[:shared] == samples[0].prefix_hashes[:shared]


def test_a_session_ends_where_its_history_no_longer_fits() -> None:
    turns = (ChatTurn("short question", "ok"), ChatTurn("next", "word " * 100), ChatTurn("last", "z"))
    tok = get_tokenizer()
    prompts = turn_prompts(turns)
    fits = [tok.count(p) + tok.count(t.answer) <= 80 for p, t in zip(prompts, turns, strict=True)]
    assert fits == [True, False, False]
    samples = chat_samples((turns,), None, np.random.default_rng(0), max_model_len=80)
    assert [s.turn for s in samples] == [0]
    # With room for all of it, every turn is replayed.
    assert len(chat_samples((turns,), None, np.random.default_rng(0), max_model_len=400)) == 3


@pytest.fixture(scope="module")
def chat() -> list[Sample]:
    return load_workload("sharegpt-chat", 600, seed=1)


def test_sharegpt_chat_draws_whole_sessions_in_turn_order(chat: list[Sample]) -> None:
    assert len(chat) == 600
    by_session: dict[int, list[int]] = {}
    for s in chat:
        assert s.session is not None and s.prompt_tokens + s.output_tokens <= 4096
        by_session.setdefault(s.session, []).append(s.turn)
    for turns in by_session.values():
        assert turns == list(range(len(turns)))
    assert np.mean([len(t) for t in by_session.values()]) > 2  # multi-turn on average
    # Most prompt tokens are the resent history of the session, reusable by a prefix cache.
    assert reusable_share(chat) > 0.4


def test_replayed_sessions_share_no_block_with_their_originals() -> None:
    question = "What is a prefix cache, why does it help a chat server, and when does it stop helping?"
    turns = (ChatTurn(question, "It keeps KV blocks."),)
    samples = chat_samples((turns,), 3, np.random.default_rng(0))
    assert [s.session for s in samples] == [0, 1, 2]
    firsts = {s.prefix_hashes[0] for s in samples}
    assert len(firsts) == 3  # a distinct first block, so no block at all in common
    assert reusable_share(samples) == 0.0


def test_shared_prefix_groups_share_their_system_prompt_and_nothing_else() -> None:
    groups, system = 4, 256
    samples = load_workload(f"shared-prefix:{groups}:{system}", 200, seed=3)
    blocks = system // PREFIX_BLOCK_SIZE
    heads = {s.prefix_hashes[:blocks] for s in samples}
    assert len(heads) == groups
    tok = get_tokenizer()
    for s in samples[:20]:
        assert s.prompt_tokens == tok.count(s.prompt) and s.prompt_tokens > system
    # Every request after its group's first reuses at least the system prompt's blocks.
    floor = (len(samples) - groups) * blocks * PREFIX_BLOCK_SIZE / sum(s.prompt_tokens for s in samples)
    assert reusable_share(samples) >= floor


def test_shared_prefix_repeats_share_only_the_system_prompt() -> None:
    question = Sample("How do I keep a long system prompt cached across many requests to one server?", 20, 5)
    # The same question drawn three times (rounds 0, 1, 2), all in the one group.
    samples = shared_prefix_samples([question] * 3, [0, 1, 2], 1, 64, np.random.default_rng(0))
    system_blocks = 64 // PREFIX_BLOCK_SIZE
    assert len({s.prefix_hashes[:system_blocks] for s in samples}) == 1
    assert len({s.prefix_hashes[system_blocks] for s in samples}) == 3  # the question's block differs
    assert samples[0].prompt.endswith("\n\n" + question.prompt)
    assert samples[1].prompt.endswith("\n\n(1) " + question.prompt)


def test_bad_shared_prefix_specs_are_rejected() -> None:
    for spec in ("shared-prefix", "shared-prefix:0:100", "shared-prefix:4", "shared-prefix:a:b"):
        with pytest.raises(ValueError, match="bad workload spec"):
            load_workload(spec, 10)


def test_session_plan_starts_sessions_at_the_rate_and_links_turns() -> None:
    samples = [
        Sample("a", 4, 1, session=7, turn=0),
        Sample("b", 4, 1, session=7, turn=1),
        Sample("c", 4, 1, session=9, turn=0),
        Sample("d", 4, 1, session=7, turn=2),
    ]
    plan = session_plan(samples, qps=2.0, process="constant", think_time_s=1.0, seed=0)
    assert plan.next_turn.tolist() == [1, 3, -1, -1]
    assert plan.not_before_s.tolist() == [0.5, 0.5, 1.0, 0.5]  # session starts, every 1/qps
    assert plan.first_turns().tolist() == [0, 2]
    assert plan.chain(0) == [0, 1, 3]
    assert plan.think_s[0] == 0 and plan.think_s[2] == 0 and plan.think_s[1] > 0
    again = session_plan(samples, qps=2.0, process="constant", think_time_s=1.0, seed=0)
    assert np.array_equal(plan.think_s, again.think_s)  # seeded: sim and live wait alike
    order = np.array([2, 0, 1, 3])
    moved = plan.reordered(order)
    assert moved.next_turn.tolist() == [-1, 2, 3, -1]
    with pytest.raises(ValueError, match="turn 0 listed after turn 1"):
        session_plan([samples[1], samples[0]], 1.0)
    with pytest.raises(ValueError, match="trace"):
        session_plan(samples, 1.0, process="trace")


def test_think_times_are_exponential_with_the_given_mean() -> None:
    samples = [Sample("x", 4, 1, session=0, turn=k) for k in range(20_001)]
    plan = session_plan(samples, qps=1.0, think_time_s=5.0)
    assert plan.think_s[1:].mean() == pytest.approx(5.0, rel=0.03)


def test_workload_stats_count_history_and_reusable_tokens() -> None:
    from block.workload.stats import workload_stats

    turns = (
        ChatTurn("Tell me about prefix caching in LLM serving engines, briefly please.", "It reuses KV."),
        ChatTurn("And how does a router use it when it picks an instance for a request?", "By overlap."),
    )
    samples = chat_samples((turns,), None, np.random.default_rng(0))
    stats = workload_stats(samples)
    first, second = samples
    assert stats["requests"] == 2 and stats["sessions"] == 1 and stats["turns_per_session"] == 2
    total = first.prompt_tokens + second.prompt_tokens
    history = first.prompt_tokens + first.output_tokens
    assert stats["history_share"] == pytest.approx(history / total)
    reused = (first.prompt_tokens // PREFIX_BLOCK_SIZE) * PREFIX_BLOCK_SIZE
    assert stats["reusable_share"] == pytest.approx(reused / total)
