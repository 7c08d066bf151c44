"""Prompt text of an exact token count, for traces that record only lengths.

A prompt is a run of words " w1 w2 ...", each word a vocabulary token of ASCII letters with its leading
space. The BPE pre-tokeniser splits such text at every space and a piece that is itself a vocabulary entry
encodes as one token, so n words are n tokens. Words are drawn at random (seeded), which also keeps
synthetic prompts from sharing prefixes in a prefix cache. Every prompt is checked with the tokenizer and
fixed up if a tokenizer ever disagrees.
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np

from block.workload.tokenizer import Tokenizer, get_tokenizer

_WORD = re.compile(rb" [a-z]{3,9}")
_MAX_FIXUPS = 64


@cache
def word_pool(tokenizer: str) -> tuple[str, ...]:
    """Words that are single tokens, alone and in a run of words."""
    tok = get_tokenizer(tokenizer)
    words = []
    for token_id in range(tok.n_vocab):
        try:
            raw = tok._enc.decode_single_token_bytes(token_id)
        except (KeyError, ValueError, RuntimeError):
            continue  # holes in the id space, special tokens
        if _WORD.fullmatch(raw):
            words.append(raw.decode("ascii"))
    if len(words) < 100:
        raise ValueError(f"tokenizer {tokenizer!r} has too few plain words to synthesise prompts")
    # Keep those that survive in context (some tokenizers merge across pieces).
    counts = tok.count_batch([w + w for w in words])
    return tuple(w for w, c in zip(words, counts, strict=True) if c == 2)


def synthesize_prompt(num_tokens: int, rng: np.random.Generator, tokenizer: str = "llama3") -> str:
    """Random text that `tokenizer` encodes as exactly `num_tokens` tokens."""
    if num_tokens <= 0:
        return ""
    pool = word_pool(tokenizer)
    words = [pool[i] for i in rng.integers(len(pool), size=num_tokens)]
    return _fix_up(words, num_tokens, rng, pool, get_tokenizer(tokenizer))


def _fix_up(
    words: list[str], target: int, rng: np.random.Generator, pool: tuple[str, ...], tok: Tokenizer
) -> str:
    text = "".join(words)
    for _ in range(_MAX_FIXUPS):
        count = tok.count(text)
        if count == target:
            return text
        if count > target and len(words) > 1:
            words.pop()
        else:
            words.append(pool[int(rng.integers(len(pool)))])
        text = "".join(words)
    raise ValueError(f"could not synthesise a prompt of exactly {target} tokens")


def synthesize_prompts(
    lengths: list[int] | np.ndarray, seed: int = 0, tokenizer: str = "llama3"
) -> list[str]:
    """One prompt per length, reproducible for a seed."""
    rng = np.random.default_rng(seed)
    return [synthesize_prompt(int(n), rng, tokenizer) for n in lengths]
