"""The vLLM-compatible HTTP server of one emulated engine (Starlette; served by uvicorn).

Routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, /health, /version,
/metrics (Prometheus, vLLM names) and /state (the replica snapshot, for Block's predictors).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

import block
from block.engine import prompt_tokens, responses
from block.engine.engine_loop import FINISHED, EngineLoop, RequestHandle
from block.engine.metrics import CONTENT_TYPE, EngineMetrics
from block.engine.openai_protocol import (
    ARRIVAL_TIME_HEADER,
    REQUEST_ID_HEADER,
    GenerationParams,
    Kind,
    parse_body,
    parse_generation,
)
from block.engine.output_lengths import OutputLengthSampler
from block.engine.settings import EngineSettings
from block.openai_api.errors import RequestError, error_body, error_event
from block.openai_api.request import check_context
from block.prefix import chain_hashes
from block.replica import Replica, Request

log = logging.getLogger("block.engine")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error(e: RequestError) -> Response:
    return Response(e.body(), status_code=e.status, media_type="application/json")


class EngineServer:
    """One engine: the replica loop plus the HTTP handlers around it."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.config = settings.config
        self.model_name = settings.model_name
        self.served_models = frozenset({self.model_name})
        self.created = int(time.time())
        self.engine = EngineLoop(
            Replica(settings.config, settings.profile),
            settings.step_noise(),
            model_error=settings.model_error_factor(),
        )
        self.metrics = EngineMetrics(self.model_name, settings.config, self.engine.live)
        self.engine.metrics = self.metrics
        self.lengths = OutputLengthSampler(settings.seed)
        self.request_overhead = settings.profile.request_overhead
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/version", self.version, methods=["GET"]),
                Route("/metrics", self.prometheus, methods=["GET"]),
                Route("/state", self.state, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self._http_error, Exception: self._server_error},
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        prompt_tokens.warm_up()
        self._task = asyncio.create_task(self.engine.run(), name="block-engine-loop")
        try:
            yield
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    # -- simple routes ---------------------------------------------------------------------------

    async def health(self, _req: HTTPRequest) -> Response:
        if self._task is not None and self._task.done():
            return Response(error_body(503, "engine loop stopped"), 503, media_type="application/json")
        return Response(status_code=200)

    async def version(self, _req: HTTPRequest) -> Response:
        return JSONResponse({"version": block.__version__, "engine": "block-emulator"})

    async def models(self, _req: HTTPRequest) -> Response:
        card = {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "vllm",
            "root": self.model_name,
            "parent": None,
            "max_model_len": self.config.max_model_len,
        }
        return JSONResponse({"object": "list", "data": [card]})

    async def prometheus(self, _req: HTTPRequest) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def state(self, _req: HTTPRequest) -> Response:
        return JSONResponse(self.engine.state())

    async def _http_error(self, _req: HTTPRequest, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        body = error_body(exc.status_code, str(exc.detail))
        return Response(body, status_code=exc.status_code, media_type="application/json", headers=exc.headers)

    async def _server_error(self, _req: HTTPRequest, exc: Exception) -> Response:
        body = error_body(500, f"internal error: {exc!r}")
        return Response(body, status_code=500, media_type="application/json")

    # -- generation ------------------------------------------------------------------------------

    async def completions(self, req: HTTPRequest) -> Response | _EventStream:
        return await self._generate(req, "completion")

    async def chat_completions(self, req: HTTPRequest) -> Response | _EventStream:
        return await self._generate(req, "chat")

    async def _generate(self, req: HTTPRequest, kind: Kind) -> Response | _EventStream:
        try:
            raw = await req.body()
        except ClientDisconnect:  # the client left while sending its body: nobody to answer
            return Response(status_code=499)
        try:
            params = self._parse(kind, raw, req.headers)
            given_id = req.headers.get(REQUEST_ID_HEADER)
            rid = given_id or uuid.uuid4().hex
            output_tokens, capped = self._output_length(params, given_id)
            request = Request(
                id=rid,
                prompt_tokens=params.prompt_tokens,
                output_tokens=output_tokens,
                expected_output_tokens=params.expected_output_tokens,
                prefix_hashes=self._prefix_hashes(params),
            )
            if (overhead := self.request_overhead(params.prompt_tokens)) > 0:
                # What a real server spends on a request outside its engine steps (HTTP, tokenising,
                # IPC): the request reaches the engine's queue that much later.
                await asyncio.sleep(overhead)
            handle = self.engine.submit(request, params.stream, capped)
        except RequestError as e:
            return _error(e)
        except ValueError as e:  # the replica refused it
            return _error(RequestError(str(e)))

        response_id = responses.response_id(kind, rid)
        if params.stream:
            return _EventStream(
                self._stream(handle, params, response_id),
                lambda: self.engine.abort(handle),
                arrival_time=handle.request.arrival_time,
            )

        watcher = asyncio.ensure_future(_wait_for_disconnect(req.receive))
        try:
            await asyncio.wait((handle.done, watcher), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self.engine.abort(handle)
            raise
        finally:
            watcher.cancel()
        if not handle.done.done():
            self.engine.abort(handle)  # the client left: free its KV blocks now
            return Response(status_code=499)  # nobody reads it
        if handle.error is not None:
            return Response(error_body(500, handle.error), 500, media_type="application/json")
        body = responses.full_response(
            kind,
            response_id,
            self.created,
            self.model_name,
            params.prompt_tokens,
            output_tokens,
            handle.finish_reason,
            self._cached_tokens(handle),
        )
        return JSONResponse(body, headers={ARRIVAL_TIME_HEADER: repr(handle.request.arrival_time)})

    def _prefix_hashes(self, params: GenerationParams) -> tuple[int, ...]:
        """The prompt's block hashes for the prefix cache (none with caching off): from the same token
        ids the router hashes (block.openai_api.prompt_tokens), so its prefix_hashes name our blocks."""
        ids = params.prompt_token_ids
        return chain_hashes(ids, self.config.block_size) if ids else ()

    def _cached_tokens(self, handle: RequestHandle) -> int | None:
        return handle.request.num_cached_tokens if self.settings.prompt_tokens_details else None

    def _parse(self, kind: Kind, raw: bytes, headers: Any) -> GenerationParams:
        try:
            caching = self.config.enable_prefix_caching
            return parse_generation(kind, parse_body(raw), headers, self.served_models, token_ids=caching)
        except RequestError:
            raise
        except Exception as e:  # a parser bug must still answer 400, never 500: log it to fix it
            log.exception("request parsing failed")
            raise RequestError(f"could not parse the request: {type(e).__name__}") from None

    def _output_length(self, params: GenerationParams, given_id: str | None) -> tuple[int, bool]:
        """(tokens to generate, whether a cap ends it). Refuses what can never run, as vLLM does."""
        cfg = self.config
        prompt = params.prompt_tokens
        param = "prompt" if params.kind == "completion" else "messages"
        kv_tokens = cfg.num_gpu_blocks * cfg.block_size
        room = min(cfg.max_model_len, kv_tokens) - prompt  # the most output that can ever fit
        check_context(params.kind, prompt, params.max_tokens, cfg.max_model_len)
        fixed = None  # the output length when the client fixes it (ignore_eos)
        if params.ignore_eos:
            fixed = params.max_tokens if params.max_tokens is not None else max(1, room)
        if room < 1:
            raise RequestError(
                f"the prompt ({prompt} tokens) needs more KV-cache blocks than the engine has "
                f"({cfg.num_gpu_blocks} blocks of {cfg.block_size} tokens)",
                param,
            )
        if fixed is not None:
            if fixed > room:
                raise RequestError(
                    f"the request ({prompt} prompt + {fixed} output tokens) needs more KV-cache blocks "
                    f"than the engine has ({cfg.num_gpu_blocks} blocks of {cfg.block_size} tokens)",
                    "max_tokens",
                )
            return fixed, True
        cap = room if params.max_tokens is None else min(room, params.max_tokens)
        return self.lengths.length(cap, given_id, params.min_tokens)

    async def _stream(
        self, handle: RequestHandle, params: GenerationParams, rid: str
    ) -> AsyncIterator[bytes]:
        writer = responses.ChunkWriter(params.kind, rid, self.created, self.model_name)
        total = handle.request.output_tokens
        finish = handle.finish_reason
        sent = 0
        while sent < total:
            # A reader that fell behind gets every token that is ready in one write (one event each).
            n = await handle.wait_beyond(sent)
            if n == FINISHED:
                message = handle.error or "request aborted"
                yield error_event(500, message)
                return
            parts = [writer.first()] if sent == 0 else []
            for i in range(sent, n):
                parts.append(writer.token(i, finish if i == total - 1 else None))
            sent = n
            yield b"".join(parts)
        if params.include_usage:
            yield writer.usage(params.prompt_tokens, total, self._cached_tokens(handle))
        yield responses.DONE


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class _EventStream:
    """A server-sent-event response that notices a client leaving even while no token is due
    (Starlette's StreamingResponse only notices when it next writes)."""

    def __init__(
        self, body: AsyncIterator[bytes], on_disconnect: Callable[[], None], arrival_time: float
    ) -> None:
        self.body = body
        self.on_disconnect = on_disconnect
        self.arrival_time = arrival_time

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (ARRIVAL_TIME_HEADER.encode(), repr(self.arrival_time).encode()),
                ],
            }
        )
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        watcher.add_done_callback(self._watch_done)
        try:
            async for chunk in self.body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-write
        finally:
            watcher.cancel()
            self.on_disconnect()  # no-op when the request finished; frees its blocks otherwise
            await _aclose(self.body)

    def _watch_done(self, task: asyncio.Future[None]) -> None:
        if task.cancelled():
            return
        task.exception()  # a failed receive also means the client is gone
        self.on_disconnect()


async def _aclose(gen: AsyncIterator[bytes]) -> None:
    close: Callable[[], Awaitable[None]] | None = getattr(gen, "aclose", None)
    if close is not None:
        await close()


def build_app(settings: EngineSettings) -> Starlette:
    return EngineServer(settings).app
