"""Replay one workload, open loop, against any OpenAI-compatible engine with exact token counts.

Each request is sent as a list of P random token ids with max_tokens D and ignore_eos, so a real vLLM and
the emulator do precisely the same work whatever tokenizer either uses; arrival offsets are fixed up
front, so both see the same arrival pattern. Used by the fidelity benchmark.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import numpy as np
import uvloop

from block.clock import sleep_until
from block.realengine.probe_client import StreamTiming, client_session, stream_completion


@dataclass(frozen=True)
class ReplayRequest:
    offset_s: float
    prompt_tokens: int
    output_tokens: int


@dataclass
class LatencyStats:
    ttft: list[float]
    tpot: list[float]
    e2e: list[float]
    failed: int
    send_late_max_s: float = 0.0  # the latest any request went out against its schedule

    def summary(self) -> dict[str, dict[str, float]]:
        def stats(xs: list[float]) -> dict[str, float]:
            a = np.asarray(xs) if xs else np.asarray([float("nan")])
            return {
                "mean": float(a.mean()),
                "p50": float(np.percentile(a, 50)),
                "p99": float(np.percentile(a, 99)),
            }

        return {"ttft": stats(self.ttft), "tpot": stats(self.tpot), "e2e": stats(self.e2e)}


def latency_stats(timings: list[StreamTiming]) -> LatencyStats:
    good = [t for t in timings if t.ok and len(t.token_times) == t.max_tokens]
    tpot = [(t.e2e - t.ttft) / (t.max_tokens - 1) for t in good if t.max_tokens > 1]
    late = max((t.send_late_s for t in timings), default=0.0)
    return LatencyStats([t.ttft for t in good], tpot, [t.e2e for t in good], len(timings) - len(good), late)


async def _replay(url: str, model: str, requests: list[ReplayRequest], seed: int) -> list[StreamTiming]:
    rng = random.Random(seed)
    prompts = [[rng.randrange(100, 1000) for _ in range(r.prompt_tokens)] for r in requests]
    async with client_session() as client:
        start = time.monotonic()

        async def one(r: ReplayRequest, prompt: list[int]) -> StreamTiming:
            await sleep_until(start + r.offset_s)
            t = await stream_completion(client, url, model, prompt, r.output_tokens, r.prompt_tokens)
            t.send_late_s = t.sent - (start + r.offset_s)
            return t

        return list(await asyncio.gather(*(one(r, p) for r, p in zip(requests, prompts, strict=True))))


def replay(url: str, model: str, requests: list[ReplayRequest], seed: int = 0) -> list[StreamTiming]:
    # uvloop: the client's own overhead is part of what it measures, so keep it small.
    return uvloop.run(_replay(url, model, requests, seed))
