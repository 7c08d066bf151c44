"""Operator endpoints: GET /instances, POST /instances, DELETE /instances/{id}, GET /metrics, GET /health."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from block.router.auth import CHALLENGE, Guard, Refusal
from block.router.errors import error_body
from block.router.instance import Instance
from block.router.instance_pool import InstancePool
from block.router.metrics import RouterMetrics


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def error_response(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        error_body(status, message, code), status_code=status, media_type="application/json", headers=headers
    )


def refused(refusal: Refusal) -> Response:
    headers = {k.decode(): v.decode() for k, v in CHALLENGE} if refusal.status == 401 else None
    return error_response(refusal.status, refusal.message, refusal.code, headers)


def describe(inst: Instance, now: float) -> dict[str, Any]:
    t = inst.tracker
    age = t.snapshot_age(now) if t is not None else None
    last = t.last_forecast if t is not None else None
    return {
        "id": inst.id,
        "url": inst.url,
        "healthy": inst.healthy,
        "state": inst.state,
        "in_rotation": inst.routable,
        "state_source": "unknown" if inst.source is None else inst.source.reads,
        "kind": inst.kind,
        # the step-time profile its forecasts use: the engine's own, else the fleet file's or --profile
        "profile": None if t is None or t.profile is None else t.profile.name,
        "predictor": inst.predictor_url,
        "in_flight": t.in_flight if t is not None else 0,
        "running": t.running if t is not None else None,
        "waiting": t.waiting if t is not None else None,
        "free_blocks": t.free_blocks if t is not None else None,
        # prompt blocks the router recorded sending there (its prefix index, bounded by the KV blocks)
        "prefix_index_blocks": len(t.prefix_index) if t is not None and t.prefix_index is not None else None,
        "snapshot_age_ms": None if age is None else round(age * 1e3, 3),
        "last_forecast": None if last is None else asdict(last),
        # online calibration: observed / profile step time per phase, and the samples behind them
        "calibration": None if t is None or t.calibration is None else t.calibration.describe(),
        "last_error": inst.last_error,
        "last_state_error": inst.last_state_error,
        # The sidecar as the router last heard it (a request's call, or an idle probe); null: no word yet.
        "predictor_healthy": None if inst.sidecar is None else inst.sidecar.healthy,
        "predictor_last_error": None if inst.sidecar is None else inst.sidecar.last_error,
        "cooldown_s": round(max(0.0, inst.suspended_until - now), 3),  # out after a timeout, this long
        # vLLM KV events (--kv-events): the exact prefix index, or null when not configured
        "kv_events": None
        if inst.kv_events is None
        else {
            "endpoint": inst.kv_events.endpoint,
            "in_sync": inst.kv_events.in_sync,
            "indexed_blocks": len(inst.kv_events.index),
            "batches": inst.kv_events.batches,
            "dropped": dict(inst.kv_events.dropped),
        },
    }


class Admin:
    def __init__(self, pool: InstancePool, metrics: RouterMetrics, guard: Guard):
        self.pool = pool
        self.metrics = metrics
        self.guard = guard
        self.provisioner: Any = None  # the auto-provisioner, when --provision is on

    async def list_instances(self, request: Request) -> Response:
        refusal = self.guard.check_read(request.headers.get("authorization"))
        if refusal is not None:
            return refused(refusal)
        now = time.monotonic()
        body: dict[str, Any] = {"instances": [describe(i, now) for i in self.pool.instances.values()]}
        # decisions that wanted forecasts and went without (the fallback rule chose), and why
        share = self.metrics.no_forecast_share()
        body["no_forecast_share"] = None if share is None else round(share, 6)
        body["fallbacks"] = dict(self.metrics.fallback_counts)
        # how often each Block engine's /state is read now: the refresh, or longer on a large fleet (the
        # read budget, --state-reads-per-s)
        body["state_read_period_ms"] = round(
            1e3 * max(self.pool.config.refresh_ms / 1e3, self.pool.min_read_gap()), 3
        )
        if self.provisioner is not None:  # standby instances, pending starts, recent decisions
            body.update(self.provisioner.describe())
        return json_response(body)

    async def add_instance(self, request: Request) -> Response:
        refusal = self.guard.check_admin(request.headers.get("authorization"))
        if refusal is not None:
            return refused(refusal)
        try:
            data = orjson.loads(await request.body())
            url = data["url"]
            predictor = data.get("predictor")
            if not isinstance(url, str) or (predictor is not None and not isinstance(predictor, str)):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return error_response(400, 'expected {"url": "http://host:port"} (optional "predictor")')
        try:
            inst = self.pool.add(url, predictor)
        except ValueError as e:
            return error_response(400, str(e), getattr(e, "code", None))
        except KeyError as e:
            return error_response(409, str(e.args[0]), "conflict")
        return json_response(describe(inst, time.monotonic()), status=201)

    async def remove_instance(self, request: Request) -> Response:
        refusal = self.guard.check_admin(request.headers.get("authorization"))
        if refusal is not None:
            return refused(refusal)
        instance_id = request.path_params["instance_id"]
        if not await self.pool.remove(instance_id):
            return error_response(404, f"no instance {instance_id!r}")
        return json_response({"removed": instance_id})

    async def metrics_endpoint(self, request: Request) -> Response:
        for inst in self.pool.instances.values():  # calibration factors are read at scrape time
            if inst.tracker is not None and inst.tracker.calibration is not None:
                self.metrics.calibration_observed(inst.id, inst.tracker.calibration.factors())
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def health(self, request: Request) -> Response:
        n = len(self.pool.routable())
        return json_response(
            {
                "status": "ok" if n else "no healthy instance",
                "healthy_instances": n,
                "instances": len(self.pool.instances),
            },
            status=200 if n else 503,
        )
