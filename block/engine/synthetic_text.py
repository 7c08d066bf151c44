"""Synthetic output text: one word per token, cycling through a fixed list.

Every token's text is pre-encoded as a JSON string so a streamed chunk costs two byte
concatenations, not a JSON encoding.
"""

from __future__ import annotations

import orjson

_TEXT = (
    "The quick brown fox jumps over the lazy dog while a block of tokens streams from an emulated "
    "engine that keeps real time and schedules every step against the clock so that latency looks "
    "like a real GPU serving a language model to many users at once"
)
_WORDS = _TEXT.split(" ")

TOKENS: tuple[str, ...] = tuple(" " + w for w in _WORDS)
TOKENS_JSON: tuple[bytes, ...] = tuple(orjson.dumps(t) for t in TOKENS)


def token_text(index: int) -> str:
    """The text of the output token at position `index` (0-based)."""
    return TOKENS[index % len(TOKENS)]


def token_json(index: int) -> bytes:
    return TOKENS_JSON[index % len(TOKENS_JSON)]


def text_of(num_tokens: int) -> str:
    n = len(TOKENS)
    full, rest = divmod(num_tokens, n)
    return "".join(TOKENS) * full + "".join(TOKENS[:rest])
