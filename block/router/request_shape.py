"""What the router needs to know about a request before choosing: prompt tokens and planned output.

Parsed once from the JSON body. Prompt tokens: text is counted with the tokenizer, token-id prompts by
their length. Chat messages are counted as the Llama 3 chat template renders them, the same rule as
the engine emulator (block/engine/prompt_tokens.py): <|begin_of_text|>, per message a 4-token frame
around role and content, then the 4-token assistant generation prompt.

The length estimator (block/length, loaded by `load_length_estimate`) sees a chat as its last user
message: it was trained on ShareGPT first-turn prompts, plain text without roles, and the last user
message is what the answer replies to (a role prefix measurably worsened its error).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("block.router.request_shape")

CHAT_PATH = "/v1/chat/completions"

# (prompt text, its token count or None) -> planned output tokens; see load_length_estimate.
LengthEstimate = Callable[[str, int | None], int]


class BadRequest(ValueError):
    """The body is not a valid request; the message goes back to the client with a 400."""


@dataclass(slots=True)
class RequestShape:
    prompt_tokens: int
    expected_output_tokens: int
    max_tokens: int | None
    stream: bool
    prompt_text: str | None  # what the estimator read; None for token-id prompts or without estimator


BEGIN_OF_TEXT = 1
MESSAGE_FRAME = 4  # <|start_header_id|>, <|end_header_id|>, "\n\n", <|eot_id|>
GENERATION_PROMPT = 4  # <|start_header_id|>assistant<|end_header_id|>\n\n


def chat_messages(messages: Any) -> list[tuple[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    out = []
    for m in messages:
        if not isinstance(m, dict):
            raise BadRequest("each message must be an object")
        content = m.get("content")
        if isinstance(content, list):  # multi-part content: keep the text parts
            content = "\n".join(
                p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        elif content is None:
            content = ""
        elif not isinstance(content, str):
            raise BadRequest("message 'content' must be a string or a list of parts")
        out.append((str(m.get("role", "user")), content))
    return out


def estimator_text(messages: list[tuple[str, str]]) -> str:
    """The text the length estimator reads for a chat: the last user message (see the module doc)."""
    for role, content in reversed(messages):
        if role == "user" and content:
            return content
    return "\n".join(content for _, content in messages if content)


def chat_tokens(messages: list[tuple[str, str]], count: Callable[[str], int]) -> int:
    total = BEGIN_OF_TEXT + GENERATION_PROMPT
    for role, content in messages:
        total += MESSAGE_FRAME + count(role) + (count(content) if content else 0)
    return total


def _completion_prompt(prompt: Any, count: Callable[[str], int]) -> tuple[int, str | None]:
    if isinstance(prompt, str):
        return count(prompt), prompt
    if isinstance(prompt, list) and prompt:
        if all(isinstance(t, int) for t in prompt):
            return len(prompt), None
        if all(isinstance(p, str) for p in prompt):
            return sum(count(p) for p in prompt), "\n".join(prompt)
        if all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt):
            return sum(len(p) for p in prompt), None
    raise BadRequest("'prompt' must be a string, a list of strings, or token ids")


def _int_or_none(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"'{key}' must be a positive integer")
    return value


def parse_shape(
    path: str,
    body: Any,
    count: Callable[[str], int],
    estimate: LengthEstimate | None,
    default_output_tokens: int,
) -> RequestShape:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    if path == CHAT_PATH:
        messages = chat_messages(body.get("messages"))
        prompt_tokens = chat_tokens(messages, count)
        text: str | None = None
        text_tokens: int | None = None
        if estimate is not None:  # only the estimator reads the text
            text = estimator_text(messages)
            text_tokens = count(text)
        max_tokens = _int_or_none(body, "max_completion_tokens") or _int_or_none(body, "max_tokens")
    else:
        if "prompt" not in body:
            raise BadRequest("'prompt' is required")
        prompt_tokens, text = _completion_prompt(body["prompt"], count)
        text_tokens = prompt_tokens
        max_tokens = _int_or_none(body, "max_tokens")
    expected = expected_output_tokens(
        max_tokens, bool(body.get("ignore_eos")), text, estimate, default_output_tokens, text_tokens
    )
    return RequestShape(prompt_tokens, expected, max_tokens, bool(body.get("stream")), text)


def expected_output_tokens(
    max_tokens: int | None,
    ignore_eos: bool,
    prompt_text: str | None,
    estimate: LengthEstimate | None,
    default: int,
    text_tokens: int | None = None,
) -> int:
    """The length the policy plans with: exact when the client fixes it, else estimated, capped."""
    if max_tokens is not None and ignore_eos:
        return max_tokens
    guess = default
    if estimate is not None and prompt_text is not None:
        try:
            guess = max(1, int(estimate(prompt_text, text_tokens)))
        except Exception:  # a broken estimate must never fail the request: plan with the default
            log.exception("length estimator failed; planning %d output tokens", default)
    return min(guess, max_tokens) if max_tokens is not None else guess


def load_length_estimate(spec: str | None, quantile: float | None = None) -> LengthEstimate | None:
    """The router's length estimate from `--length-model` (a file, or "default" for the shipped model)
    and `--length-quantile` (plan with that quantile of the predicted length; None: the median).

    Called inline on the event loop: one prediction is about half a millisecond of CPU (the estimator
    reads a bounded window of the prompt), mostly Python holding the GIL, so a worker thread would not
    free the loop for that time; it would only add a hand-off per request."""
    if not spec:
        if quantile is not None:
            raise ValueError("--length-quantile needs --length-model FILE or --length-model default")
        return None
    if quantile is not None and not 0.0 < quantile < 1.0:
        raise ValueError(f"--length-quantile must be in (0, 1), got {quantile}")
    from block.length import LengthEstimator, load_default_estimator

    estimator = load_default_estimator() if spec == "default" else LengthEstimator.load(spec)
    if quantile is None or quantile == 0.5:
        return estimator.predict  # the median: only its trees are evaluated
    levels = (float(quantile),)

    def at_quantile(text: str, text_tokens: int | None) -> int:
        tokens = None if text_tokens is None else [text_tokens]
        return int(estimator.predict_quantiles_many([text], levels, tokens)[0, 0])

    return at_quantile
