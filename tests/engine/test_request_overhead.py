"""A profile's request overhead (time a real server spends on a request outside its engine steps) delays
the request's admission in the emulator: TTFT grows by it, TPOT does not."""

from __future__ import annotations

import dataclasses

import httpx

from block.engine.bench import predict
from block.engine.server import background_engine
from block.engine.settings import EngineSettings, replica_config
from tests.conftest import make_test_profile
from tests.engine.helpers import timed_completion

OVERHEAD = 0.15
PROMPT, OUTPUT = 64, 4


async def _ttft_tpot(url: str) -> tuple[float, float]:
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
        await client.get("/health")  # open the connection first
        return await timed_completion(client, PROMPT, OUTPUT)


async def test_request_overhead_delays_admission() -> None:
    profile = dataclasses.replace(make_test_profile(), request_overhead_s=OVERHEAD)
    settings = EngineSettings(profile, replica_config(profile), noise=0.0, seed=1, model="test-model")
    [(ttft, tpot)] = predict(profile, settings.config, [0.0], PROMPT, OUTPUT)
    with background_engine(settings) as engine:
        runs = [await _ttft_tpot(engine.url) for _ in range(3)]
    assert ttft > OVERHEAD  # the virtual replica counts it too
    # A loaded machine only ever adds time: every run pays the overhead, the best one little more.
    assert all(t >= ttft * 0.99 for t, _ in runs), runs
    assert min(t for t, _ in runs) < ttft + 0.05, runs
    assert min(abs(x / tpot - 1) for _, x in runs) < 0.1, runs
