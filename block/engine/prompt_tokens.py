"""The engine's prompt token count: the shared counter (block/openai_api/prompt_tokens.py, the same
one the router calls) with the llama3 tokenizer, loaded once per process."""

from __future__ import annotations

from functools import cache
from typing import Protocol

from block.openai_api import prompt_tokens as shared
from block.openai_api.prompt_tokens import message_text

__all__ = ["count_chat", "count_prompt", "count_text", "encode_text", "message_text", "warm_up"]


class _Counter(Protocol):
    def count(self, text: str) -> int: ...

    def encode_ordinary(self, text: str) -> list[int]: ...


@cache
def _tokenizer() -> _Counter:
    # Loaded once per process (about 0.3 s); the workload package owns the tokenizer wrapper.
    from block.workload import get_tokenizer

    return get_tokenizer("llama3")


def warm_up() -> None:
    """Load the tokenizer now rather than on the first request."""
    _tokenizer()


def count_text(text: str) -> int:
    """The tokenizer's count of `text` alone (no special tokens)."""
    return _tokenizer().count(text) if text else 0


def count_prompt(text: str) -> int:
    """A text prompt as vLLM counts it: <|begin_of_text|> plus the text."""
    return shared.text_tokens(text, count_text)


def count_chat(messages: list[tuple[str, str]]) -> int:
    """Tokens of the rendered Llama 3 chat template for (role, content) pairs."""
    return shared.chat_tokens(messages, count_text)


def encode_text(text: str) -> list[int]:
    """The tokenizer's ids of `text` alone, special-token text as plain text (as `count_text` counts
    it): with prefix caching on the parser lays out the prompt's ids with it, the router's way."""
    return _tokenizer().encode_ordinary(text)
