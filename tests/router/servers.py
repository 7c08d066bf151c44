"""Real HTTP servers on 127.0.0.1 free ports, in the test's own event loop, and a fake upstream engine
with failure injection (the real emulator is used where no failure needs injecting)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn

from block.router.app import RouterApp
from block.router.config import RouterConfig


def bound_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class Served:
    """An ASGI app served by uvicorn on a free port until stop(); restartable on the same port."""

    def __init__(self, app: Any, port: int = 0) -> None:
        self.app = app
        self.port = port
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 5.0) -> Served:
        sock = bound_socket(self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            loop="none",
            http="httptools",
            lifespan="auto",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        # _serve: like serve() without taking over the process's signal handlers.
        self.task = asyncio.create_task(self.server._serve(sockets=[sock]))
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if self.task.done() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            await asyncio.sleep(0.005)
        return self

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 5.0)
        self.server = self.task = None


@dataclass
class FakeUpstream:
    """A minimal vLLM-like engine. `mode` injects failures:
    ok | status500 | cut (closes the stream after `cut_after` events) | close_first (headers, then closes)
    | hang (answers /health and /state, never a generation: it waits for the caller to hang up).
    `disconnects` counts generations whose caller hung up before the answer was complete."""

    block: bool = True  # serve GET /state (Block engine) or 404 there (stock vLLM)
    tokens: int = 5
    token_delay: float = 0.0
    mode: str = "ok"
    cut_after: int = 2
    healthy: bool = True
    fail_first: int = 0  # answer 500 to this many completions first, whatever the mode
    requests: list[dict[str, Any]] = field(default_factory=list)
    running: int = 0
    disconnects: int = 0
    models: list[str] | None = field(default_factory=lambda: ["fake-model"])  # None: /v1/models is a 404

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        path = scope["path"]
        if path == "/health":
            await _reply(send, 200 if self.healthy else 500, b"{}")
        elif path == "/state":
            if not self.block:
                await _reply(send, 404, b'{"detail":"Not Found"}')
            else:
                await _reply(send, 200, orjson.dumps(self.state()))
        elif path == "/metrics":
            await _reply(send, 200, self.metrics().encode(), b"text/plain")
        elif path == "/v1/models":
            if self.models is None:
                await _reply(send, 404, b'{"detail":"Not Found"}')
            else:
                cards = [{"id": m, "object": "model"} for m in self.models]
                await _reply(send, 200, orjson.dumps({"object": "list", "data": cards}))
        elif path in ("/v1/completions", "/v1/chat/completions"):
            await self.complete(scope, receive, send)
        else:
            await _reply(send, 404, b"{}")

    def state(self) -> dict[str, Any]:
        return {
            "config": {
                "max_num_seqs": 8,
                "max_num_batched_tokens": 64,
                "block_size": 16,
                "num_gpu_blocks": 64,
                "max_model_len": 4096,
            },
            "profile": "",
            "now": time.monotonic(),
            "running": [],
            "waiting": [],
            "free_blocks": 64,
            "num_preemptions": 0,
        }

    def metrics(self) -> str:
        return (
            f'vllm:num_requests_running{{model_name="fake"}} {self.running}\n'
            'vllm:num_requests_waiting{model_name="fake"} 0.0\n'
            'vllm:kv_cache_usage_perc{model_name="fake"} 0.25\n'
            'vllm:cache_config_info{block_size="16",num_gpu_blocks="100"} 1.0\n'
        )

    async def complete(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raw = b""
        while True:
            msg = await receive()
            raw += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        body = orjson.loads(raw)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append({"path": scope["path"], "body": body, "headers": headers})
        if self.mode == "status500" or len(self.requests) <= self.fail_first:
            await _reply(send, 500, b'{"error":"boom"}')
            return
        stream = bool(body.get("stream"))
        n = int(body.get("max_tokens") or self.tokens)
        if self.mode == "hang" or not stream:
            self.running += 1
            try:  # the answer is due after all its tokens (never, hung); unless the caller leaves first
                gone = await _disconnect_within(
                    receive, None if self.mode == "hang" else self.token_delay * n
                )
            finally:
                self.running -= 1
            if gone:
                self.disconnects += 1
                return
            await _reply(
                send, 200, orjson.dumps({"object": "text_completion", "choices": [{"text": "x" * n}]})
            )
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        if self.mode == "close_first":
            raise ConnectionAbortedError("injected: close before the first byte")
        self.running += 1
        gone = asyncio.create_task(receive())  # completes with http.disconnect if the router hangs up
        try:
            for i in range(n):
                if gone.done():
                    self.disconnects += 1
                    return
                if self.mode == "cut" and i == self.cut_after:
                    raise ConnectionAbortedError("injected: cut mid-stream")
                event = orjson.dumps({"choices": [{"index": 0, "text": f"t{i}"}]})
                await send(
                    {"type": "http.response.body", "body": b"data: " + event + b"\n\n", "more_body": True}
                )
                if self.token_delay:  # a pause that ends early when the caller hangs up
                    await asyncio.wait((gone,), timeout=self.token_delay)
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        finally:
            self.running -= 1
            gone.cancel()


async def _disconnect_within(receive: Any, seconds: float | None) -> bool:
    """True when the caller hung up within `seconds` (None: wait for that however long it takes)."""

    async def disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(disconnect(), seconds)
    except TimeoutError:
        return False
    return True


async def lifespan(receive: Any, send: Any) -> None:
    """An ASGI app's lifespan protocol: nothing to start or stop."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


async def _reply(send: Any, status: int, body: bytes, ctype: bytes = b"application/json") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def upstreams(*fakes: FakeUpstream) -> AsyncIterator[list[Served]]:
    served = list(await asyncio.gather(*(Served(f).start() for f in fakes)))
    try:
        yield served
    finally:
        await asyncio.gather(*(s.stop() for s in served))


def count_words(text: str) -> int:
    """A stand-in tokenizer for tests: one token per whitespace-separated word."""
    return len(text.split())


@contextlib.asynccontextmanager
async def router(
    urls: list[str], ready: int | None = None, **settings: Any
) -> AsyncIterator[tuple[RouterApp, str]]:
    settings.setdefault("health_interval", 0.1)
    settings.setdefault("refresh_ms", 20)
    config = RouterConfig(instances=urls, **settings)
    app = RouterApp(config, count_tokens=count_words)
    served = await Served(app).start()
    try:
        await app.pool.wait_ready(len(urls) if ready is None else ready, timeout=5.0)
        yield app, served.url
    finally:
        await served.stop()
