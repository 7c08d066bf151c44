"""The fields of a /v1/completions or /v1/chat/completions body that the router and the engine both
read, parsed and validated once, as vLLM validates them.

Any body (any JSON value, any field of any type) either parses or raises `RequestError`, a 400 in
OpenAI's format: nothing in here may raise anything else (tests/openai_api/test_fuzz_parsing.py).
Sampling fields are only checked, as vLLM checks them (`temperature` >= 0, `top_p` in (0, 1], ...);
what the emulated engine does not support (n > 1, prompt batches) is the engine's own refusal.
Fields that are not read here are ignored, as vLLM ignores unknown fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from block.openai_api.errors import RequestError
from block.openai_api.prompt_tokens import (
    Count,
    PromptIds,
    chat_tokens,
    message_text,
    text_tokens,
)

Kind = Literal["completion", "chat"]


@dataclass(slots=True)
class OpenAIRequest:
    kind: Kind
    model: str | None
    prompt_tokens: int  # as the served model counts them (see prompt_tokens.py)
    prompts: int  # prompts in a completions batch; 1 for a single prompt or a chat
    prompt_text: str | None  # completions: the text prompt(s), joined; None for token ids or a chat
    messages: list[tuple[str, str]] | None  # chat: (role, text) per message
    max_tokens: int | None  # chat: max_completion_tokens, else max_tokens; None: up to the context
    min_tokens: int
    ignore_eos: bool
    stream: bool
    include_usage: bool
    n: int
    # the prompt's token ids as the model sees them (template included), when the parser was given
    # `prompt_ids`; None otherwise, and for a batch of prompts
    prompt_token_ids: list[int] | None = None


def parse_request(kind: Kind, body: Any, count: Count, prompt_ids: PromptIds | None = None) -> OpenAIRequest:
    """`prompt_ids`: also lay out the prompt's token ids, and count the prompt from them."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError("`model` must be a string", "model")
    n = integer(body, "n", minimum=1) or 1
    integer(body, "best_of", minimum=1)

    prompt_text: str | None = None
    messages: list[tuple[str, str]] | None = None
    prompts = 1
    ids: list[int] | None = None
    if kind == "completion":
        tokens, prompts, prompt_text, ids = _completion_prompt(body, count, prompt_ids)
        max_tokens = integer(body, "max_tokens", minimum=1)
    else:
        messages = chat_messages(body.get("messages"))
        if prompt_ids is not None:
            ids = prompt_ids.chat_ids(messages)
            tokens = len(ids)
        else:
            tokens = chat_tokens(messages, count)
        max_tokens = integer(body, "max_completion_tokens", minimum=1)
        if max_tokens is None:
            max_tokens = integer(body, "max_tokens", minimum=1)
    min_tokens = integer(body, "min_tokens", minimum=0) or 0
    if max_tokens is not None and min_tokens > max_tokens:
        raise RequestError(
            f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.",
            "min_tokens",
        )
    _check_sampling(body)

    stream = boolean(body, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise RequestError("`stream_options` must be an object", "stream_options")
        if not stream:
            raise RequestError("stream_options can only be given when stream is true", "stream_options")
        include_usage = boolean(options, "include_usage", param="stream_options.include_usage")

    return OpenAIRequest(
        kind=kind,
        model=model,
        prompt_tokens=tokens,
        prompts=prompts,
        prompt_text=prompt_text,
        messages=messages,
        max_tokens=max_tokens,
        min_tokens=min_tokens,
        ignore_eos=boolean(body, "ignore_eos"),
        stream=stream,
        include_usage=include_usage,
        n=n,
        prompt_token_ids=ids,
    )


def check_context(kind: Kind, prompt_tokens: int, max_tokens: int | None, max_model_len: int) -> None:
    """Refuse what cannot fit the model's context, in vLLM's words: a prompt that leaves no room, or
    `max_tokens` beyond what the prompt leaves (with or without ignore_eos)."""
    if prompt_tokens >= max_model_len:
        raise RequestError(
            f"This model's maximum context length is {max_model_len} tokens. However, your prompt has "
            f"{prompt_tokens} tokens, leaving no room for any output. "
            "Please reduce the length of the prompt.",
            "prompt" if kind == "completion" else "messages",
        )
    if max_tokens is not None and max_tokens > max_model_len - prompt_tokens:
        raise RequestError(
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's maximum "
            f"context length is {max_model_len} tokens and your request has {prompt_tokens} input tokens "
            f"({max_tokens} > {max_model_len} - {prompt_tokens}).",
            "max_tokens",
        )


def model_not_found(model: str) -> RequestError:
    """vLLM's answer to a `model` it does not serve."""
    return RequestError(f"The model `{model}` does not exist.", "model", status=404)


# -- the prompt ---------------------------------------------------------------------------------


def _completion_prompt(
    body: dict[str, Any], count: Count, prompt_ids: PromptIds | None
) -> tuple[int, int, str | None, list[int] | None]:
    """(prompt tokens, prompts in the batch, the text of a text prompt, the token ids of a single prompt
    when `prompt_ids` is given)."""
    prompt = body.get("prompt")
    if prompt is None:
        raise RequestError("`prompt` is required", "prompt")
    batch: list[Any]
    if isinstance(prompt, str) or _token_ids(prompt):
        batch = [prompt]
    elif (
        isinstance(prompt, list)
        and prompt
        and (all(isinstance(p, str) for p in prompt) or all(_token_ids(p) for p in prompt))
    ):
        batch = prompt
    else:
        raise RequestError("`prompt` must be a string, a list of strings, or token ids", "prompt")
    if not all(batch):
        raise RequestError("the prompt is empty", "prompt")
    if isinstance(batch[0], str):
        if prompt_ids is not None and len(batch) == 1:
            ids = prompt_ids.text_ids(batch[0])
            return len(ids), 1, batch[0], ids
        return sum(text_tokens(p, count) for p in batch), len(batch), "\n".join(batch), None
    ids = batch[0] if prompt_ids is not None and len(batch) == 1 else None  # as given: vLLM adds none
    return sum(len(p) for p in batch), len(batch), None, ids


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(s, str) for s in value)


def _token_ids(value: Any) -> bool:
    return isinstance(value, list) and all(type(t) is int and t >= 0 for t in value)


def chat_messages(messages: Any) -> list[tuple[str, str]]:
    """(role, text) per message; text parts of multi-part content joined by newlines."""
    if messages is None:
        raise RequestError("`messages` is required", "messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("`messages` must be a non-empty list", "messages")
    pairs: list[tuple[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with a string `role`", "messages")
        text = message_text(m.get("content"))
        if text is None:
            raise RequestError(
                f"messages[{i}].content must be a string or a list of parts (a text part's `text` a string)",
                "messages",
            )
        pairs.append((m["role"], text))
    return pairs


# -- sampling fields: checked as vLLM's SamplingParams checks them, otherwise unused ---------------


def _check_sampling(body: dict[str, Any]) -> None:
    temperature = number(body, "temperature")
    if temperature is not None and temperature < 0:
        raise RequestError(f"temperature must be non-negative, got {temperature}.", "temperature")
    top_p = number(body, "top_p")
    if top_p is not None and not 0 < top_p <= 1:
        raise RequestError(f"top_p must be in (0, 1], got {top_p}.", "top_p")
    integer(body, "top_k", minimum=-1)  # -1 and 0 disable it
    for name in ("presence_penalty", "frequency_penalty"):
        value = number(body, name)
        if value is not None and not -2 <= value <= 2:
            raise RequestError(f"{name} must be in [-2, 2], got {value}.", name)
    repetition = number(body, "repetition_penalty")
    if repetition is not None and repetition <= 0:
        raise RequestError(
            f"repetition_penalty must be greater than zero, got {repetition}.", "repetition_penalty"
        )
    integer(body, "seed", minimum=-(2**63))
    stop = body.get("stop")
    if not (stop is None or isinstance(stop, str) or _strings(stop)):
        raise RequestError("`stop` must be a string or a list of strings", "stop")


# -- typed fields ---------------------------------------------------------------------------------


def integer(body: dict[str, Any], name: str, minimum: int) -> int | None:
    """An integer field; an integral float (5.0) counts, as vLLM's pydantic models accept it."""
    value = body.get(name)
    if value is None:
        return None
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int:  # bool is an int subclass: refuse it as well
        raise RequestError(f"`{name}` must be an integer", name)
    if value < minimum:
        raise RequestError(f"`{name}` must be at least {minimum}, got {value}", name)
    return value


def number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return value
    raise RequestError(f"`{name}` must be a number", name)


def boolean(body: dict[str, Any], name: str, param: str | None = None) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"`{name}` must be a boolean", param or name)
    return value
