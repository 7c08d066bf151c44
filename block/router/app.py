"""The router as one ASGI application: the two completion paths go straight to the proxy (no framework
work on the hot path); everything else is a small Starlette app."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from block.openai_api.prompt_tokens import PromptIds
from block.policies import make_policy
from block.router.admin import Admin, error_response, refused
from block.router.admission import RouterAdmission
from block.router.auth import Guard
from block.router.config import RouterConfig
from block.router.decide import Decider
from block.router.decision_log import DecisionLog
from block.router.instance_pool import InstancePool
from block.router.length_batcher import LengthBatcher
from block.router.metrics import RouterMetrics
from block.router.proxy import Proxy
from block.router.request_shape import LengthEstimate, load_length_estimate, load_prompt_layout

log = logging.getLogger("block.router")

PROXY_PATHS = frozenset({"/v1/completions", "/v1/chat/completions"})


def load_length_estimator(
    spec: str | None, quantile: float | None = None
) -> LengthEstimate | LengthBatcher | None:
    return load_length_estimate(spec, quantile)


def make_autoscaler(config: RouterConfig, pool: InstancePool) -> Any:
    """The auto-provisioner (block.provision) when --provision is set, else None."""
    p = config.provision
    settings = p.settings(len(config.instances))
    if settings is None:
        return None
    from block.router.autoscaler import Autoscaler

    provider = p.make_provider()
    template = config.fleet.new_instance_template()
    if template is not None and hasattr(provider, "extra_args"):  # local emulators start the template's kind
        from block.provision.local_emulator import LocalEmulators

        if isinstance(provider, LocalEmulators):
            provider.profile = template.profile or provider.profile
            provider.extra_args += [
                a for a in template.engine_args() if a not in ("--profile", template.profile)
            ]
    return Autoscaler(pool, settings, provider, p.interval_s, start_timeout_s=p.start_timeout_s)


def make_discovery(config: RouterConfig, pool: InstancePool) -> Any:
    """Kubernetes pod discovery (block.router.discovery) when --discover is set, else None."""
    if not config.discover:
        return None
    from block.router.discovery import Discovery, parse_spec

    return Discovery(parse_spec(config.discover), pool, drain_s=config.drain_timeout_s)


class RouterApp:
    def __init__(
        self,
        config: RouterConfig,
        count_tokens: Callable[[str], int] | None = None,
        prompt_ids: PromptIds | None = None,
    ) -> None:
        """`count_tokens` and `prompt_ids` stand in for the configured tokenizer (tests); without
        `prompt_ids`, requests carry no prefix identity."""
        self.config = config
        if count_tokens is None:
            count_tokens, prompt_ids = load_prompt_layout(config.tokenizer)
        self.policy = make_policy(config.policy, seed=config.seed, **config.policy_options)
        self.metrics = RouterMetrics(config.policy)
        self.pool = InstancePool(config, self.metrics)
        self.decider = Decider(self.policy, self.pool, self.metrics, config.deadline_ms / 1000.0)
        self.pool.on_change.append(self.decider.settle_soon)  # a snapshot in, a request finished
        if config.decision_log:
            self.decider.decision_log = DecisionLog(config.decision_log, config.policy)
            self.decider.forecasts.prune = False  # the log reports every instance's forecast
            self.pool.listeners.add(self.decider.decision_log)
        admission = config.admission_settings()
        self.admission = (
            RouterAdmission(admission, self.decider, self.pool, self.metrics) if admission.enabled else None
        )
        self.proxy = Proxy(
            self.pool,
            self.decider,
            self.metrics,
            count_tokens,
            load_length_estimator(config.length_model, config.length_quantile),
            config.default_output_tokens,
            config.max_body_bytes,
            config.max_retries,
            config.api_key,
            first_byte_timeout=config.first_byte_timeout_s,
            idle_timeout=config.idle_timeout_s,
            prompt_ids=prompt_ids,
            admission=self.admission,
            api_keys=config.api_keys,
        )
        self.guard = Guard(
            config.api_key, config.admin_token, config.allow_admin_without_auth, config.api_keys
        )
        self.admin = Admin(self.pool, self.metrics, self.guard)
        self.autoscaler = make_autoscaler(config, self.pool)
        self.discovery = make_discovery(config, self.pool)
        self.admin.provisioner = self.autoscaler
        self.starlette = Starlette(
            routes=[
                Route("/health", self.admin.health, methods=["GET"]),
                Route("/metrics", self.admin.metrics_endpoint, methods=["GET"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/instances", self.admin.list_instances, methods=["GET"]),
                Route("/instances", self.admin.add_instance, methods=["POST"]),
                Route("/instances/{instance_id:path}", self.admin.remove_instance, methods=["DELETE"]),
            ],
            exception_handlers={HTTPException: _http_error},  # unknown paths, wrong methods: OpenAI format
            lifespan=self.lifespan,
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in PROXY_PATHS:
            await self.proxy(scope, receive, send)
        else:
            await self.starlette(scope, receive, send)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def start(self) -> None:
        if self.decider.decision_log is not None:
            self.decider.decision_log.open()
        await self.pool.start()
        if self.discovery is not None:
            await self.discovery.start()
        if self.admission is not None:
            self.admission.start()
        if self.autoscaler is not None:
            await self.autoscaler.start()

    async def stop(self) -> None:
        if self.autoscaler is not None:  # no new starts or releases while the pool stops
            await self.autoscaler.stop()
        if self.discovery is not None:  # no instance joins or leaves while the pool stops
            await self.discovery.stop()
        if self.admission is not None:
            await self.admission.stop()
        await self.pool.stop()
        if self.autoscaler is not None:  # then the engines it started
            await self.autoscaler.close()
        if self.decider.decision_log is not None:
            self.decider.decision_log.close()

    async def models(self, request: Request) -> Response:
        refusal = self.guard.check_client(request.headers.get("authorization"))
        if refusal is not None:
            return refused(refusal)
        for inst in self.pool.routable():
            try:
                async with self.pool.session.get(
                    inst.url + "/v1/models", timeout=aiohttp.ClientTimeout(total=5.0)
                ) as resp:
                    body = await resp.read()
                    if resp.status == 200:
                        return Response(body, media_type="application/json")
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                log.warning("GET /v1/models from %s failed: %s", inst.id, e)
        return error_response(503, "no healthy instance available", "no_healthy_instance")


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)
