"""Served-model labels: replay prompts against an OpenAI-compatible engine and record its own lengths.

ShareGPT's answers came from ChatGPT; the model actually served answers at other lengths. As the Block
paper did, send each prompt with free-length output (no `ignore_eos`, only a `max_tokens` cap) and keep the
engine's `usage.completion_tokens`. The JSONL written is a workload file: `--dataset jsonl:FILE` trains and
evaluates on it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from block.errors import BlockError
from block.openai_api.prompt_tokens import TEXT_PROMPT_EXTRA
from block.workload import Sample


@dataclass(frozen=True, slots=True)
class LabelResult:
    written: int
    failed: int
    capped: int  # answers cut by max_tokens (finish_reason "length"): their true length is longer


def choose_prompts(samples: Sequence[Sample], n: int | None, seed: int) -> list[Sample]:
    """n distinct samples in a seeded random order (all of them when n is None)."""
    order = np.random.default_rng(seed).permutation(len(samples))
    return [samples[i] for i in order[: n if n is not None else len(samples)]]


async def _model_name(client, base: str) -> str:
    r = await client.get(f"{base}/v1/models")
    r.raise_for_status()
    data = r.json().get("data") or []
    if not data:
        raise BlockError(f"{base}/v1/models lists no model; pass --model")
    return str(data[0]["id"])


async def _complete(client, base: str, body: dict, stream: bool) -> tuple[int | None, str, str | None]:
    """(completion tokens from usage or None, generated text, finish reason)."""
    if not stream:
        r = await client.post(f"{base}/v1/completions", json=body)
        r.raise_for_status()
        obj = r.json()
        choice = (obj.get("choices") or [{}])[0]
        usage = obj.get("usage") or {}
        return usage.get("completion_tokens"), str(choice.get("text") or ""), choice.get("finish_reason")
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    tokens, parts, finish = None, [], None
    async with client.stream("POST", f"{base}/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            obj = json.loads(data)
            for choice in obj.get("choices") or []:
                parts.append(str(choice.get("text") or ""))
                finish = choice.get("finish_reason") or finish
            if obj.get("usage"):
                tokens = obj["usage"].get("completion_tokens", tokens)
    return tokens, "".join(parts), finish


async def label_async(
    url: str,
    samples: Sequence[Sample],
    out: Path,
    model: str | None = None,
    max_tokens: int = 2048,
    max_model_len: int = 4096,
    concurrency: int = 8,
    temperature: float = 0.0,
    stream: bool = False,
    timeout_s: float = 300.0,
    tokenizer: str = "llama3",
    on_done: Callable[[], None] | None = None,
) -> LabelResult:
    import httpx

    from block.workload import get_tokenizer

    base = url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    count = get_tokenizer(tokenizer).count
    written = failed = capped = 0
    sem = asyncio.Semaphore(max(1, concurrency))
    out.parent.mkdir(parents=True, exist_ok=True)
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        try:
            name = model or await _model_name(client, base)
        except httpx.HTTPError as e:
            raise BlockError(f"cannot reach {base}: {e}") from None
        with out.open("w", encoding="utf-8") as f:

            async def one(s: Sample) -> None:
                nonlocal written, failed, capped
                room = min(max_tokens, max_model_len - s.prompt_tokens - TEXT_PROMPT_EXTRA)
                if room < 1:
                    failed += 1
                    return
                body = {"model": name, "prompt": s.prompt, "max_tokens": room, "temperature": temperature}
                async with sem:
                    try:
                        tokens, text, finish = await _complete(client, base, body, stream)
                    except (httpx.HTTPError, json.JSONDecodeError, ValueError):
                        failed += 1
                        return
                    finally:
                        if on_done:
                            on_done()
                if tokens is None:
                    tokens = count(text)  # engine without usage: count the text ourselves
                capped += finish == "length"
                row = {
                    "prompt": s.prompt,
                    "prompt_tokens": s.prompt_tokens,
                    "output_tokens": int(tokens),
                    "finish_reason": finish,
                    "model": name,
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                f.flush()  # rows already labelled survive an interrupted run
                written += 1

            await asyncio.gather(*(one(s) for s in samples))
    if written == 0 and samples:
        raise BlockError(f"no request to {base}/v1/completions succeeded ({failed} failed)")
    return LabelResult(written, failed, capped)
