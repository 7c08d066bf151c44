"""A tiny OpenAI-style streaming server for client tests, run on 127.0.0.1 in a background thread.

It streams `max_tokens` tokens: the first after `first_delay_s`, the rest `gap_s` apart, then a usage
chunk and [DONE]. A prompt containing "FAIL" gets HTTP 500.
"""

from __future__ import annotations

import asyncio
import json
import threading

from aiohttp import web


class SseServer:
    def __init__(self, first_delay_s: float = 0.05, gap_s: float = 0.01, instance: str = "inst-0") -> None:
        self.first_delay_s = first_delay_s
        self.gap_s = gap_s
        self.instance = instance
        self.bodies: list[dict] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SseServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._stream)
        app.router.add_post("/v1/chat/completions", self._stream)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "test-model", "object": "model"}]})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        prompt = body.get("prompt") or body["messages"][0]["content"]
        if "FAIL" in prompt:
            return web.Response(status=500, text="boom")
        chat = "messages" in body
        resp = web.StreamResponse(
            headers={"content-type": "text/event-stream", "x-block-instance": self.instance}
        )
        await resp.prepare(request)
        n = int(body["max_tokens"])
        for i in range(n):
            await asyncio.sleep(self.first_delay_s if i == 0 else self.gap_s)
            choice = {"index": 0, "delta": {"content": f" t{i}"}} if chat else {"index": 0, "text": f" t{i}"}
            await resp.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
        usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": n + 3}}
        await resp.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        return resp
