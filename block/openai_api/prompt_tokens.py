"""Prompt tokens as vLLM serving a Llama 3 model counts them: the one counter of the router and the engine.

A text prompt is tokenized with the tokenizer's special tokens, so <|begin_of_text|> comes first.
Chat messages are counted as the Llama 3 chat template renders them, without building the string:

    <|begin_of_text|>
    per message:  <|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>
    then:         <|start_header_id|>assistant<|end_header_id|>\\n\\n      (the generation prompt)

i.e. 1 + sum(4 + tokens(role) + tokens(content)) + 4 tokens. `count` is the plain tokenizer count
(no special tokens): the engine passes llama3's, the router the tokenizer it is configured with.

Where the token ids themselves are needed (a prompt's prefix identity, block.prefix), `text_token_ids`
and `chat_token_ids` lay them out the same way from one `encode` pass; their length is the count above,
so a caller that has the ids counts nothing twice. The template's own tokens are Llama 3's ids whatever
the tokenizer: with another one they only mark the frame, consistently.

A parser that needs ids takes a `PromptIds`: `Llama3Prompts` is the layout above around any `encode`;
`block.openai_api.hf_prompts.HFPrompts` is a served model's own tokenizer and chat template, for ids that
match the engine's token for token (what vLLM's KV events are keyed by).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

Count = Callable[[str], int]
Encode = Callable[[str], list[int]]

BEGIN_OF_TEXT = 1
MESSAGE_FRAME = 4  # <|start_header_id|>, <|end_header_id|>, "\n\n", <|eot_id|>
GENERATION_PROMPT = 4  # <|start_header_id|>assistant<|end_header_id|>\n\n

# Llama 3's ids of the template's tokens.
BEGIN_OF_TEXT_ID = 128000
START_HEADER_ID = 128006
END_HEADER_ID = 128007
EOT_ID = 128009
NEWLINES_ID = 271  # "\n\n" after a header
ASSISTANT_ID = 78191  # "assistant"


def text_tokens(text: str, count: Count) -> int:
    """Tokens of a text prompt: <|begin_of_text|> plus the text; 0 for an empty prompt."""
    return BEGIN_OF_TEXT + count(text) if text else 0


def chat_tokens(messages: list[tuple[str, str]], count: Count) -> int:
    """Tokens of the rendered Llama 3 chat template for (role, content) pairs."""
    total = BEGIN_OF_TEXT + GENERATION_PROMPT
    for role, content in messages:
        total += MESSAGE_FRAME + (count(role) if role else 0) + (count(content) if content else 0)
    return total


def text_token_ids(text: str, encode: Encode) -> list[int]:
    """The ids of a text prompt: <|begin_of_text|> then the text's; none for an empty prompt."""
    return [BEGIN_OF_TEXT_ID, *encode(text)] if text else []


def chat_token_ids(messages: list[tuple[str, str]], encode: Encode) -> list[int]:
    """The ids of the rendered Llama 3 chat template for (role, content) pairs."""
    ids = [BEGIN_OF_TEXT_ID]
    for role, content in messages:
        ids.append(START_HEADER_ID)
        if role:
            ids += encode(role)
        ids += (END_HEADER_ID, NEWLINES_ID)
        if content:
            ids += encode(content)
        ids.append(EOT_ID)
    ids += (START_HEADER_ID, ASSISTANT_ID, END_HEADER_ID, NEWLINES_ID)
    return ids


class PromptIds(Protocol):
    """A prompt laid out as the served model sees it: token ids, special tokens and template included."""

    def text_ids(self, text: str) -> list[int]: ...

    def chat_ids(self, messages: list[tuple[str, str]]) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class Llama3Prompts:
    """The Llama 3 layout (above) around `encode`, the ids of a text alone."""

    encode: Encode

    def text_ids(self, text: str) -> list[int]:
        return text_token_ids(text, self.encode)

    def chat_ids(self, messages: list[tuple[str, str]]) -> list[int]:
        return chat_token_ids(messages, self.encode)


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
            if part.get("type") == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    return None
                texts.append(text)
        return "\n".join(texts)
    return None


# What a request adds around the text a client counted: <|begin_of_text|> before a text prompt, and
# the chat template around one user message ("user" is one llama3 token). A client that sets
# max_tokens to what the context leaves subtracts these too, or vLLM refuses it.
TEXT_PROMPT_EXTRA = BEGIN_OF_TEXT
USER_MESSAGE_EXTRA = BEGIN_OF_TEXT + MESSAGE_FRAME + 1 + GENERATION_PROMPT
