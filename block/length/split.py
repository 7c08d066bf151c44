"""The deterministic train / held-out split.

A sample's side is decided by a hash of the seed and its prompt text, not by its position, so
- the split is the same whatever the order or subset of the dataset it is drawn from;
- identical prompts (ShareGPT repeats many, e.g. "hi") always fall on the same side: no held-out prompt
  is ever seen in training, even as a duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

from block.workload import Sample

HELD_OUT_FRACTION = 0.2
DEFAULT_SEED = 0

T = TypeVar("T", bound=Sample)


def is_held_out(prompt: str, seed: int = DEFAULT_SEED, fraction: float = HELD_OUT_FRACTION) -> bool:
    digest = hashlib.blake2b(f"{seed}\x00{prompt}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < fraction


def split(
    samples: Sequence[T], seed: int = DEFAULT_SEED, fraction: float = HELD_OUT_FRACTION
) -> tuple[list[T], list[T]]:
    """(train, held_out) by the prompt hash."""
    train: list[T] = []
    held: list[T] = []
    for s in samples:
        (held if is_held_out(s.prompt, seed, fraction) else train).append(s)
    return train, held
