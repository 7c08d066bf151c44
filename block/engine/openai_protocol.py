"""Parsing and validating OpenAI / vLLM request bodies, and the OpenAI error shape.

Only what the emulator needs is read: the prompt (to count its tokens), how many tokens to produce,
streaming options, and Block's optional expected output length. Sampling parameters (temperature,
top_p, stop, ...) are accepted and ignored: output text is synthetic. Unknown fields are ignored, as
vLLM does (with a warning there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from block.engine import prompt_tokens

EXPECTED_OUTPUT_HEADER = "x-block-expected-output-tokens"
REQUEST_ID_HEADER = "x-block-request-id"
# Response header: when the request reached the engine, in seconds on its clock (the /state clock).
ARRIVAL_TIME_HEADER = "x-block-arrival-time"

Kind = Literal["completion", "chat"]


class RequestError(Exception):
    """A request the server refuses; rendered in OpenAI's error format."""

    def __init__(
        self, message: str, param: str | None = None, status: int = 400, err_type: str = "BadRequestError"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.err_type = err_type

    def body(self) -> bytes:
        return error_body(self.message, self.err_type, self.param, self.status)


def error_body(message: str, err_type: str, param: str | None, code: int) -> bytes:
    # vLLM >= 0.10 shape: {"error": {...}} with the HTTP status as `code`.
    return orjson.dumps({"error": {"message": message, "type": err_type, "param": param, "code": code}})


@dataclass(slots=True)
class GenerationParams:
    kind: Kind
    model: str | None
    prompt_tokens: int
    max_tokens: int | None  # None: up to the end of the context
    min_tokens: int
    ignore_eos: bool
    stream: bool
    include_usage: bool
    expected_output_tokens: int | None


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise RequestError(f"invalid JSON body: {e}") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


def parse_generation(kind: Kind, body: dict[str, Any], headers: Any) -> GenerationParams:
    """Validate a /v1/completions or /v1/chat/completions body. `headers`: a case-insensitive mapping."""
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError("`model` must be a string", "model")
    n = _int(body, "n", minimum=1)
    if n is not None and n != 1:
        raise RequestError("only n=1 is supported", "n")
    if _int(body, "best_of", minimum=1) not in (None, 1):
        raise RequestError("only best_of=1 is supported", "best_of")

    if kind == "completion":
        tokens = _completion_prompt_tokens(body)
        max_tokens = _int(body, "max_tokens", minimum=1)
    else:
        tokens = _chat_prompt_tokens(body)
        max_tokens = _int(body, "max_completion_tokens", minimum=1)
        if max_tokens is None:
            max_tokens = _int(body, "max_tokens", minimum=1)
    min_tokens = _int(body, "min_tokens", minimum=0) or 0

    stream = _bool(body, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise RequestError("`stream_options` must be an object", "stream_options")
        if not stream:
            raise RequestError("stream_options can only be given when stream is true", "stream_options")
        include_usage = _bool(options, "include_usage", param="stream_options.include_usage")

    expected = _int(body, "expected_output_tokens", minimum=1)
    header = headers.get(EXPECTED_OUTPUT_HEADER)
    if expected is None and header is not None:
        try:
            expected = int(header)
        except ValueError:
            expected = 0
        if expected < 1:
            raise RequestError(
                f"header {EXPECTED_OUTPUT_HEADER} must be a positive integer", EXPECTED_OUTPUT_HEADER
            )

    return GenerationParams(
        kind=kind,
        model=model,
        prompt_tokens=tokens,
        max_tokens=max_tokens,
        min_tokens=min_tokens,
        ignore_eos=_bool(body, "ignore_eos"),
        stream=stream,
        include_usage=include_usage,
        expected_output_tokens=expected,
    )


def _completion_prompt_tokens(body: dict[str, Any]) -> int:
    if "prompt" not in body or body["prompt"] is None:
        raise RequestError("`prompt` is required", "prompt")
    prompt = body["prompt"]
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        # A batch of prompts: vLLM answers it with one choice per prompt; the emulator serves one.
        if len(prompt) != 1:
            raise RequestError("batched prompts are not supported: send one prompt per request", "prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        # vLLM tokenizes a text prompt with the tokenizer's special tokens: llama3 prepends <|begin_of_text|>.
        tokens = prompt_tokens.count_text(prompt) + prompt_tokens.BEGIN_OF_TEXT if prompt else 0
    elif isinstance(prompt, list) and all(type(t) is int and t >= 0 for t in prompt):
        tokens = len(prompt)
    else:
        raise RequestError("`prompt` must be a string or a list of token ids", "prompt")
    if tokens < 1:
        raise RequestError("the prompt is empty", "prompt")
    return tokens


def _chat_prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if messages is None:
        raise RequestError("`messages` is required", "messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("`messages` must be a non-empty list", "messages")
    pairs: list[tuple[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with a string `role`", "messages")
        text = prompt_tokens.message_text(m.get("content"))
        if text is None:
            raise RequestError(f"messages[{i}].content must be a string or a list of text parts", "messages")
        pairs.append((m["role"], text))
    return prompt_tokens.count_chat(pairs)


def _int(body: dict[str, Any], name: str, minimum: int) -> int | None:
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


def _bool(body: dict[str, Any], name: str, param: str | None = None) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"`{name}` must be a boolean", param or name)
    return value
