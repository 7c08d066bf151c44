"""/routed and /finished notices to a sidecar that never answers stay bounded: a timeout each, a cap
on those outstanding per sidecar, and the drops counted
(block_router_predictor_notifications_dropped_total)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import httpx

from block.router.sidecar import SidecarClient
from tests.router.servers import FakeUpstream, router, upstreams


@dataclass
class Silent:
    """A TCP server that accepts, reads and never answers (a stopped or hung sidecar)."""

    url: str = ""
    open_now: int = 0
    accepted: int = 0
    peak_open: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open_now += 1
        self.peak_open = max(self.peak_open, self.open_now)
        try:
            while await reader.read(65536):
                pass  # read the request, never answer
        except ConnectionError:
            pass
        finally:
            self.open_now -= 1
            writer.close()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[Silent]:
    silent = Silent()
    server = await asyncio.start_server(silent.handle, "127.0.0.1", 0)
    silent.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield silent
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2.0)


async def wait_until(condition, timeout_s: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return bool(condition())


async def test_notices_to_a_silent_sidecar_are_capped_timed_out_and_counted() -> None:
    drops: list[str] = []
    async with silent_server() as silent, aiohttp.ClientSession() as session:
        client = SidecarClient(silent.url, session, timeout_s=0.5, max_in_flight=8, on_drop=drops.append)
        for i in range(50):
            client.routed(f"r{i}", 10, 10)
            client.finished(f"r{i}")
        assert client.notices_in_flight == 8 and drops.count("overflow") == 92
        assert await wait_until(lambda: silent.accepted == 8, 5.0)
        # each outstanding notice times out, its connection is closed, and the cap frees up
        assert await wait_until(lambda: client.notices_in_flight == 0 and silent.open_now == 0, 5.0)
        assert drops.count("timeout") == 8 and silent.peak_open == 8
        client.routed("later", 10, 10)
        assert client.notices_in_flight == 1
        client.close()


async def test_notices_to_a_closed_port_are_counted_as_errors() -> None:
    async with silent_server() as silent:
        url = silent.url  # closed when the block ends: nothing listens there any more
    drops: list[str] = []
    async with aiohttp.ClientSession() as session:
        client = SidecarClient(url, session, timeout_s=2.0, max_in_flight=8, on_drop=drops.append)
        client.routed("r", 10, 10)
        assert await wait_until(lambda: client.notices_in_flight == 0, 5.0)
    assert drops == ["error"]


async def test_router_connections_to_a_silent_sidecar_stay_bounded() -> None:
    async with (
        silent_server() as silent,
        upstreams(FakeUpstream(tokens=1)) as ups,
        router(
            [ups[0].url],
            policy="block",
            predictors=[silent.url],
            deadline_ms=20,
            predictor_notify_timeout_s=30.0,  # longer than the test: only the cap bounds them
            predictor_notify_max_in_flight=4,
        ) as (_app, url),
    ):
        async with httpx.AsyncClient(timeout=10) as c:
            for _ in range(20):
                r = await c.post(url + "/v1/completions", json={"prompt": "a b", "max_tokens": 1})
                assert r.status_code == 200  # a silent sidecar never fails a request
            metrics = (await c.get(url + "/metrics")).text
        # 4 notices at most, plus a forecast request being cancelled at its deadline
        assert silent.peak_open <= 4 + 2, silent.peak_open
        dropped = next(
            line
            for line in metrics.splitlines()
            if line.startswith('block_router_predictor_notifications_dropped_total{reason="overflow"}')
        )
        assert float(dropped.split()[-1]) == 40 - 4  # 20 routed + 20 finished, 4 outstanding
