"""The predictor sidecar: keeps one engine's snapshot fresh and answers what-if questions over HTTP.

    POST /predict        {prompt_tokens, expected_output_tokens[, max_tokens]}
                         -> {ttft_s, e2e_s, queue_delay_s, added_delay_s, running, waiting, free_blocks,
                             snapshot_age_ms, predict_ms, anticipated_rate}
    POST /predict_batch  {"requests": [...]} -> {"predictions": [...]}
    POST /routed         {request_id, prompt_tokens, expected_output_tokens[, calibration]}   (a router
                         sent one here; `calibration`: {decode, prefill}, the router's online calibration
                         factors for this engine, which forecasts then use: the sidecar sees no tokens)
    POST /finished       {request_id}
    GET  /health, GET /metrics

With a `token`, every POST needs "Authorization: Bearer <token>" (401 otherwise); /health and /metrics
stay open. Requests reported to /routed that no snapshot shows within the tracker's `forget_after_s`
(`block predictor --routed-ttl-s`) are forgotten, and the sidecar's in-flight record keeps only what is
pending or in the latest snapshot: fake or lost ids never accumulate.

Forecasts go through the same `InstanceTracker` the router uses in-process, so both paths agree.
With `anticipate_arrivals` in the tracker options, they add the arrivals to expect after the candidate at
the rate of the requests reported to /routed (`anticipated_rate` says which rate was used).
Bad bodies get 400 in OpenAI's error format; before the first snapshot /predict answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response
from starlette.routing import Route

from block.bearer import bearer_token, matches
from block.fleet.sources import BlockState
from block.fleet.tracker import InstanceTracker
from block.http_limits import HttpLimits
from block.openai_api.errors import error_body
from block.profiles.profile import Profile, load_profile
from block.replica import ReplicaConfig
from block.request import RoutingRequest
from block.sidecar.metrics import CONTENT_TYPE, PredictorMetrics

log = logging.getLogger(__name__)
MAX_BATCH = 1024
Handler = Callable[[HTTPRequest], Awaitable[Response]]


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.status = message, param, status


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _error(e: BadRequest) -> Response:
    response = Response(error_body(e.status, e.message, e.param), e.status, media_type="application/json")
    if e.status == 401:
        response.headers["www-authenticate"] = "Bearer"
    return response


async def _body(req: HTTPRequest) -> dict[str, Any]:
    try:
        body = orjson.loads(await req.body())
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _int(body: dict[str, Any], name: str, minimum: int = 1, required: bool = True) -> int | None:
    v = body.get(name)
    if v is None and not required:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest(f"'{name}' must be an integer", name)
    if v < minimum:
        raise BadRequest(f"'{name}' must be >= {minimum}", name)
    return v


def _str(body: dict[str, Any], name: str) -> str:
    v = body.get(name)
    if not isinstance(v, str) or not v:
        raise BadRequest(f"'{name}' must be a non-empty string", name)
    return v


def _factors(body: dict[str, Any]) -> tuple[float, float] | None:
    """/routed's optional `calibration`: {"decode": f, "prefill": f}, positive numbers."""
    c = body.get("calibration")
    if c is None:
        return None
    try:
        decode, prefill = float(c["decode"]), float(c["prefill"])
    except (TypeError, KeyError, ValueError):
        raise BadRequest("calibration must be {decode, prefill}", "calibration") from None
    if not (decode > 0 and prefill > 0 and math.isfinite(decode) and math.isfinite(prefill)):
        raise BadRequest("calibration factors must be positive numbers", "calibration")
    return decode, prefill


def parse_request(body: Any) -> RoutingRequest:
    if not isinstance(body, dict):
        raise BadRequest("each request must be a JSON object")
    prompt = _int(body, "prompt_tokens")
    output = _int(body, "expected_output_tokens")
    assert prompt is not None and output is not None
    return RoutingRequest(prompt, output, _int(body, "max_tokens", required=False))


class PredictorService:
    def __init__(
        self,
        engine_url: str,
        profile: Profile | None = None,
        refresh_s: float = 0.02,
        *,
        tracker_options: dict[str, Any] | None = None,
        token: str | None = None,
        clock=time.monotonic,  # noqa: ANN001 - the tracker's time base
    ) -> None:
        """`token`: required as a bearer token on every POST (None: open, as before)."""
        self.engine_url = engine_url.rstrip("/")
        self.token = token or None
        self.profile = profile
        self.refresh_s = refresh_s
        self.tracker_options = tracker_options or {}
        self.clock = clock
        self.tracker: InstanceTracker | None = None
        self.metrics = PredictorMetrics()
        self.refresh_errors = 0
        self.app = Starlette(
            routes=[
                Route("/predict", self._authorized(self.predict), methods=["POST"]),
                Route("/predict_batch", self._authorized(self.predict_batch), methods=["POST"]),
                Route("/routed", self._authorized(self.routed), methods=["POST"]),
                Route("/finished", self._authorized(self.finished), methods=["POST"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/metrics", self.prometheus, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    # -- keeping the snapshot fresh --------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            task = asyncio.create_task(self._poll(session))
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _poll(self, session: aiohttp.ClientSession) -> None:
        source = BlockState(self.engine_url, ReplicaConfig())  # the router's reader of /state
        timeout = max(1.0, 20 * self.refresh_s)
        while True:
            started = time.monotonic()
            try:
                await self.refresh(session, source, timeout)
            except (TimeoutError, aiohttp.ClientError, ValueError, KeyError) as e:
                self.refresh_errors += 1
                self.metrics.refresh_errors.inc()
                log.debug("refresh from %s failed: %r", self.engine_url, e)
            await asyncio.sleep(max(0.0, self.refresh_s - (time.monotonic() - started)))

    async def refresh(self, session: aiohttp.ClientSession, source: BlockState, timeout: float) -> None:
        sent = self.clock()
        snapshot, step_end = await source.read(session, timeout)
        received = self.clock()
        if self.tracker is None:
            if self.profile is None:
                self.profile = load_profile(snapshot.profile or "")
            self.tracker = InstanceTracker(
                self.engine_url,
                self.profile,
                in_flight_follows_snapshots=True,
                calibrate=True,  # factors 1 (the profile as it is) until a router sends its own
                **self.tracker_options,
            )
        # the engine read its clock about halfway through the round trip
        self.tracker.observe(snapshot, (sent + received) / 2, step_end)

    # -- handlers --------------------------------------------------------------------------------

    def _authorized(self, handler: Handler) -> Handler:
        """`handler` behind the bearer token, when one is set."""
        if self.token is None:
            return handler
        token = self.token.encode()

        async def guarded(req: HTTPRequest) -> Response:
            if not matches(bearer_token(req.headers.get("authorization")), [token]):
                return _error(BadRequest("a valid 'Authorization: Bearer' token is required", status=401))
            return await handler(req)

        return guarded

    def _ready(self) -> InstanceTracker:
        if self.tracker is None or self.tracker.snapshot is None:
            raise BadRequest(f"no snapshot from {self.engine_url} yet", status=503)
        return self.tracker

    def _predict_one(self, tracker: InstanceTracker, request: RoutingRequest) -> dict[str, Any]:
        now = self.clock()
        t0 = time.perf_counter()
        try:
            f = tracker.predict(request, now)
        except ValueError as e:
            raise BadRequest(str(e), "prompt_tokens") from None
        took = time.perf_counter() - t0
        assert f is not None
        self.metrics.predictions.inc()
        self.metrics.predict_seconds.observe(took)
        age = tracker.snapshot_age(now) or 0.0
        self.metrics.snapshot_age.set(age)
        return {
            "ttft_s": f.ttft_s,
            "e2e_s": f.e2e_s,
            "queue_delay_s": f.queue_delay_s,
            "added_delay_s": f.added_delay_s,
            "running": tracker.running,
            "waiting": tracker.waiting,
            "free_blocks": tracker.free_blocks,
            "snapshot_age_ms": age * 1e3,
            "predict_ms": took * 1e3,
            "anticipated_rate": f.anticipated_rate,  # with --anticipate-arrivals; else 0
        }

    async def predict(self, req: HTTPRequest) -> Response:
        try:
            request = parse_request(await _body(req))
            return _json(self._predict_one(self._ready(), request))
        except BadRequest as e:
            return _error(e)

    async def predict_batch(self, req: HTTPRequest) -> Response:
        try:
            body = await _body(req)
            items = body.get("requests")
            if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
                raise BadRequest(f"'requests' must be a list of 1 to {MAX_BATCH} requests", "requests")
            requests = [parse_request(x) for x in items]
            tracker = self._ready()
            return _json({"predictions": [self._predict_one(tracker, r) for r in requests]})
        except BadRequest as e:
            return _error(e)

    async def routed(self, req: HTTPRequest) -> Response:
        try:
            body = await _body(req)
            rid = _str(body, "request_id")
            prompt, output = _int(body, "prompt_tokens"), _int(body, "expected_output_tokens")
            assert prompt is not None and output is not None
            factors = _factors(body)
            tracker = self._ready()
        except BadRequest as e:
            return _error(e)
        if factors is not None and tracker.calibration is not None:
            tracker.calibration.adopt(*factors)
        tracker.on_routed(RoutingRequest(prompt, output, id=rid), self.clock())
        self.metrics.pending.set(len(tracker.pending))
        return _json({"pending": len(tracker.pending)})

    async def finished(self, req: HTTPRequest) -> Response:
        try:
            rid = _str(await _body(req), "request_id")
            tracker = self._ready()
        except BadRequest as e:
            return _error(e)
        tracker.on_finished(rid, self.clock())
        self.metrics.pending.set(len(tracker.pending))
        return _json({"pending": len(tracker.pending)})

    async def health(self, _req: HTTPRequest) -> Response:
        t = self.tracker
        ready = t is not None and t.snapshot is not None
        age = t.snapshot_age(self.clock()) if t is not None else None
        body = {
            "status": "ok" if ready else "waiting for the first snapshot",
            "engine": self.engine_url,
            "profile": self.profile.name if self.profile else None,
            "snapshot_age_ms": None if age is None else age * 1e3,
            "refresh_errors": self.refresh_errors,
            "calibration": None if t is None or t.calibration is None else t.calibration.describe(),
        }
        return _json(body, 200 if ready else 503)

    async def prometheus(self, _req: HTTPRequest) -> Response:
        if self.tracker is not None:
            age = self.tracker.snapshot_age(self.clock())
            if age is not None:
                self.metrics.snapshot_age.set(age)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)


def serve(service: PredictorService, host: str, port: int, log_level: str = "warning") -> None:
    import uvicorn

    uvicorn.run(
        service.app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        **HttpLimits().uvicorn_options(),  # header size, header and body read timeouts
    )
