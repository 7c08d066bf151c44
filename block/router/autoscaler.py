"""The auto-provisioner inside the live router: feeds the controller, carries out its decisions.

- Observations: it listens to every request routed (with the forecast the decision made for the chosen
  instance, or one made here, rate-limited, when the decision made none) and finished.
- Every `interval_s` it releases drained instances, then asks the controller for a decision.
- Scale-up: a draining instance is put back in rotation if there is one (it is warm); otherwise the
  provider is asked for a new one in the background (a slow hook never stalls the router) and the
  instance joins the pool as "starting" until its health checks pass.
- Scale-down: the least-loaded instance is set draining (no new requests); once the router has no request
  in flight there, it leaves the pool and goes back to the provider. Nothing in flight is lost.
- Start timeout: an instance the provisioner added that has not passed its first health check within
  `start_timeout_s` (a crashed boot, a wrong URL from a hook) leaves the pool and goes back to the
  provider (which stops it), is counted and logged; the controller backs off, then may try again.
- Own forecasts stop at a horizon above the SLO (horizon.py): the decision only needs "over the SLO or
  not", and a full forecast on a deep queue could hold the event loop for tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from block.fleet.listeners import RequestListener, Routed
from block.provision.controller import (
    SCALE_DOWN,
    SCALE_UP,
    PoolCounts,
    ProvisionController,
    ProvisionDecision,
    ProvisionSettings,
)
from block.provision.horizon import predict_within
from block.provision.metrics import ProvisionMetrics
from block.provision.provider import Provider, ProvisionError
from block.request import RoutingRequest
from block.router.instance import Instance
from block.router.instance_pool import InstancePool

log = logging.getLogger("block.provision")

OWN_FORECAST_EVERY_S = 0.05  # when the policy forecasts nothing, forecast here at most this often
OWN_FORECAST_HORIZON = 1.5  # x SLO: beyond it a forecast only needs to say "over the SLO"
DEFAULT_START_TIMEOUT_S = 600.0  # generous: a GPU node plus a large model can take minutes to boot


class Autoscaler(RequestListener):
    def __init__(
        self,
        pool: InstancePool,
        settings: ProvisionSettings,
        provider: Provider,
        interval_s: float = 0.5,
        retry_s: float = 5.0,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.provider = provider
        self.interval_s = interval_s
        self.retry_s = retry_s
        self.start_timeout_s = float(start_timeout_s)  # the router's --start-timeout-s
        self.controller = ProvisionController(settings, start=time.monotonic())
        self.metrics = ProvisionMetrics(pool.metrics.registry, self.state_counts)
        self.requested = 0  # scale-ups handed to the provider, no URL back yet
        self._sent: dict[str, float] = {}  # request id -> routed at
        self._starting: dict[str, float] = {}  # instance id -> added at, until its first health check
        self._own_forecast_at = float("-inf")
        self._loop_task: asyncio.Task[None] | None = None
        self._actions: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    # -- life cycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self.pool.listeners.add(self)
        self._loop_task = asyncio.create_task(self._loop(), name="provision")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._actions:  # let starts and releases in progress finish (bounded), then cut them short
            await asyncio.wait(set(self._actions), timeout=10.0)
        for task in list(self._actions):
            task.cancel()
        await asyncio.gather(*self._actions, return_exceptions=True)
        self.pool.listeners.remove(self)

    async def close(self) -> None:
        """After the pool stopped (no health check sees them go): stop what the provider started."""
        await self.provider.close()

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick(time.monotonic())
            except Exception:  # a provisioning bug must never take the router down
                log.exception("provisioning tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()

    # -- what it hears (synchronously, from the pool on the request path) -------------------------

    def routed(self, instance: str, routed: Routed) -> None:
        now, request = routed.at, routed.request
        self._sent[request.id] = now
        forecast = routed.forecast
        inst = self.pool.instances.get(instance)
        tracker = None if inst is None else inst.tracker
        if forecast is None and tracker is not None and now - self._own_forecast_at >= OWN_FORECAST_EVERY_S:
            # The decision made no forecast (round robin, shed under load): make one, now and then.
            self._own_forecast_at = now
            try:
                expected = request.expected_output_tokens
                candidate = RoutingRequest(request.prompt_tokens, expected, expected)
                horizon = OWN_FORECAST_HORIZON * self.settings.slo_e2e_s
                forecast = predict_within(tracker, candidate, now, horizon)
            except Exception:
                log.debug("provisioning forecast failed on %s", instance, exc_info=True)
                forecast = None
        if forecast is not None:
            self.controller.observe_forecast(now, forecast.e2e_s)

    def finished(self, instance: str, request_id: str, at: float) -> None:
        routed_at = self._sent.pop(request_id, None)
        if routed_at is not None:
            self.controller.observe_finished(at, at - routed_at)
        inst = self.pool.instances.get(instance)
        if inst is not None and inst.draining and _in_flight(inst) == 0:
            self._wake.set()  # release it now rather than at the next tick

    # -- the tick ----------------------------------------------------------------------------------

    def counts(self) -> PoolCounts:
        states = self.state_counts()
        draining = states.get("draining", 0)
        serving = len(self.pool.instances) - draining + self.requested
        return PoolCounts(serving, states.get("starting", 0) + self.requested, draining)

    def state_counts(self) -> dict[str, int]:
        out: dict[str, int] = {"requested": self.requested, "standby": len(self.provider.standby())}
        for inst in self.pool.instances.values():
            out[inst.state] = out.get(inst.state, 0) + 1
        return out

    async def tick(self, now: float) -> ProvisionDecision | None:
        for inst in list(self.pool.instances.values()):
            if inst.draining and _in_flight(inst) == 0:
                await self.pool.remove(inst.id)  # out of the pool now; the provider may take a while
                self._spawn(self._release(inst))
        await self._expire_starts(now)
        decision = self.controller.decide(now, self.counts())
        if decision is not None:
            self.metrics.decisions.labels(decision.action, decision.reason).inc()
            log.info(
                "provision %s reason=%s serving %d -> %d%s",
                decision.action,
                decision.reason,
                decision.instances_before,
                decision.instances_after,
                "" if decision.value_s is None else f" latency_s={decision.value_s:.3f}",
            )
            if decision.action == SCALE_UP:
                self._scale_up(decision)
            else:
                self._scale_down(decision)
        return decision

    def _scale_up(self, decision: ProvisionDecision) -> None:
        draining = [i for i in self.pool.instances.values() if i.draining]
        if draining:  # warm and still there: cheaper than starting one
            inst = max(draining, key=_in_flight)
            self.pool.set_draining(inst, False)
            log.info("provision: %s back in rotation (was draining)", inst.id)
            return
        self.requested += 1
        self._spawn(self._acquire(decision))

    async def _expire_starts(self, now: float) -> None:
        """Release instances that never became healthy within the start timeout."""
        for inst_id, added_at in list(self._starting.items()):
            inst = self.pool.instances.get(inst_id)
            if inst is None or inst.state != "starting":  # gone, or it passed a health check
                del self._starting[inst_id]
                continue
            if now - added_at < self.start_timeout_s:
                continue
            del self._starting[inst_id]
            await self.pool.remove(inst.id)
            self.metrics.start_timeouts.inc()
            self.metrics.failures.labels(SCALE_UP).inc()
            self.controller.failed(None, now, self.retry_s)
            log.warning(
                "provision: %s not healthy %.0f s after it was added (%s): releasing it",
                inst.id,
                now - added_at,
                inst.last_error or "no answer",
            )
            self._spawn(self._release(inst))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)

    async def _acquire(self, decision: ProvisionDecision) -> None:
        try:
            url = await self.provider.acquire()
            try:
                inst = self.pool.add(url)
            except ValueError:  # an invalid URL, or one outside --allowed-upstreams: give it back
                await self.provider.release(url)
                raise
            inst.provisioned = True
            self._starting[inst.id] = time.monotonic()
            log.info("provision: %s added (%s), starting", inst.id, self.provider.name)
        except (ProvisionError, ValueError, KeyError, OSError) as e:
            self.metrics.failures.labels(decision.action).inc()
            self.controller.failed(decision, time.monotonic(), self.retry_s)
            log.warning("provision: scale-up failed: %s", e)
        finally:
            self.requested -= 1

    def _scale_down(self, decision: ProvisionDecision) -> None:
        candidates = [i for i in self.pool.instances.values() if not i.draining]
        if not candidates:
            self.controller.failed(decision, time.monotonic(), self.retry_s)
            return
        # Instances not in rotation first (nothing to drain), then ones the provisioner added, least loaded.
        order = {id(i): n for n, i in enumerate(self.pool.instances.values())}
        inst = min(candidates, key=lambda i: (i.routable, not i.provisioned, _in_flight(i), -order[id(i)]))
        self.pool.set_draining(inst, True)
        log.info("provision: %s draining (%d in flight)", inst.id, _in_flight(inst))
        self._wake.set()

    async def _release(self, inst: Instance) -> None:
        try:
            await self.provider.release(inst.url)
            log.info("provision: %s released (%s)", inst.id, self.provider.name)
        except ProvisionError as e:
            self.metrics.failures.labels(SCALE_DOWN).inc()
            log.warning("provision: release of %s failed: %s", inst.id, e)

    # -- GET /instances ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "standby": self.provider.standby(),
            "provision": {
                "mode": s.mode,
                "provider": self.provider.name,
                "slo_e2e_s": s.slo_e2e_s,
                "min_instances": s.min_instances,
                "max_instances": s.max_instances,
                "cooldown_s": s.cooldown_s,
                "scale_down": s.scale_down,
                "scale_down_hold_s": s.scale_down_hold_s,
                "start_timeout_s": self.start_timeout_s,
                "requested": self.requested,
                "states": self.state_counts(),
                "decisions": [d.to_dict() for d in list(self.controller.decisions)[-20:]],
            },
        }


def _in_flight(inst: Instance) -> int:
    return inst.tracker.in_flight if inst.tracker is not None else 0
