"""Offline tokenizers (quicktok) behind one small interface: encode, decode, count."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

# Our short names -> quicktok encoding names. Full quicktok names are accepted as well.
ALIASES = {
    "llama3": "llama3",
    "qwen3": "qwen3",
    "cl100k": "cl100k_base",
    "cl100k_base": "cl100k_base",
    "o200k": "o200k_base",
    "o200k_base": "o200k_base",
}


class Tokenizer:
    """A thin wrapper over a quicktok encoding, so the rest of Block does not depend on its API."""

    def __init__(self, name: str, encoding: object) -> None:
        self.name = name
        self._enc = encoding
        self.n_vocab: int = encoding.n_vocab

    def encode(self, text: str) -> list[int]:
        return self._enc.encode(text)

    def encode_ordinary(self, text: str) -> list[int]:
        """The ids of `text` with special-token strings in it taken as plain text, as `count` counts
        them (`encode` refuses such text)."""
        return self._enc.encode_ordinary(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._enc.decode(list(ids))

    def count(self, text: str) -> int:
        return self._enc.count(text)

    def count_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Token counts of many texts at once (parallel, no Python lists of ids)."""
        if not texts:
            return np.zeros(0, dtype=np.int64)
        _tokens, offsets = self._enc.encode_batch(list(texts), 0, False)
        return np.diff(offsets)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """The token ids of many texts at once (parallel)."""
        if not texts:
            return []
        tokens, offsets = self._enc.encode_batch(list(texts), 0, False)
        bounds = offsets.tolist()
        return [tokens[a:b].tolist() for a, b in zip(bounds, bounds[1:], strict=False)]

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r})"


@cache
def get_tokenizer(name: str = "llama3") -> Tokenizer:
    """The tokenizer called `name` (llama3, qwen3, cl100k, o200k); one instance per name."""
    import quicktok

    encoding_name = ALIASES.get(name.lower())
    if encoding_name is None:
        raise ValueError(f"unknown tokenizer {name!r}; choose one of {', '.join(sorted(ALIASES))}")
    return Tokenizer(name.lower(), quicktok.get_encoding(encoding_name))
