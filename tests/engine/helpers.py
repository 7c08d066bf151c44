"""Small HTTP helpers for the engine tests: every wait is bounded in time."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

_FIRST = itertools.count(50_000)


def sse_events(text: str) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded except the final [DONE] (kept as a string)."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        block = block.strip()
        if not block:
            continue
        assert block.startswith("data: "), block
        payload = block[6:]
        out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


async def wait_for(
    client: httpx.AsyncClient, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 3.0
) -> dict[str, Any]:
    """Poll /state until `predicate(state)` holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = (await client.get("/state")).json()
        if predicate(state):
            return state
        await asyncio.sleep(0.01)
    raise AssertionError(f"state never satisfied the condition: {state}")


async def timed_completion(client: httpx.AsyncClient, prompt: int, output: int) -> tuple[float, float]:
    """(TTFT, TPOT) of one streamed completion of exactly `output` tokens, as the client saw them."""
    # a first token of its own: no prefix cache hit on an earlier run's prompt
    body = {
        "prompt": [next(_FIRST), *range(1, prompt)],
        "max_tokens": output,
        "ignore_eos": True,
        "stream": True,
    }
    sent = time.perf_counter()
    stamps: list[float] = []
    async with client.stream("POST", "/v1/completions", json=body) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                stamps.append(time.perf_counter())
    assert len(stamps) == output
    return stamps[0] - sent, (stamps[-1] - stamps[0]) / (output - 1)


def idle(state: dict[str, Any]) -> bool:
    return (
        not state["running"]
        and not state["waiting"]
        and state["free_blocks"] == state["config"]["num_gpu_blocks"]
    )
