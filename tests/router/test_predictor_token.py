"""A router given the sidecars' token (--predictor-token) gets their forecasts; without it every
forecast is refused (401), counted as a fallback, and its notices are counted as dropped."""

from __future__ import annotations

import asyncio

import httpx

from tests.predictor.servers import engine, sidecar_service
from tests.router.servers import router

TOKEN = "shared-secret"


def dropped(metrics: str, reason: str) -> float:
    prefix = f'block_router_predictor_notifications_dropped_total{{reason="{reason}"}}'
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix))


async def routed_through(token: str | None, requests: int = 4) -> tuple[float, str, int]:
    """Fallbacks, the router's /metrics, and the /routed notices the sidecar accepted."""
    with engine() as eng, sidecar_service(eng, token=TOKEN) as (service, sidecar_url):
        async with router(
            [eng], policy="block", predictors=[sidecar_url], deadline_ms=2000, predictor_token=token
        ) as (app, url):
            async with httpx.AsyncClient(timeout=30) as c:
                for _ in range(requests):
                    r = await c.post(url + "/v1/completions", json={"prompt": "a b c", "max_tokens": 2})
                    assert r.status_code == 200  # served either way
                await asyncio.sleep(0.2)  # the last /finished notice
                metrics = (await c.get(url + "/metrics")).text
            fallbacks = sum(app.metrics.fallback_counts.values())
        assert service.tracker is not None
        return fallbacks, metrics, service.tracker._routed.recorded


async def test_a_router_with_the_token_gets_forecasts() -> None:
    fallbacks, metrics, routed = await routed_through(TOKEN)
    assert fallbacks == 0 and routed == 4
    assert dropped(metrics, "error") == 0


async def test_a_router_without_the_token_is_refused_and_falls_back() -> None:
    fallbacks, metrics, routed = await routed_through(None)
    assert fallbacks == 4 and routed == 0
    assert dropped(metrics, "error") == 8  # 4 /routed and 4 /finished refused
