"""Online calibration in the router, over real HTTP: two emulated engines with model error (one slow, one
fast, both reporting the nominal profile); the router measures each one's speed from the tokens it relays
and exports the factors on /metrics and in GET /instances."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from block.engine.server import BackgroundEngine
from block.engine.settings import EngineSettings, replica_config
from block.profiles import load_profile
from block.profiles.model_error import ModelError
from tests.router.operator_traffic import scrape
from tests.router.servers import router

ERROR = ModelError("static", 0.5)
FAST, SLOW = 0, 2  # instance indexes whose static draws are 0.73x and 1.65x the profile's step time


async def test_the_router_measures_each_engines_speed_and_exports_it() -> None:
    assert ERROR.factor(FAST)(0) < 0.8 and ERROR.factor(SLOW)(0) > 1.5
    profile = load_profile("llama-2-7b-a30")  # ~25 ms decode steps: measurable over HTTP
    engines = [
        BackgroundEngine(
            EngineSettings(profile, replica_config(profile), noise=0.0, seed=seed, model_error=ERROR)
        ).start()
        for seed in (FAST, SLOW)
    ]
    try:
        urls = [e.url for e in engines]
        async with router(urls, policy="round-robin", calibration=True) as (app, url):
            async with httpx.AsyncClient(timeout=60) as c:

                async def one(i: int) -> None:
                    body = {"prompt": "hello " * (20 + 5 * i), "max_tokens": 24, "ignore_eos": True}
                    r = await c.post(url + "/v1/completions", json={**body, "stream": True})
                    assert r.status_code == 200, r.text

                await asyncio.gather(*(one(i) for i in range(8)))
                instances = (await c.get(url + "/instances")).json()["instances"]
            text = await scrape(url)
        factors = {
            (s.labels["instance"], s.labels["phase"]): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "block_router_calibration_factor"
        }
        by_url = {i["url"]: i for i in instances}
        fast, slow = (by_url[u]["id"] for u in urls)
        assert {p for _, p in factors} == {"decode", "prefill"}
        assert by_url[urls[1]]["calibration"]["decode_samples"] > 10
        # the slow engine's steps take ~2.3x the fast one's; a loaded machine slows both
        assert factors[(slow, "decode")] > 1.5 * factors[(fast, "decode")]
        assert min(factors.values()) >= 0.25 and max(factors.values()) <= 4.0
    finally:
        for e in engines:
            e.stop()
