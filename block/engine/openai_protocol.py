"""Parsing and validating OpenAI / vLLM request bodies for the emulator.

The fields the router reads as well are parsed by the shared `block.openai_api.request` (the same
validation, the same prompt count); this adds what only the emulator needs or refuses: the served
model name, n = 1 and one prompt per request (vLLM serves more; the emulator does not), and Block's
optional expected output length. Sampling parameters are validated there and otherwise ignored:
output text is synthetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from block.engine import prompt_tokens
from block.openai_api.errors import RequestError, error_body
from block.openai_api.prompt_tokens import Llama3Prompts
from block.openai_api.request import Kind, integer, model_not_found, parse_request

__all__ = ["GenerationParams", "Kind", "RequestError", "error_body", "parse_body", "parse_generation"]

EXPECTED_OUTPUT_HEADER = "x-block-expected-output-tokens"
REQUEST_ID_HEADER = "x-block-request-id"
# Response header: when the request reached the engine, in seconds on its clock (the /state clock).
ARRIVAL_TIME_HEADER = "x-block-arrival-time"


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
    prompt_token_ids: list[int] | None = None  # laid out when asked (prefix caching hashes them)


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise RequestError(f"invalid JSON body: {e}") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


def parse_generation(
    kind: Kind,
    body: Any,
    headers: Any,
    served_models: frozenset[str] | None = None,
    token_ids: bool = False,
) -> GenerationParams:
    """Validate a /v1/completions or /v1/chat/completions body. `headers`: a case-insensitive mapping;
    `served_models`: the model names answered (None: any); a missing or empty `model` is the served one;
    `token_ids`: also lay out the prompt's token ids (the router's way, block.openai_api)."""
    layout = Llama3Prompts(prompt_tokens.encode_text) if token_ids else None
    req = parse_request(kind, body, prompt_tokens.count_text, layout)
    if served_models is not None and req.model and req.model not in served_models:
        raise model_not_found(req.model)
    if req.n != 1:
        raise RequestError("only n=1 is supported", "n")
    if integer(body, "best_of", minimum=1) not in (None, 1):
        raise RequestError("only best_of=1 is supported", "best_of")
    if req.prompts != 1:
        # A batch of prompts: vLLM answers it with one choice per prompt; the emulator serves one.
        raise RequestError("batched prompts are not supported: send one prompt per request", "prompt")

    expected = integer(body, "expected_output_tokens", minimum=1)
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
        model=req.model,
        prompt_tokens=req.prompt_tokens,
        max_tokens=req.max_tokens,
        min_tokens=req.min_tokens,
        ignore_eos=req.ignore_eos,
        stream=req.stream,
        include_usage=req.include_usage,
        expected_output_tokens=expected,
        prompt_token_ids=req.prompt_token_ids,
    )
