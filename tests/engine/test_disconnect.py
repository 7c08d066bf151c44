"""A client that goes away aborts its request and gives its KV blocks back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from block.engine.server import BackgroundEngine
from tests.engine.helpers import idle, wait_for


@pytest.fixture
async def client(engine: BackgroundEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=engine.url, timeout=10.0) as c:
        yield c


async def test_streaming_client_disconnect_frees_blocks(
    engine: BackgroundEngine, client: httpx.AsyncClient
) -> None:
    await wait_for(client, idle)
    body = {"prompt": list(range(100)), "max_tokens": 500, "ignore_eos": True, "stream": True}
    async with (
        httpx.AsyncClient(base_url=engine.url, timeout=10.0) as leaver,
        leaver.stream("POST", "/v1/completions", json=body, headers={"x-block-request-id": "leaver"}) as r,
    ):
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                break  # one token out: the request holds blocks now
        state = (await client.get("/state")).json()
        assert [q["id"] for q in state["running"]] == ["leaver"] and state["free_blocks"] < 64
    # leaving the block closed the connection mid-stream
    state = await wait_for(client, idle)
    assert state["free_blocks"] == 64


async def test_waiting_streaming_client_disconnect_frees_its_place(
    engine: BackgroundEngine, client: httpx.AsyncClient
) -> None:
    """A request still queued (no token yet, nothing written) is noticed too."""
    await wait_for(client, idle)
    # 8 sequences fill the engine (max_num_seqs 8); a ninth waits.
    fill = [
        asyncio.create_task(
            client.post("/v1/completions", json={"prompt": [1], "max_tokens": 60, "ignore_eos": True})
        )
        for _ in range(8)
    ]
    await wait_for(client, lambda s: len(s["running"]) == 8)
    body = {"prompt": [1, 2, 3], "max_tokens": 5, "ignore_eos": True, "stream": True}
    leaver = httpx.AsyncClient(base_url=engine.url, timeout=10.0)
    task = asyncio.create_task(
        leaver.post("/v1/completions", json=body, headers={"x-block-request-id": "queued"})
    )
    await wait_for(client, lambda s: [q["id"] for q in s["waiting"]] == ["queued"])
    task.cancel()
    await leaver.aclose()
    await wait_for(client, lambda s: not s["waiting"], timeout_s=0.3)  # gone long before a slot frees
    await asyncio.wait_for(asyncio.gather(*fill), 5)
    await wait_for(client, idle)


async def test_non_streaming_client_disconnect_frees_blocks(
    engine: BackgroundEngine, client: httpx.AsyncClient
) -> None:
    await wait_for(client, idle)
    leaver = httpx.AsyncClient(base_url=engine.url, timeout=10.0)
    body = {"prompt": list(range(200)), "max_tokens": 500, "ignore_eos": True}
    task = asyncio.create_task(
        leaver.post("/v1/completions", json=body, headers={"x-block-request-id": "nb"})
    )
    await wait_for(client, lambda s: any(q["id"] == "nb" and q["output_tokens"] > 0 for q in s["running"]))
    task.cancel()
    await leaver.aclose()
    state = await wait_for(client, idle, timeout_s=1.0)
    assert state["free_blocks"] == 64
    metrics = (await client.get("/metrics")).text
    assert 'vllm:request_success_total{finished_reason="abort"' in metrics


async def test_client_leaving_while_sending_its_body_logs_no_traceback(
    engine: BackgroundEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn's loggers do not propagate to the root logger: listen to its error logger directly."""
    uvicorn_errors = logging.getLogger("uvicorn.error")
    uvicorn_errors.addHandler(caplog.handler)
    try:
        reader, writer = await asyncio.open_connection(engine.host, engine.port)
        head = (
            "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            "content-length: 1000\r\n\r\n"
        )
        writer.write(head.encode() + b'{"prompt": "half a bo')
        await writer.drain()
        await asyncio.sleep(0.2)  # the handler is reading the body now
        writer.close()
        await writer.wait_closed()
        async with httpx.AsyncClient(base_url=engine.url, timeout=10.0) as c:
            assert (await c.get("/health")).status_code == 200  # the request is over
        await asyncio.sleep(0.2)
    finally:
        uvicorn_errors.removeHandler(caplog.handler)
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
