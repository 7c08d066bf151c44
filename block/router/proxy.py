"""POST /v1/completions and /v1/chat/completions: parse once, decide, forward, relay.

A raw ASGI handler: the hot path of the router, so no framework objects per request.
- Streams are relayed chunk by chunk as they arrive from the instance (never buffered). The client's
  response starts only once the instance's first body chunk is in hand, so an instance that fails before
  that point is retried on another one (at most `max_retries` times) without the client noticing.
- A stream cut midway ends with an OpenAI-style error event and [DONE]: the client never hangs.
- Non-streaming responses are read whole (they are small) and sent with a content length.
- With admission (--admission queue|reject, block/router/admission.py) a request first gets its
  target (x-slo-ttft-ms, x-slo-e2e-ms, x-priority or its API key's priority, else the router's
  defaults) and is admitted, held or answered 429 with a Retry-After before its first attempt.
- Each attempt runs in its own task, which a client leaving, the end of the shutdown drain or the
  attempt's watchdog (first-byte and idle timeouts) cancel; closing its connection makes the engine stop
  generating. A client that left is never retried (block/router/exchange.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from block.admission import Target
from block.openai_api.errors import RequestError
from block.openai_api.prompt_tokens import PromptIds
from block.prefix import chain_hashes
from block.request import RoutingRequest
from block.router.admission import (
    E2E_HEADER,
    PRIORITY_HEADER,
    TTFT_HEADER,
    Rejection,
    RouterAdmission,
    parse_target_headers,
)
from block.router.auth import CHALLENGE, Guard
from block.router.decide import Decider, Decision, NoInstance
from block.router.errors import error_sse, send_bytes, send_error
from block.router.exchange import CLIENT_GONE, SHUTDOWN, Exchange, Watchdog
from block.router.instance import Instance
from block.router.instance_pool import InstancePool
from block.router.length_batcher import LengthBatcher
from block.router.metrics import RouterMetrics
from block.router.request_shape import (
    CHAT_PATH,
    LengthEstimate,
    RequestShape,
    estimate_batched,
    parse_shape,
)

log = logging.getLogger("block.router.proxy")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_FAILURES = (aiohttp.ClientError, TimeoutError, OSError)
_DONE_TAIL = b"[DONE]\n\n"
SHUTDOWN_MESSAGE = "the router is shutting down"


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes:
    first = await receive()
    body = first.get("body", b"")
    if not first.get("more_body"):
        if len(body) > limit:
            raise BodyTooLarge
        return body
    parts = [body]
    size = len(body)
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ConnectionResetError("client went away while sending the body")
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        parts.append(chunk)
        if not msg.get("more_body"):
            return b"".join(parts)


class Proxy:
    def __init__(
        self,
        pool: InstancePool,
        decider: Decider,
        metrics: RouterMetrics,
        count_tokens: Callable[[str], int],
        estimate_length: LengthEstimate | LengthBatcher | None,
        default_output_tokens: int,
        max_body_bytes: int,
        max_retries: int,
        api_key: str | None,
        first_byte_timeout: float = 60.0,
        idle_timeout: float = 60.0,
        prompt_ids: PromptIds | None = None,
        admission: RouterAdmission | None = None,
        api_keys: dict[str, int] | None = None,
    ) -> None:
        """`prompt_ids`: lay prompts out as token ids (and count them from the ids), so each request
        carries its prefix identity (block hashes); without it prompts are only counted."""
        self.pool = pool
        self.decider = decider
        self.metrics = metrics
        self.count_tokens = count_tokens
        self.prompt_ids = prompt_ids
        # A transformer length model is awaited, batched across requests; a cheap one runs inline.
        self.length_batcher = estimate_length if isinstance(estimate_length, LengthBatcher) else None
        self.estimate_length = None if self.length_batcher is not None else estimate_length
        self.default_output_tokens = default_output_tokens
        self.max_body_bytes = max_body_bytes
        self.max_retries = max_retries
        self.guard = Guard(api_key=api_key, api_keys=api_keys or {})
        self.admission = admission
        # Request ids unique across routers without coordination: random prefix + counter.
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count(1)
        # Per attempt (the connect timeout is the session's): see block/router/exchange.py.
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self.live: set[Exchange] = set()  # requests in flight (the shutdown cuts what is left)
        self.closing = False  # after the drain: new requests get 503

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if self.closing:
            await send_error(send, 503, SHUTDOWN_MESSAGE, "shutting_down")
            return
        if scope["method"] != "POST":
            await send_error(send, 405, "use POST")
            return
        arrived = time.monotonic()
        authorization = content_length = None
        slo_ttft = slo_e2e = priority = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                content_length = value
            elif name == TTFT_HEADER:
                slo_ttft = value
            elif name == E2E_HEADER:
                slo_e2e = value
            elif name == PRIORITY_HEADER:
                priority = value
        refusal = self.guard.check_client(authorization)
        if refusal is not None:
            await send_error(send, refusal.status, refusal.message, refusal.code, CHALLENGE)
            return
        try:
            if content_length is not None and int(content_length) > self.max_body_bytes:
                raise BodyTooLarge
            raw = await read_body(receive, self.max_body_bytes)
        except BodyTooLarge:
            await send_error(send, 413, f"request body over {self.max_body_bytes} bytes")
            return
        except (ConnectionResetError, ValueError):
            return
        path = scope["path"]
        try:
            body, shape = self._parse(path, raw)
            if self.length_batcher is not None:
                await estimate_batched(shape, self.length_batcher)
            target = self._target(slo_ttft, slo_e2e, priority, authorization, arrived)
        except RequestError as e:
            await send_bytes(send, e.status, e.body())
            return
        await self._route(path, body, raw, shape, receive, send, target)

    def _target(
        self,
        ttft: bytes | None,
        e2e: bytes | None,
        priority: bytes | None,
        authorization: bytes | None,
        arrived: float,
    ) -> Target | None:
        """What admission holds the request to (None when admission is off); RequestError for a bad
        header. The priority: x-priority, else its API key's (--api-key KEY:PRIORITY), else 0."""
        if self.admission is None:
            return None
        try:
            ttft_ms, e2e_ms, level = parse_target_headers(ttft, e2e, priority)
        except ValueError as e:
            raise RequestError(str(e)) from None
        if level is None:
            level = self.guard.client_priority(authorization)
        return self.admission.target(ttft_ms, e2e_ms, level or 0, arrived)

    def _parse(self, path: str, raw: bytes) -> tuple[dict[str, Any], RequestShape]:
        """The body and its shape, or RequestError (a 4xx): no body makes this raise anything else."""
        try:
            body = orjson.loads(raw)
            shape = parse_shape(
                path,
                body,
                self.count_tokens,
                self.estimate_length,
                self.default_output_tokens,
                self.pool.served_models(),
                self.prompt_ids,
                read_text=self.length_batcher is not None,
            )
        except orjson.JSONDecodeError as e:
            raise RequestError(f"invalid JSON body: {e}") from None
        except RequestError:
            raise
        except Exception as e:  # a parser bug must still answer 400, never 500: log it to fix it
            log.exception("request parsing failed")
            raise RequestError(f"could not parse the request: {type(e).__name__}") from None
        return body, shape

    async def _route(
        self,
        path: str,
        body: dict[str, Any],
        raw: bytes,
        shape: RequestShape,
        receive: Receive,
        send: Send,
        target: Target | None = None,
    ) -> None:
        exchange = Exchange()
        self.live.add(exchange)
        watcher = asyncio.create_task(_watch_client(receive, exchange))
        try:
            await self._serve(path, body, raw, shape, exchange, send, target)
        finally:
            exchange.finished = True
            watcher.cancel()
            self.live.discard(exchange)

    async def _serve(
        self,
        path: str,
        body: dict[str, Any],
        raw: bytes,
        shape: RequestShape,
        exchange: Exchange,
        send: Send,
        target: Target | None = None,
    ) -> None:
        request_id = f"{self._prefix}-{next(self._counter)}"
        ids, block_size = shape.prompt_token_ids, self.pool.prefix_block_size
        request = RoutingRequest(
            shape.prompt_tokens,
            shape.expected_output_tokens,
            shape.max_tokens,
            request_id,
            prefix_hashes=chain_hashes(ids, block_size) if ids else (),
            prefix_block_size=block_size,
        )
        admitted: Decision | None = None
        if target is not None and self.admission is not None:
            outcome = await self.admission.admit(request, target, exchange)
            if isinstance(outcome, Rejection):
                retry = [(b"retry-after", str(outcome.retry_after_s).encode())]
                await send_error(send, 429, outcome.message, outcome.code, retry)
                return
            admitted = outcome
            if admitted is not None and admitted.routed and exchange.stop is not None:
                # placed from the queue just as the client left: the instance never gets it
                self.pool.on_finished(admitted.instance, request_id, time.monotonic())
        headers = {
            "content-type": "application/json",
            "x-block-request-id": request_id,
            "x-block-expected-output-tokens": str(shape.expected_output_tokens),
        }
        with_field: bytes | None = None
        tried: list[Instance] = []
        errors: list[str] = []
        for attempt in range(self.max_retries + 1):
            if exchange.stop is not None:  # never retry for a client that left, nor while cutting
                break
            if admitted is not None:  # the first attempt goes where admission placed it
                decision, admitted = admitted, None
            else:
                try:
                    decision = await self.decider.decide(request, tried)
                except NoInstance:
                    if not tried:
                        break
                    # Every instance in rotation was tried: one that failed for a moment (a 5xx, a
                    # reset) may serve the next attempt; those refusing connections are already out.
                    try:
                        decision = await self.decider.decide(request)
                    except NoInstance:
                        break
                decision.target = target
            if exchange.stop is not None:  # the client left while the decision awaited forecasts
                break
            inst = decision.instance
            tried.append(inst)
            if attempt:
                self.metrics.retries.inc()
            if inst.accepts_expected_field:
                if with_field is None:
                    body["expected_output_tokens"] = shape.expected_output_tokens
                    with_field = orjson.dumps(body)
                payload = with_field
            else:
                payload = raw
            url = inst.chat_url if path == CHAT_PATH else inst.completions_url
            if not decision.routed:
                self.pool.on_routed(inst, request, decision.decided_at, decision.forecast)
            dog = Watchdog(exchange, inst, self.first_byte_timeout, self.idle_timeout)
            task = exchange.attempt = asyncio.create_task(
                self._attempt(
                    url, payload, headers, shape.stream, inst, request_id, decision, exchange, dog, send
                )
            )
            dog.start()
            self.decider.settle_soon()  # the routed instance's state, prepared again once the request is sent
            try:
                await asyncio.wait((task,))
            except asyncio.CancelledError:  # this handler itself is cancelled: so is the attempt
                task.cancel()
                raise
            finally:
                dog.stop()
                exchange.attempt = None
                self.pool.on_finished(inst, request_id, time.monotonic())
            timeout, exchange.timeout = exchange.timeout, None
            if not task.cancelled():
                outcome = task.result()
                if outcome is None:
                    return
                errors.append(f"{inst.id}: {outcome}")
                continue
            if exchange.stop is not None or timeout is None:
                break
            self.metrics.upstream_errors.labels(timeout.kind).inc()
            if timeout.instance_silent:
                self.pool.suspend(inst, timeout.message)
            if exchange.started:  # the client has part of a stream: end it, no retry
                log.warning("stream %s cut: %s", request_id, timeout.message)
                await self._end_stream(exchange, send, f"stream cut: {timeout.message}")
                return
            log.warning("request %s: %s; retrying elsewhere", request_id, timeout.message)
            errors.append(timeout.message)
        if exchange.stop == CLIENT_GONE:
            return  # nobody to answer
        if exchange.stop == SHUTDOWN:
            await self._cut(exchange, send)
        elif tried:
            message = f"upstream failed after {len(tried)} attempt(s): " + "; ".join(errors)
            log.warning("request %s: %s", request_id, message)
            await send_error(send, 502, message, "upstream_error")
        else:
            await send_error(send, 503, "no healthy instance available", "no_healthy_instance")

    async def _cut(self, exchange: Exchange, send: Send) -> None:
        """The drain time is over: an error event ends a stream that started, a 503 answers the rest."""
        if exchange.started:
            await self._end_stream(exchange, send, SHUTDOWN_MESSAGE, "shutting_down", 503)
        else:
            await send_error(send, 503, SHUTDOWN_MESSAGE, "shutting_down")

    async def _end_stream(
        self, exchange: Exchange, send: Send, message: str, code: str = "upstream_error", status: int = 502
    ) -> None:
        event = error_sse(message, code, status)
        await send({"type": "http.response.body", "body": event, "more_body": False})
        exchange.finished = True

    def cut_all(self) -> int:
        """Shutdown after the drain: stop every request still in flight (see _cut) and refuse new ones."""
        self.closing = True
        live = list(self.live)
        for exchange in live:
            exchange.interrupt(SHUTDOWN)
        return len(live)

    async def _attempt(
        self,
        url: str,
        payload: bytes,
        headers: dict[str, str],
        stream: bool,
        inst: Instance,
        request_id: str,
        decision: Decision,
        exchange: Exchange,
        dog: Watchdog,
        send: Send,
    ) -> str | None:
        """Relay one attempt (its own task: see block/router/exchange.py for what cancels it). None when
        the client got a response; else why it can be retried."""
        try:
            resp = await self.pool.session.post(url, data=payload, headers=headers)
        except _FAILURES as e:
            error = f"{type(e).__name__}: {e}"
            self.metrics.upstream_errors.labels("connect").inc()
            if isinstance(e, aiohttp.ClientConnectorError) and not isinstance(e, TimeoutError):
                # Refused or unreachable: out of rotation now. A slow connect under a burst is only
                # retried elsewhere; the health checker decides about that instance.
                self.pool.mark_failed(inst, error)
            return error
        inst.data_at = time.monotonic()  # liveness for the health checker: it is answering
        read_all = False
        try:
            content = resp.content
            try:  # the first body bytes: a stream's first token, a non-stream's answer
                first = await content.readany()
            except _FAILURES as e:
                self.metrics.upstream_errors.labels("first_byte").inc()
                return f"{type(e).__name__} before the first byte: {e}"
            now = time.monotonic()
            dog.first_byte(now)
            if first:
                inst.data_at = now  # liveness for the health checker
                if not stream or resp.status != 200:
                    inst.flowing_at = now  # an answer, not only a stream's first token (see Watchdog)
            if resp.status == 200 and stream:
                if not first:
                    self.metrics.upstream_errors.labels("first_byte").inc()
                    return f"{inst.id} closed the stream before the first byte"
                outcome = await self._relay_stream(
                    resp, first, inst, request_id, decision, exchange, dog, send
                )
                read_all = True
                return outcome
            try:
                data = await _read_rest(content, first, inst, dog)
            except _FAILURES as e:
                self.metrics.upstream_errors.labels("read").inc()
                return f"{type(e).__name__}: {e}"
            read_all = True
            if resp.status >= 500:  # the instance failed: nothing went to the client yet, so retry
                self.metrics.upstream_errors.labels("status").inc()
                return f"{inst.id} answered {resp.status}: {data[:200].decode(errors='replace')}"
            extra = [(b"x-block-instance", inst.id_header), (b"x-block-request-id", request_id.encode())]
            ctype = resp.headers.get("content-type", "application/json").encode()
            dog.stop()  # the instance's part is done
            exchange.finished = True  # from here on nothing interrupts: the answer is in hand
            await send_bytes(send, resp.status, data, ctype, extra)
            if resp.status == 200:
                self.pool.completed(inst)
                self._observe_completed(decision)
            return None
        finally:
            if read_all:
                resp.release()
            else:  # cancelled or failed midway: close the connection, so the engine stops generating
                resp.close()

    async def _relay_stream(
        self,
        resp: aiohttp.ClientResponse,
        first: bytes,
        inst: Instance,
        request_id: str,
        decision: Decision,
        exchange: Exchange,
        dog: Watchdog,
        send: Send,
    ) -> str | None:
        first_byte_at = dog.progress_at  # set at the first token's chunk: the client's TTFT, less the hop
        exchange.started = True
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", resp.headers.get("content-type", "text/event-stream").encode()),
                    (b"cache-control", b"no-cache"),
                    (b"x-block-instance", inst.id_header),
                    (b"x-block-request-id", request_id.encode()),
                ],
            }
        )
        pool = self.pool
        count_tokens = pool.hears_tokens(inst)  # the stock-vLLM source rebuilds its queue from them
        content = resp.content
        chunk = first
        tail = b""
        try:
            while chunk:
                if count_tokens:  # SSE token events in this chunk
                    pool.on_tokens(inst, request_id, chunk.count(b"data: {"), time.monotonic())
                dog.sending = True  # a slow reader is not the instance's gap
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                dog.sending = False
                dog.progress_at = time.monotonic()
                tail = chunk
                chunk = await content.readany()
                inst.data_at = inst.flowing_at = time.monotonic()
            complete = tail.endswith(_DONE_TAIL)
            error = None if complete else "the instance ended the stream early"
        except _FAILURES as e:
            error = f"stream cut: {type(e).__name__}: {e}"
        if error is not None:
            self.metrics.upstream_errors.labels("mid_stream").inc()
            log.warning("stream %s from %s: %s", request_id, inst.id, error)
            await self._end_stream(exchange, send, error)
            return None
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        exchange.finished = True
        self.pool.completed(inst)
        self._observe_completed(decision, first_byte_at)
        return None

    def _observe_completed(self, decision: Decision, first_byte_at: float | None = None) -> None:
        """Latency and forecast error of a completed request: E2E always, TTFT for streams (a whole
        response arrives at once)."""
        f, inst, m = decision.forecast, decision.instance, self.metrics
        now = time.monotonic()
        target = decision.target
        if target is not None:  # goodput: a whole (non-stream) answer's first token comes with it
            first = now if first_byte_at is None else first_byte_at
            met = target.met_by(first - target.arrived, now - target.arrived)
            m.target_observed(str(target.priority), met)
        if inst.removed:  # a removed instance's series are forgotten: keep them so
            return
        for metric, at in (("ttft", first_byte_at), ("e2e", now)):
            actual = None if at is None else at - decision.decided_at
            if actual is None or actual <= 0:
                continue
            m.latency_observed(inst.id, metric, actual)
            if f is not None:
                forecast_s = f.ttft_s if metric == "ttft" else f.e2e_s
                m.forecast_error_observed(inst.id, metric, abs(forecast_s - actual) / actual)


async def _read_rest(content: aiohttp.StreamReader, first: bytes, inst: Instance, dog: Watchdog) -> bytes:
    """The rest of a whole (non-stream) body after its first bytes; the watchdog bounds each gap."""
    parts = [first]
    while chunk := await content.readany():
        parts.append(chunk)
        inst.data_at = inst.flowing_at = dog.progress_at = time.monotonic()
    return b"".join(parts)


async def _watch_client(receive: Receive, exchange: Exchange) -> None:
    """uvicorn drops writes to a closed client silently: watch for the disconnect and stop the attempt,
    whose connection to the instance then closes, so the engine frees the request's slot."""
    while (await receive())["type"] != "http.disconnect":
        pass
    exchange.interrupt(CLIENT_GONE)
