"""End to end over real HTTP: two emulated engines behind the router with the `cache-aware` policy and
the real tokenizer. Prompts that share a long prefix go where that prefix went first; a new prefix goes
to the instance with the most room. Both as Block engines and as stock vLLM (no /state: the router reads
/metrics and keeps its own record of what it routed where)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from block.engine.app import EngineServer
from block.engine.settings import EngineSettings, replica_config
from block.profiles import load_profile
from block.router.app import RouterApp
from block.router.config import RouterConfig
from tests.router.servers import Served

SYSTEM = {
    "a": "You are a careful assistant for questions about astronomy and the night sky. " * 12,
    "b": "You answer questions on baking bread, pastry and the chemistry of dough. " * 12,
}


class StockVllm:
    """The emulator as stock vLLM shows itself: no GET /state."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/state":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


@contextlib.asynccontextmanager
async def fleet(stock: bool) -> AsyncIterator[tuple[RouterApp, str]]:
    profile = load_profile("tiny-fast")
    engines = []
    for i in range(2):
        app = EngineServer(EngineSettings(profile, replica_config(profile), noise=0.0, seed=i)).app
        engines.append(Served(StockVllm(app) if stock else app))
    router: Served | None = None
    try:
        for e in engines:
            await e.start()
        config = RouterConfig(
            instances=[e.url for e in engines], policy="cache-aware", health_interval=0.1, refresh_ms=20
        )
        app = RouterApp(config)  # the configured tokenizer (llama3): prompts carry their block hashes
        router = await Served(app).start()
        assert await app.pool.wait_ready(2, timeout=5.0)
        yield app, router.url
    finally:
        if router is not None:
            await router.stop()
        for e in engines:
            await e.stop()


async def ask(c: httpx.AsyncClient, url: str, group: str, i: int, tokens: int = 4) -> str:
    body = {"prompt": f"{SYSTEM[group]}Question {i}: what is new?", "max_tokens": tokens, "ignore_eos": True}
    r = await c.post(url + "/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return r.headers["x-block-instance"]


@pytest.mark.parametrize("stock", [False, True], ids=["block-engine", "stock-vllm"])
async def test_repeated_prefixes_follow_their_first_request(stock: bool) -> None:
    async with fleet(stock) as (app, url), httpx.AsyncClient(timeout=20) as c:
        kinds = {i.kind for i in app.pool.instances.values()}
        assert kinds == ({"vllm"} if stock else {"block"})
        # Group a's first three arrive together and stay busy a while (long answers): each follows the
        # first one, whose blocks the router recorded there.
        busy = [asyncio.create_task(ask(c, url, "a", i, tokens=800)) for i in range(3)]
        # their blocks show in the instances' KV use (/state every 20 ms; vLLM's /metrics every 250 ms)
        await asyncio.sleep(0.5)
        # Group b's first one finds no prefix anywhere: the instance with the most free blocks takes
        # it; the rest of b follows it there.
        b_first = await ask(c, url, "b", 0)
        b_rest = [await ask(c, url, "b", i) for i in range(1, 4)]
        a_busy = await asyncio.gather(*busy)
        a_rest = [await ask(c, url, "a", i) for i in range(3, 6)]
        listing = (await c.get(url + "/instances")).json()["instances"]
        quoting = {"prompt": "Explain <|begin_of_text|> and <|eot_id|>.", "max_tokens": 2}
        assert (await c.post(url + "/v1/completions", json=quoting)).status_code == 200  # text, not refused
    assert len(set(a_busy)) == 1 and set(a_rest) == set(a_busy)
    assert set(b_rest) == {b_first} and b_first != a_busy[0]
    assert all(row["prefix_index_blocks"] > 0 for row in listing)  # both hold a recorded prefix
    text = app.metrics.render().decode()
    prompt = _counter(text, "block_router_prefix_prompt_tokens_total")
    cached = _counter(text, "block_router_prefix_cached_tokens_total")
    # 10 of the 12 grouped requests found their group's system prompt (about 90% of each prompt) cached
    assert prompt > 0 and 0.6 < cached / prompt < 0.9


def _counter(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))
