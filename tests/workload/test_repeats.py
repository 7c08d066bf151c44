"""Drawing with replacement does not invent prefix-cache hits; recorded prompts carry their block hashes."""

from __future__ import annotations

from pathlib import Path

from block.prefix import chain_hashes
from block.workload import Sample, get_tokenizer, load_workload
from block.workload.repeats import resalt, with_prefix_hashes

FIXTURE = Path(__file__).parent.parent / "fixtures" / "workload_small.jsonl"
LONG = "Explain, step by step and with an example, how a paged KV cache lets a server share a long prompt."


def test_recorded_prompts_carry_the_hashes_of_their_tokens() -> None:
    samples = load_workload(f"jsonl:{FIXTURE}", None)
    tok = get_tokenizer()
    texts = [s for s in samples if s.prefix_hashes]
    assert texts
    for s in texts:
        assert s.prefix_hashes == chain_hashes(tok.encode(s.prompt))


def test_a_repeated_draw_gets_a_distinct_first_block() -> None:
    base = Sample(LONG, get_tokenizer().count(LONG), 8)
    first, again, third = with_prefix_hashes([base, base, base], "llama3", [0, 1, 2])
    assert first.prompt == LONG and again.prompt == "(1) " + LONG and third.prompt.startswith("(2) ")
    assert again.prompt_tokens == get_tokenizer().count(again.prompt) > first.prompt_tokens
    heads = {s.prefix_hashes[0] for s in (first, again, third)}
    assert len(heads) == 3
    assert not set(first.prefix_hashes) & set(again.prefix_hashes)


def test_draws_beyond_the_dataset_are_marked_repeats() -> None:
    samples = load_workload(f"jsonl:{FIXTURE}", 15, seed=0)  # a few rows, drawn several times over
    recorded = "Explain the theory of relativity in simple terms."
    copies = [s.prompt for s in samples if s.prompt.endswith(recorded)]
    assert len(copies) >= 3
    assert sorted(copies) == sorted(f"({r}) " * (r > 0) + recorded for r in range(len(copies)))
    # Synthesised prompts are new random words for every draw: no two requests share a first block.
    heads = [s.prefix_hashes[0] for s in samples if s.prefix_hashes]
    assert len(heads) == len(set(heads))


def test_resalt_separates_copies_but_keeps_shared_prefixes_within_a_copy() -> None:
    a = chain_hashes(list(range(64)))
    b = chain_hashes([*range(32), *range(100, 132)])  # shares the first two blocks with a
    assert resalt(a, 0) == a
    a1, b1, a2 = resalt(a, 1), resalt(b, 1), resalt(a, 2)
    assert a1[:2] == b1[:2] and a1[2:] != b1[2:]
    assert not set(a1) & set(a) and not set(a1) & set(a2)
