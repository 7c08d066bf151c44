"""The load generator: send streamed requests on a schedule and time every token.

One aiohttp session sends request i at `arrivals[i]` seconds after the start, streams the response
(server-sent events) and records when each event with text arrives: TTFT, every inter-token gap, E2E.
Each SSE data event carrying text counts as one token; the usage chunk, when the server sends one, gives
the exact output token count. A session workload (block.workload.sessions) sends each session's first turn
at its start and every later turn when the one before it has ended plus its think time, one session after
another in order (closed loop); a failed turn does not end its session, as a user would retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import orjson

from block.bench.record import RequestRecord
from block.openai_api.prompt_tokens import TEXT_PROMPT_EXTRA, USER_MESSAGE_EXTRA
from block.router.upstreams import check_upstream
from block.workload.sample import Sample
from block.workload.sessions import SessionPlan

INSTANCE_HEADER = "x-block-instance"
ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


@dataclass(slots=True)
class BenchResult:
    records: list[RequestRecord]  # sent requests only, in workload order
    duration_s: float  # start of the run to the last response (or to the interrupt)
    model: str
    interrupted: bool = False


def split_urls(url: str) -> list[str]:
    """The servers traffic is spread over: `url` is one base URL or several separated by commas (routers
    in front of the same fleet; requests, or a session's turns together, go to them in turn)."""
    urls = [u.strip() for u in url.split(",") if u.strip()]
    if not urls:
        raise ValueError(f"no server URL in {url!r}")
    for u in urls:
        check_upstream(u, what="server")  # a ValueError naming what is wrong with it
    return urls


def base_url(url: str) -> str:
    """http://host:port from http://host:port[/v1][/]."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


async def fetch_model(session: aiohttp.ClientSession, url: str) -> str:
    """The first model the server lists at GET /v1/models."""
    async with session.get(base_url(url) + "/v1/models") as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET {url}/v1/models returned HTTP {resp.status}; pass --model")
        data = await resp.json(content_type=None)
    models = data.get("data") or []
    if not models:
        raise RuntimeError(f"{url}/v1/models lists no model; pass --model")
    return str(models[0]["id"])


def request_body(sample: Sample, model: str, endpoint: str, ignore_eos: bool, max_tokens: int) -> dict:
    body: dict = {
        "model": model,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
    }
    if ignore_eos:
        body["ignore_eos"] = True
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": sample.prompt}]
    else:
        body["prompt"] = sample.prompt
    return body


def _event_text(event: dict, chat: bool) -> str:
    choices = event.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    if chat:
        delta = choice.get("delta") or {}
        return delta.get("content") or delta.get("reasoning_content") or ""
    return choice.get("text") or ""


async def send_one(
    session: aiohttp.ClientSession,
    url: str,
    body: dict,
    record: RequestRecord,
    t0: float,
    chat: bool,
    headers: dict[str, str] | None = None,
) -> RequestRecord:
    """Send one streamed request and fill in its record; never raises for request failures."""
    usage_tokens: int | None = None
    token_times: list[float] = []
    start = time.perf_counter()
    record.sent_s = start - t0
    try:
        async with session.post(url, json=body, headers=headers) as resp:
            record.status = resp.status
            record.instance = resp.headers.get(INSTANCE_HEADER)
            if resp.status != 200:
                text = (await resp.text())[:200].replace("\n", " ")
                record.error = f"HTTP {resp.status}: {text}"
                return record
            async for raw in resp.content:
                now = time.perf_counter()
                if not raw.startswith(b"data:"):
                    continue  # blank separators, comments, other SSE fields
                payload = raw[5:].strip()
                if payload == b"[DONE]":
                    break
                record.chunks += 1
                event = orjson.loads(payload)
                if _event_text(event, chat):
                    token_times.append(now)
                usage = event.get("usage")
                if usage and usage.get("completion_tokens") is not None:
                    usage_tokens = int(usage["completion_tokens"])
                if "error" in event:
                    record.error = f"stream error: {str(event['error'])[:200]}"
                record.parse_s += time.perf_counter() - now
        end = time.perf_counter()
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError, TypeError, AttributeError) as e:
        # A load generator must record failures, not die on them (bad JSON included).
        record.error = f"{type(e).__name__}: {e}"[:300]
        return record
    if not token_times and record.error is None:
        record.error = "no tokens received"
    if record.error is not None:
        return record
    record.ttft_s = token_times[0] - start
    record.itl_s = [b - a for a, b in zip(token_times, token_times[1:], strict=False)]
    record.e2e_s = end - start
    record.output_tokens = usage_tokens if usage_tokens is not None else len(token_times)
    return record


async def run_benchmark(
    url: str,
    samples: Sequence[Sample],
    arrivals: Sequence[float],
    *,
    endpoint: str = "completions",
    model: str | None = None,
    ignore_eos: bool = True,
    max_model_len: int = 4096,
    timeout_s: float = 3600.0,
    max_concurrency: int | None = None,
    on_done: Callable[[RequestRecord], None] | None = None,
    stop: asyncio.Event | None = None,
    sessions: SessionPlan | None = None,
    priorities: Sequence[int] | None = None,
    slo_headers: dict[str, str] | None = None,
) -> BenchResult:
    """Send `samples[i]` at `arrivals[i]` seconds from now and measure every response; `url` may name
    several servers separated by commas (split_urls).

    With ignore_eos, max_tokens is the sample's output length (the server must produce exactly that);
    without it (free length), max_tokens is what the model length leaves after the prompt and its
    special tokens (a server refuses more, as vLLM does). Setting `stop` ends the run
    early: nothing more is sent, requests in flight are abandoned and left out of the records.
    With `sessions`, `arrivals` are the sessions' starts and later turns wait for their predecessor.
    `priorities[i]` goes with request i as its x-priority header; `slo_headers` (x-slo-ttft-ms,
    x-slo-e2e-ms) with every request.
    """
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; choose one of {', '.join(ENDPOINTS)}")
    if len(samples) != len(arrivals):
        raise ValueError(f"{len(samples)} samples but {len(arrivals)} arrival times")
    if sessions is not None and len(sessions) != len(samples):
        raise ValueError(f"{len(samples)} samples but a session plan for {len(sessions)}")
    stop = stop or asyncio.Event()
    connector = aiohttp.TCPConnector(limit=max_concurrency or 0, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=30)
    post_urls = [base_url(u) + ENDPOINTS[endpoint] for u in split_urls(url)]
    post_url_of: dict[int, str] = {}  # request index -> the server it goes to
    chat = endpoint == "chat"
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        model = model or await fetch_model(session, split_urls(url)[0])
        tasks: list[asyncio.Task] = []
        done: dict[int, RequestRecord] = {}  # completed requests by index
        t0 = time.perf_counter()

        async def one(i: int, at: float) -> None:
            sample = samples[i]
            room = max_model_len - sample.prompt_tokens - (USER_MESSAGE_EXTRA if chat else TEXT_PROMPT_EXTRA)
            max_tokens = sample.output_tokens if ignore_eos else max(1, room)
            record = RequestRecord(i, sample.prompt_tokens, max_tokens, at)
            body = request_body(sample, model, endpoint, ignore_eos, max_tokens)
            headers = dict(slo_headers or {})
            if priorities is not None:
                record.priority = int(priorities[i])
                headers["x-priority"] = str(record.priority)
            await send_one(session, post_url_of[i], body, record, t0, chat, headers or None)
            done[i] = record
            if on_done is not None:
                on_done(record)

        async def turns(chain: list[int], at: float) -> None:
            """A session's turns in order: each after the previous one ended plus its think time."""
            for k, i in enumerate(chain):
                if k:
                    at = time.perf_counter() - t0 + float(sessions.think_s[i])
                    await asyncio.wait([stop_wait], timeout=max(0.0, t0 + at - time.perf_counter()))
                    if stop.is_set():
                        return
                await one(i, at)

        if sessions is None:
            starts = [(float(at), [i]) for i, at in enumerate(arrivals)]
        else:
            firsts = sessions.first_turns().tolist()
            starts = sorted(((float(arrivals[i]), sessions.chain(i)) for i in firsts), key=lambda x: x[0])
        for j, (_, chain) in enumerate(starts):  # several servers: in turn, a session's turns together
            for i in chain:
                post_url_of[i] = post_urls[j % len(post_urls)]
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            for at, chain in starts:
                delay = t0 + at - time.perf_counter()
                if delay > 0:
                    await asyncio.wait([stop_wait], timeout=delay)
                if stop.is_set():
                    break
                tasks.append(asyncio.create_task(turns(chain, at)))
            if tasks:
                await asyncio.wait(
                    [stop_wait, asyncio.gather(*tasks, return_exceptions=True)],
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            stop_wait.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        duration = time.perf_counter() - t0
    records = [done[i] for i in sorted(done)]
    return BenchResult(records=records, duration_s=duration, model=model, interrupted=stop.is_set())
