"""The engine's prompt token count: the shared counter (block/openai_api/prompt_tokens.py, the same
one the router calls) with the llama3 tokenizer, loaded once per process."""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any, Protocol

from block.openai_api import prompt_tokens as shared
from block.openai_api.prompt_tokens import message_text

__all__ = ["count_chat", "count_prompt", "count_text", "message_text", "prompt_token_ids", "warm_up"]

# Llama 3's special tokens, as its chat template renders them
BEGIN_OF_TEXT_ID = 128000
START_HEADER_ID = 128006
END_HEADER_ID = 128007
EOT_ID = 128009
DOUBLE_NEWLINE_ID = 271  # "\n\n"


class _Counter(Protocol):
    def count(self, text: str) -> int: ...

    def encode(self, text: str) -> list[int]: ...


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
    return len(_ids(text)) if text else 0


@lru_cache(maxsize=64)
def _ids(text: str) -> tuple[int, ...]:
    """Token ids of `text`, kept for the request being parsed: the count and the prefix cache's block
    hashes (prompt_token_ids) then tokenize each text once."""
    return tuple(_tokenizer().encode_ordinary(text))  # special-token strings are text, as counted


def count_prompt(text: str) -> int:
    """A text prompt as vLLM counts it: <|begin_of_text|> plus the text."""
    return shared.text_tokens(text, count_text)


def count_chat(messages: list[tuple[str, str]]) -> int:
    """Tokens of the rendered Llama 3 chat template for (role, content) pairs."""
    return shared.chat_tokens(messages, count_text)


def prompt_token_ids(body: dict[str, Any]) -> list[int] | None:
    """The prompt's token ids as vLLM serving Llama 3 feeds them to the model (the prefix cache hashes
    them): <|begin_of_text|> and the text, a completion prompt given as token ids as is, or the Llama 3
    chat template over the messages (as count_chat counts it). None when the body has no such prompt."""
    encode = _ids
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # one prompt in a list
    if isinstance(prompt, str):
        return [BEGIN_OF_TEXT_ID, *encode(prompt)] if prompt else []
    if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
        return list(prompt)
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    ids = [BEGIN_OF_TEXT_ID]
    for m in messages:
        if not isinstance(m, dict):
            return None
        role, content = m.get("role"), message_text(m.get("content"))
        if not isinstance(role, str) or content is None:
            return None
        ids.append(START_HEADER_ID)
        ids.extend(encode(role) if role else ())
        ids += [END_HEADER_ID, DOUBLE_NEWLINE_ID]
        ids.extend(encode(content) if content else ())
        ids.append(EOT_ID)
    ids += [START_HEADER_ID, *encode("assistant"), END_HEADER_ID, DOUBLE_NEWLINE_ID]
    return ids
