"""Prefix identity of a workload's prompts, and repeated draws that do not invent cache hits.

Every workload with prompt text gives its Samples the chained block hashes of their token ids
(`Sample.prefix_hashes`), the ones a live engine computes from the same text, so a simulated prefix cache
hits exactly where a live one would. A workload drawn with replacement (more requests than the dataset
holds) sends some prompts again; real traffic would not repeat them, so a repeat gets a distinct first
block: its text starts with a marker `(r) ` (r the round of the draw), which changes its first block's
tokens and so, chained, every block. Workloads meant to share (the shared system prompts) put the marker
after the shared part. `resalt` does the same for copies that exist only as hashes (the simulator's
length-only resampling), with the copy number as the salt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from block.prefix import chain_hashes
from block.workload.sample import Sample
from block.workload.tokenizer import get_tokenizer


def repeat_marker(round_: int) -> str:
    """The text a repeated draw starts with: nothing for the first draw."""
    return f"({round_}) " if round_ else ""


def with_prefix_hashes(
    samples: Sequence[Sample], tokenizer: str, rounds: Sequence[int] | np.ndarray | None = None
) -> list[Sample]:
    """The samples with their prompts' block hashes; sample i drawn for the `rounds[i]`-th time again
    (0: first time) gets the repeat marker, and its token count follows its new text."""
    rounds = [0] * len(samples) if rounds is None else [int(r) for r in rounds]
    prompts = [repeat_marker(r) + s.prompt for s, r in zip(samples, rounds, strict=True)]
    ids = get_tokenizer(tokenizer).encode_batch(prompts)
    return [
        replace(
            s,
            prompt=prompt,
            prompt_tokens=len(prompt_ids) if r else s.prompt_tokens,
            prefix_hashes=chain_hashes(prompt_ids),
        )
        for s, r, prompt, prompt_ids in zip(samples, rounds, prompts, ids, strict=True)
    ]


def draw_rounds(count: int, drawn: int) -> np.ndarray:
    """For `load.choose`'s draws (whole reshuffles of `count` items, then a partial one): how many times
    each draw's item was drawn before it."""
    return np.arange(drawn) // count


def resalt(hashes: tuple[int, ...], salt: int) -> tuple[int, ...]:
    """The hashes of copy `salt` of a prompt: unchanged for 0, else a chain of their own that shares no
    block with any other salt's (and still shares prefixes with other prompts of the same salt)."""
    if not salt:
        return hashes
    out = []
    parent = hash(("copy", salt))
    for h in hashes:
        parent = hash((parent, h))
        out.append(parent)
    return tuple(out)
