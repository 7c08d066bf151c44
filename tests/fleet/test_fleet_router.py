"""A stock-vLLM fleet with two profiles: the router forecasts each instance with the fleet file's profile
and settings. Real emulated engines (block engine, in process) with their /state hidden, so the router
reads them as it reads vLLM (/metrics + its own record) and learns no profile from them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from block.engine.app import EngineServer
from block.engine.settings import EngineSettings
from block.profiles import load_profile
from block.replica import ReplicaConfig
from block.request import RoutingRequest
from block.router.app import RouterApp
from block.router.config import RouterConfig
from tests.router.servers import Served, count_words


class WithoutState:
    """An engine as stock vLLM shows itself: everything but GET /state (a 404 there)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/state":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


async def test_stock_vllm_fleet_forecasts_each_instance_with_its_own_profile(tmp_path: Path) -> None:
    engines = [
        EngineServer(EngineSettings(load_profile("tiny-fast"), ReplicaConfig(), noise=0.0, seed=i))
        for i in range(2)
    ]
    served = [await Served(WithoutState(e.app)).start() for e in engines]
    router: Served | None = None
    try:
        fleet = tmp_path / "fleet.yaml"
        fleet.write_text(
            "policy: block\n"
            "instances:\n"
            f"  - url: {served[0].url}\n"
            "    profile: llama-2-7b-a100\n"
            f"  - url: {served[1].url}\n"
            "    profile: llama-2-7b-a30\n"
            "    max_num_seqs: 24\n"
        )
        config = RouterConfig.build(fleet_path=fleet, health_interval=0.1, refresh_ms=20)
        app = RouterApp(config, count_tokens=count_words)
        router = await Served(app).start()
        assert await app.pool.wait_ready(2, timeout=5.0)
        fast, slow = (app.pool.instances[s.url.removeprefix("http://")] for s in served)
        assert fast.kind == slow.kind == "vllm"
        assert fast.tracker is not None and slow.tracker is not None
        assert fast.tracker.profile is not None and fast.tracker.profile.name == "llama-2-7b-a100"
        assert slow.tracker.profile is not None and slow.tracker.profile.name == "llama-2-7b-a30"
        # Settings: the profile's defaults, then the file's; the cache size from the engine's /metrics.
        assert (fast.tracker.config.max_num_seqs, slow.tracker.config.max_num_seqs) == (256, 24)
        assert fast.tracker.num_gpu_blocks == slow.tracker.num_gpu_blocks == 1052
        question = RoutingRequest(800, 200)
        f, s = (t.predict(question, time.monotonic()) for t in (fast.tracker, slow.tracker))
        assert f is not None and s is not None
        assert 1.5 < s.e2e_s / f.e2e_s < 2.5  # the A30 steps about twice as long as the A100
        # Routed through the router: block sends it where its forecast is soonest, the A100.
        async with httpx.AsyncClient(timeout=10) as c:
            body = {"model": "synthetic", "prompt": "word " * 50, "max_tokens": 4, "ignore_eos": True}
            r = await c.post(router.url + "/v1/completions", json=body)
            listed = (await c.get(router.url + "/instances")).json()["instances"]
        assert r.status_code == 200, r.text
        assert [i["profile"] for i in listed] == ["llama-2-7b-a100", "llama-2-7b-a30"]
        assert engines[0].metrics.prompt_tokens > 0 and engines[1].metrics.prompt_tokens == 0
    finally:
        if router is not None:
            await router.stop()
        await asyncio.gather(*(s.stop() for s in served))
