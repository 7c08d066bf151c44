"""Admission in the router: hold or reject the requests no instance can serve within their target.

Per request (block/router/proxy.py asks `admit` before its first attempt): the decision runs with the
request's target (block/admission), so only instances whose forecast meets it are candidates. When
none does, `--admission reject` answers 429 at once with a Retry-After from the forecasts; `queue`
holds it in a bounded queue (priority, then deadline; when full, the lowest-ranked request is shed
with a 429) until a placement pass finds it a place. Passes run when the state the forecasts read
changes: a request finishes, a snapshot arrives (InstancePool.on_change). A pass places the request
there and then (the tracker learns of it at once, so the next one in the pass sees it) and hands the
decision to the waiting handler. Every wait is bounded: a held request gives up at its deadline
(429: it can no longer meet its target); a client that disconnects is dropped from the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from block.admission import AdmissionSettings, Held, HeldQueue, Target
from block.request import RoutingRequest
from block.router.decide import Decider, Decision, NoInstance, NotAdmitted
from block.router.exchange import Exchange
from block.router.instance_pool import InstancePool
from block.router.metrics import RouterMetrics

log = logging.getLogger("block.router.admission")

# Headers a client sets per request (milliseconds; integer priority, higher is more important).
TTFT_HEADER = b"x-slo-ttft-ms"
E2E_HEADER = b"x-slo-e2e-ms"
PRIORITY_HEADER = b"x-priority"
MAX_TARGET_MS = 3_600_000.0  # an hour: targets beyond are refused (a held request waits that long)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A 429 for the client: why, and when to come back."""

    message: str
    code: str
    retry_after_s: int


@dataclass(slots=True)
class Waiter:
    request: RoutingRequest
    future: asyncio.Future[Decision | Rejection]


class RouterAdmission:
    def __init__(
        self, settings: AdmissionSettings, decider: Decider, pool: InstancePool, metrics: RouterMetrics
    ) -> None:
        self.settings = settings
        self.decider = decider
        self.pool = pool
        self.metrics = metrics
        self.queue = HeldQueue(settings.max_held if settings.holds else 0)
        self.changed = asyncio.Event()
        self._placer: asyncio.Task[None] | None = None

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.pool.on_change.append(self.changed.set)
        self._placer = asyncio.create_task(self._place_loop(), name="admission-placer")

    async def stop(self) -> None:
        if self.changed.set in self.pool.on_change:
            self.pool.on_change.remove(self.changed.set)
        if self._placer is not None:
            self._placer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._placer

    # -- one request -----------------------------------------------------------------------------

    def target(self, ttft_ms: float | None, e2e_ms: float | None, priority: int, arrived: float) -> Target:
        """The request's own targets (headers) where given, else the router's defaults."""
        s = self.settings
        ttft_s = ttft_ms / 1000.0 if ttft_ms is not None else s.ttft_s
        e2e_s = e2e_ms / 1000.0 if e2e_ms is not None else s.e2e_s
        return Target(arrived, ttft_s, e2e_s, priority)

    async def admit(
        self, request: RoutingRequest, target: Target, exchange: Exchange
    ) -> Decision | Rejection | None:
        """A decision (admitted), a Rejection (answer 429) or None: decide as without admission
        (no instance in rotation, or the client left while held)."""
        self.decider.gate.saw(target.priority, request.prompt_tokens)
        priority = str(target.priority)
        try:
            decision = await self.decider.decide(request, (), target)
        except NoInstance:
            return None
        except NotAdmitted as e:
            retry = e.verdict.retry_after_s
        else:
            self.metrics.admission_outcome(priority, "admitted")
            return decision
        if not self.settings.holds:
            self.metrics.admission_outcome(priority, "rejected")
            return Rejection(
                f"no instance can start this request within its target ({_describe(target)}) now",
                "slo_unreachable",
                retry,
            )
        return await self._hold(request, target, exchange, retry)

    async def _hold(
        self, request: RoutingRequest, target: Target, exchange: Exchange, retry_after_s: int
    ) -> Decision | Rejection | None:
        priority = str(target.priority)
        self.metrics.admission_outcome(priority, "held")
        future: asyncio.Future[Decision | Rejection] = asyncio.get_running_loop().create_future()
        held = Held(target, Waiter(request, future), retry_after_s)
        shed = self.queue.offer(held)
        if shed is held:
            self.metrics.admission_outcome(priority, "rejected")
            return _shed_rejection(held)
        if shed is not None:
            self._reject_shed(shed)
        self.metrics.held.set(len(self.queue))
        exchange.held = future
        try:
            remaining = target.expires_at - time.monotonic()
            if remaining > 0:
                await asyncio.wait((future,), timeout=remaining)
        finally:
            exchange.held = None
            if self.queue.remove(held):
                self.metrics.held.set(len(self.queue))
        self.metrics.held_seconds.observe(time.monotonic() - target.arrived)
        if future.cancelled():  # the client left (or the router is shutting down)
            return None
        if not future.done():  # its deadline passed while held
            future.cancel()
            self.metrics.admission_outcome(priority, "rejected")
            return Rejection(
                f"held {time.monotonic() - target.arrived:.1f} s: no instance could start this request "
                f"within its target ({_describe(target)}) in time",
                "slo_unmet",
                held.retry_after_s,
            )
        outcome = future.result()
        if isinstance(outcome, Rejection):
            self.metrics.admission_outcome(priority, "rejected")
        return outcome

    def _reject_shed(self, shed: Held) -> None:
        future = shed.item.future
        if not future.done():
            future.set_result(_shed_rejection(shed))

    # -- placing held requests -------------------------------------------------------------------

    async def _place_loop(self) -> None:
        """Woken by every change of state (finish, snapshot); a pass when something is held."""
        while True:
            await self.changed.wait()
            self.changed.clear()
            if len(self.queue):
                try:
                    await self._place_held()
                except Exception:  # a bug here must not stop admission: held requests time out
                    log.exception("placement pass failed")

    async def _place_held(self) -> None:
        order = self.queue.attempts()
        h = next(order, None)
        while h is not None:
            placed = await self._try_place(h)
            try:
                h = order.send(placed)
            except StopIteration:
                return

    async def _try_place(self, held: Held) -> bool:
        waiter: Waiter = held.item
        if waiter.future.done():  # gone (left, expired, shed): its handler takes it out
            return True
        try:
            decision = await self.decider.decide(waiter.request, (), held.target, held=True)
        except NotAdmitted as e:
            held.retry_after_s = e.verdict.retry_after_s
            return False
        except NoInstance:
            return False
        if waiter.future.done() or not self.queue.remove(held):  # it left while forecasts ran
            return True
        self.metrics.held.set(len(self.queue))
        # Routed now, so the next request of this pass is forecast with it in the queue.
        self.pool.on_routed(decision.instance, waiter.request, decision.decided_at, decision.forecast)
        self.decider.settle_soon()
        decision.routed = True
        self.metrics.admission_outcome(str(held.target.priority), "admitted")
        waiter.future.set_result(decision)
        return True


def _shed_rejection(held: Held) -> Rejection:
    return Rejection(
        "the router holds as many requests as it may (--max-held), all of higher or equal priority "
        "and earlier deadline",
        "queue_full",
        held.retry_after_s,
    )


def _describe(target: Target) -> str:
    parts = []
    if target.ttft_s is not None:
        parts.append(f"TTFT {target.ttft_s * 1000:.0f} ms")
    if target.e2e_s is not None:
        parts.append(f"E2E {target.e2e_s * 1000:.0f} ms")
    return ", ".join(parts)


def parse_target_headers(
    ttft: bytes | None, e2e: bytes | None, priority: bytes | None
) -> tuple[float | None, float | None, int | None]:
    """(ttft_ms, e2e_ms, priority) from the request's headers; ValueError names a bad one."""
    out: list[float | None] = []
    for name, raw in ((TTFT_HEADER, ttft), (E2E_HEADER, e2e)):
        if raw is None:
            out.append(None)
            continue
        try:
            ms = float(raw)
        except ValueError:
            ms = float("nan")
        if not 0 < ms <= MAX_TARGET_MS:
            raise ValueError(f"{name.decode()} must be a number of milliseconds in (0, {MAX_TARGET_MS:.0f}]")
        out.append(ms)
    level: int | None = None
    if priority is not None:
        try:
            level = int(priority)
        except ValueError:
            raise ValueError(f"{PRIORITY_HEADER.decode()} must be an integer") from None
    return out[0], out[1], level
