"""What the router needs to know about a request before choosing: prompt tokens and planned output.

Parsed once from the JSON body by the parser the engine uses too (block/openai_api/request.py): the
same validation, and the same prompt count (the Llama 3 chat template, <|begin_of_text|> included),
with the tokenizer the router is configured with. Any body either parses or raises `RequestError`
(a 4xx for the client), never anything else.

The length estimator (block/length, loaded by `load_length_estimate`) sees a chat as its last user
message: it was trained on ShareGPT first-turn prompts, plain text without roles, and the last user
message is what the answer replies to (a role prefix measurably worsened its error).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from block.openai_api.prompt_tokens import TEXT_PROMPT_EXTRA, Llama3Prompts, PromptIds
from block.openai_api.request import model_not_found, parse_request

if TYPE_CHECKING:
    from block.router.length_batcher import LengthBatcher

log = logging.getLogger("block.router.request_shape")

CHAT_PATH = "/v1/chat/completions"
ENCODER_SCORERS = {"finetune", "minilm"}  # length models that run a transformer: milliseconds per prompt

# (prompt text, its token count or None) -> planned output tokens; see load_length_estimate.
LengthEstimate = Callable[[str, int | None], int]


@dataclass(slots=True)
class RequestShape:
    prompt_tokens: int
    expected_output_tokens: int
    max_tokens: int | None
    stream: bool
    prompt_text: str | None  # what the estimator read; None for token-id prompts or without estimator
    prompt_token_ids: list[int] | None = None  # when parsed with `prompt_ids` (see parse_request)
    text_tokens: int | None = None  # of prompt_text alone
    length_fixed: bool = False  # max_tokens with ignore_eos: the client fixed the length


def parse_shape(
    path: str,
    body: Any,
    count: Callable[[str], int],
    estimate: LengthEstimate | None,
    default_output_tokens: int,
    served_models: Collection[str] | None = None,
    prompt_ids: PromptIds | None = None,
    read_text: bool = False,
) -> RequestShape:
    """`served_models`: the model names the instances serve (None: not known, any is passed on).
    `prompt_ids`: lay the prompt out as token ids (counted from them), for its prefix identity.
    `read_text`: keep the estimator's text even without `estimate`, for a batched estimate afterwards
    (`estimate_batched`)."""
    req = parse_request("chat" if path == CHAT_PATH else "completion", body, count, prompt_ids)
    if served_models is not None and req.model and req.model not in served_models:
        raise model_not_found(req.model)
    text: str | None = None
    text_tokens: int | None = None
    if req.messages is not None:
        if estimate is not None or read_text:  # only the estimator reads the text
            text = estimator_text(req.messages)
            text_tokens = count(text)
    elif req.prompt_text is not None:
        text = req.prompt_text
        text_tokens = req.prompt_tokens - TEXT_PROMPT_EXTRA * req.prompts  # the text alone
    expected = expected_output_tokens(
        req.max_tokens, req.ignore_eos, text, estimate, default_output_tokens, text_tokens
    )
    fixed = req.max_tokens is not None and req.ignore_eos
    return RequestShape(
        req.prompt_tokens,
        expected,
        req.max_tokens,
        req.stream,
        text,
        req.prompt_token_ids,
        text_tokens,
        fixed,
    )


async def estimate_batched(shape: RequestShape, batcher: LengthBatcher) -> None:
    """Plan `shape` with the batched length model, like `expected_output_tokens` plans with an inline one:
    unless the client fixed the length, capped by max_tokens, the default kept when the model fails."""
    if shape.prompt_text is None or shape.length_fixed:
        return
    try:
        guess = max(1, int(await batcher(shape.prompt_text, shape.text_tokens)))
    except Exception:  # a broken estimate must never fail the request: plan with the default
        log.exception("length estimator failed; planning %d output tokens", shape.expected_output_tokens)
        return
    shape.expected_output_tokens = min(guess, shape.max_tokens) if shape.max_tokens is not None else guess


def estimator_text(messages: list[tuple[str, str]]) -> str:
    """The text the length estimator reads for a chat: the last user message (see the module doc)."""
    for role, content in reversed(messages):
        if role == "user" and content:
            return content
    return "\n".join(content for _, content in messages if content)


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


def load_length_estimate(
    spec: str | None, quantile: float | None = None
) -> LengthEstimate | LengthBatcher | None:
    """The router's length estimate from `--length-model` (a file, or "default" for the shipped model)
    and `--length-quantile` (plan with that quantile of the predicted length; None: the median).

    A model that runs a transformer encoder (finetune, minilm) comes as a LengthBatcher: the router awaits
    it, and concurrent requests are predicted together in a worker thread (block.router.length_batcher).

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
    levels = (0.5 if quantile is None else float(quantile),)
    if set(estimator.scorers) & ENCODER_SCORERS:
        from block.router.length_batcher import LengthBatcher

        if quantile is None or quantile == 0.5:
            return LengthBatcher(estimator.predict_many)
        return LengthBatcher(
            lambda texts, tokens: estimator.predict_quantiles_many(texts, levels, tokens)[:, 0]
        )
    if quantile is None or quantile == 0.5:
        return estimator.predict  # the median: only its trees are evaluated

    def at_quantile(text: str, text_tokens: int | None) -> int:
        tokens = None if text_tokens is None else [text_tokens]
        return int(estimator.predict_quantiles_many([text], levels, tokens)[0, 0])

    return at_quantile


def load_prompt_layout(tokenizer: str) -> tuple[Callable[[str], int], PromptIds]:
    """The router's counter and prompt layout from `--tokenizer`: a directory is a served model's own
    tokenizer and chat template (ids as the engine's, block.openai_api.hf_prompts); a name is one of the
    offline tokenizers in the Llama 3 layout (block.openai_api.prompt_tokens)."""
    if Path(tokenizer).is_dir():
        from block.openai_api.hf_prompts import HFPrompts

        prompts = HFPrompts.load(tokenizer)
        return prompts.count, prompts
    from block.workload.tokenizer import get_tokenizer

    named = get_tokenizer(tokenizer)
    return named.count, Llama3Prompts(named.encode_ordinary)
