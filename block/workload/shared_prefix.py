"""`shared-prefix:GROUPS:SYSTEM_TOKENS`: applications that share a system prompt, the shape of SGLang's
generated-shared-prefix benchmark and llm-d's prefix-cache benchmarks.

GROUPS system prompts of SYSTEM_TOKENS tokens each (synthesised words, seeded); every request belongs to a
group drawn uniformly and its prompt is the group's system prompt, a blank line, and a ShareGPT first turn
(real question text; its recorded answer's length is the output length). Requests of one group share
SYSTEM_TOKENS // 16 full blocks and nothing else: the system prompt is made of single-token words, so its
tokens do not change when a question follows it, and a question drawn again (more requests than ShareGPT
holds) starts with a marker `(r) `, so a repeat shares the system prompt but not the question.
"""

from __future__ import annotations

import numpy as np

from block.prefix import chain_hashes
from block.workload.repeats import repeat_marker
from block.workload.sample import Sample
from block.workload.synthesis import synthesize_prompt
from block.workload.tokenizer import get_tokenizer

SEPARATOR = "\n\n"
_SYSTEM_SEED = 0x5157  # system prompts depend on the group and the workload seed only


def parse_shared_prefix(arg: str) -> tuple[int, int]:
    """(groups, system tokens) from `GROUPS:SYSTEM_TOKENS`."""
    parts = arg.split(":")
    if len(parts) != 2:
        raise ValueError
    groups, system_tokens = int(parts[0]), int(parts[1])
    if groups < 1 or system_tokens < 1:
        raise ValueError
    return groups, system_tokens


def system_prompts(groups: int, system_tokens: int, seed: int, tokenizer: str) -> list[str]:
    rng = np.random.default_rng([seed, _SYSTEM_SEED])
    return [synthesize_prompt(system_tokens, rng, tokenizer) for _ in range(groups)]


def shared_prefix_samples(
    questions: list[Sample],
    rounds: list[int],
    groups: int,
    system_tokens: int,
    rng: np.random.Generator,
    seed: int = 0,
    tokenizer: str = "llama3",
) -> list[Sample]:
    """One request per question: `rounds[i]` says how many times question i was drawn before (0: first)."""
    systems = system_prompts(groups, system_tokens, seed, tokenizer)
    group_of = rng.integers(groups, size=len(questions))
    prompts = [
        systems[g] + SEPARATOR + repeat_marker(r) + q.prompt
        for g, r, q in zip(group_of, rounds, questions, strict=True)
    ]
    ids = get_tokenizer(tokenizer).encode_batch(prompts)
    return [
        Sample(
            prompt=prompt,
            prompt_tokens=len(prompt_ids),
            output_tokens=q.output_tokens,
            reference_output=q.reference_output,
            prefix_hashes=chain_hashes(prompt_ids),
        )
        for prompt, prompt_ids, q in zip(prompts, ids, questions, strict=True)
    ]
