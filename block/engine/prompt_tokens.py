"""Counting prompt tokens as the served model would: the llama3 tokenizer and its chat template.

Chat messages are counted as the Llama 3 chat template renders them, without building the string:

    <|begin_of_text|>
    per message:  <|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>
    then:         <|start_header_id|>assistant<|end_header_id|>\\n\\n      (the generation prompt)

i.e. 1 + sum(4 + tokens(role) + tokens(content)) + 4 tokens.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Protocol


class _Counter(Protocol):
    def count(self, text: str) -> int: ...


@cache
def _tokenizer() -> _Counter:
    # Loaded once per process (about 0.3 s); the workload package owns the tokenizer wrapper.
    from block.workload import get_tokenizer

    return get_tokenizer("llama3")


def warm_up() -> None:
    """Load the tokenizer now rather than on the first request."""
    _tokenizer()


def count_text(text: str) -> int:
    return _tokenizer().count(text) if text else 0


BEGIN_OF_TEXT = 1
MESSAGE_FRAME = 4  # <|start_header_id|>, <|end_header_id|>, "\n\n", <|eot_id|>
GENERATION_PROMPT = 4  # <|start_header_id|>assistant<|end_header_id|>\n\n


def count_chat(messages: list[tuple[str, str]]) -> int:
    """Tokens of the rendered Llama 3 chat template for (role, content) pairs."""
    total = BEGIN_OF_TEXT + GENERATION_PROMPT
    for role, content in messages:
        total += MESSAGE_FRAME + count_text(role) + count_text(content)
    return total


def message_text(content: Any) -> str | None:
    """The text of an OpenAI message `content`: a string or a list of {"type": "text", "text": ...}
    parts (other part types carry no text tokens here); None when it has neither shape."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict):
                return None
            text = part.get("text")
            if part.get("type") == "text":
                if not isinstance(text, str):
                    return None
                texts.append(text)
        return "\n".join(texts)
    return None
