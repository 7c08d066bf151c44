"""At noise 0 a live engine keeps the profile's time: client-measured TTFT and TPOT match a Replica
that runs the same requests in virtual time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from block.engine.bench import predict
from block.engine.server import BackgroundEngine
from tests.conftest import make_test_profile
from tests.engine.helpers import idle, timed_completion, wait_for

PROMPT, OUTPUT = 640, 16  # 10 prefill chunks of 64 tokens, then 15 decode steps: about 0.33 s a request


@pytest.fixture
async def client(engine: BackgroundEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=engine.url, timeout=10.0) as c:
        yield c


async def test_ttft_and_tpot_match_the_virtual_replica(
    engine: BackgroundEngine, client: httpx.AsyncClient
) -> None:
    await wait_for(client, idle)
    [(ttft, tpot)] = predict(make_test_profile(), engine.engine_server.config, [0.0], PROMPT, OUTPUT)
    await timed_completion(client, PROMPT, OUTPUT)  # warm the connection
    # TTFT carries the HTTP round trip (one or two milliseconds here, about 1.5%) on top of the engine's
    # time. A shared CI machine can stall any single request, so the best of a few runs must match.
    errors = []
    for _ in range(6):
        measured_ttft, measured_tpot = await timed_completion(client, PROMPT, OUTPUT)
        errors.append((measured_ttft / ttft - 1, measured_tpot / tpot - 1))
        if abs(errors[-1][0]) <= 0.05 and abs(errors[-1][1]) <= 0.03:
            break
    else:
        raise AssertionError(f"no run within 5% TTFT / 3% TPOT of the virtual replica: {errors}")
