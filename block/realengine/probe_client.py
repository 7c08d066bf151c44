"""One streamed completion, timed token by token: the raw measurement behind profile fitting.

Prompts are token-id lists (exact prompt lengths, no tokenizer needed client-side, fresh random ids per
request so no prefix cache can shortcut prefill). `return_token_ids` lets vLLM say how many tokens each SSE
chunk carries (it coalesces tokens when the client falls behind); engines without it count one per chunk.

aiohttp rather than httpx: with dozens of concurrent streams httpx's connection pool and line iterator
cost enough CPU to fall seconds behind an open-loop schedule on a small machine (encode/httpx#3215),
and on two cores every cycle the client spends is taken from the engine it measures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import aiohttp
import orjson


@dataclass
class StreamTiming:
    prompt_tokens: int
    max_tokens: int
    sent: float  # time.monotonic() when the request went out
    token_times: list[float] = field(default_factory=list)  # one entry per output token (monotonic)
    usage_completion_tokens: int | None = None
    error: str | None = None
    # How late the request went out against its schedule (open-loop replay): a client whose event loop
    # stalls measures nothing trustworthy, so reports say how late it was.
    send_late_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.token_times)

    @property
    def ttft(self) -> float:
        return self.token_times[0] - self.sent

    @property
    def e2e(self) -> float:
        return self.token_times[-1] - self.sent


_JSON = {"content-type": "application/json"}


async def stream_completion(
    session: aiohttp.ClientSession,
    url: str,
    model: str,
    prompt: list[int] | str,
    max_tokens: int,
    prompt_tokens: int,
) -> StreamTiming:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "ignore_eos": True,  # exact output length: the engine's work is fixed by the probe
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }
    timing = StreamTiming(prompt_tokens, max_tokens, time.monotonic())
    try:
        url = url.rstrip("/") + "/v1/completions"
        async with session.post(url, data=orjson.dumps(body), headers=_JSON) as r:
            if r.status != 200:
                timing.error = f"HTTP {r.status}: {(await r.read())[:300]!r}"
                return timing
            async for raw in r.content:  # one SSE line at a time
                if not raw.startswith(b"data: ") or raw.startswith(b"data: [DONE]"):
                    continue
                now = time.monotonic()
                chunk = orjson.loads(raw[6:])
                if chunk.get("usage"):
                    timing.usage_completion_tokens = chunk["usage"].get("completion_tokens")
                for choice in chunk.get("choices") or []:
                    ids = choice.get("token_ids")
                    n = len(ids) if isinstance(ids, list) else (1 if choice.get("text") else 0)
                    timing.token_times.extend([now] * n)
    except (aiohttp.ClientError, TimeoutError) as e:
        timing.error = f"{type(e).__name__}: {e}"
    return timing


def client_session(timeout_s: float = 600.0) -> aiohttp.ClientSession:
    """One session for a whole probe run or replay: no connection limit (the schedule, not the pool,
    decides when a request goes out)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=timeout_s)
    )
