"""The set of configured instances: adding and removing them, rotation, and the request bookkeeping:
each instance's tracker, then the request listeners (the instance's own: its state source and sidecar;
the pool's: auto-provisioning). The router never connects anywhere but these instances (and their
sidecars)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from block.fleet.arrival_log import FleetLog
from block.fleet.kv_events import KvEventFeed
from block.fleet.listeners import Listeners, Routed
from block.fleet.sources import detect
from block.fleet.sources.lean_get import LeanGet
from block.fleet.tracker import router_tracker
from block.prefix import PREFIX_BLOCK_SIZE
from block.profiles import Profile, load_profile
from block.replica import ReplicaConfig
from block.request import Forecast, RoutingRequest
from block.router.config import RouterConfig
from block.router.health import health_loop
from block.router.instance import Instance
from block.router.metrics import RouterMetrics
from block.router.poller import state_loop
from block.router.served_models import RETRY_S, learn, served_by
from block.router.sidecar import SidecarClient, SidecarNotices
from block.router.upstreams import check_upstream

log = logging.getLogger("block.router.pool")


def make_session(config: RouterConfig) -> aiohttp.ClientSession:
    """One session for the router's lifetime: pooled keep-alive connections to every instance."""
    connector = aiohttp.TCPConnector(
        limit=0,  # no global cap: thousands of concurrent streams are the point
        limit_per_host=0,
        keepalive_timeout=60.0,
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout),
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
    )


class InstancePool:
    def __init__(self, config: RouterConfig, metrics: RouterMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.allowed_upstreams = config.upstream_allow_list()  # None: any valid URL
        self.instances: dict[str, Instance] = {}
        self.base_config = ReplicaConfig()  # for stock vLLM, where /metrics gives only the cache config
        self.session: aiohttp.ClientSession = None  # type: ignore[assignment]  # made in start()
        self._routable: list[Instance] = []
        self.routable_ids: frozenset[str] = frozenset()  # the rotation filter's list (block.fleet.filters)
        # Tokens per block the router hashes prompts at (their prefix identity): the instances' KV block
        # size; vLLM's default until one is known, or where the instances disagree.
        self.prefix_block_size = PREFIX_BLOCK_SIZE
        self._served: frozenset[str] | None = None  # models the routable instances serve, if known
        self._background: set[asyncio.Task[Any]] = set()
        # Requests in flight per instance id, deleted instances included: a deleted instance's metric
        # series stays until its last request finished, so the gauge never goes below zero.
        self._in_flight: dict[str, int] = {}
        # Told of every request routed and finished, on any instance (the auto-provisioner).
        self.listeners = Listeners()
        # Every route, shared by the trackers when forecasts anticipate arrivals (--anticipate-arrivals).
        self.fleet: FleetLog | None = FleetLog() if config.anticipate_arrivals else None
        # Called when what the forecasts read changed: a request finished, a snapshot arrived
        # (admission re-checks the requests it holds then).
        self.on_change: list[Callable[[], None]] = []
        # Each profile loaded once and shared by the instances that run it, as in the simulator: alike
        # idle instances are then one kind, forecast once per decision (InstanceTracker.idle_signature
        # tells kinds apart by the profile object); None for a name that is not a profile
        self._profiles: dict[str, Profile | None] = {}

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.session = make_session(self.config)
        predictors = self.config.predictors or [None] * len(self.config.instances)
        for url, predictor in zip(self.config.instances, predictors, strict=True):
            self.add(url, predictor)

    async def stop(self) -> None:
        for inst in list(self.instances.values()):
            await self._stop_tasks(inst)
        for task in list(self._background):
            task.cancel()
        if self.session is not None:
            await self.session.close()

    async def wait_ready(self, count: int | None = None, timeout: float = 10.0) -> bool:
        """Until `count` instances (default: all) are in rotation, or the timeout."""
        want = len(self.instances) if count is None else count
        deadline = time.monotonic() + timeout
        while len(self._routable) < want and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return len(self._routable) >= want

    # -- membership ----------------------------------------------------------------------------

    def add(self, url: str, predictor_url: str | None = None, profile: str | None = None) -> Instance:
        """Raises ValueError (BadUpstream, UpstreamNotAllowed) for a URL the router must not use.
        `profile`: this instance's step-time profile where it does not name one (else the --profile)."""
        url = check_upstream(url, self.allowed_upstreams)
        if predictor_url:
            predictor_url = check_upstream(predictor_url, self.allowed_upstreams, "predictor")
        inst = Instance(url, predictor_url or None, profile)
        if inst.id in self.instances:
            raise KeyError(f"instance {inst.id} is already configured")
        inst.health_get = LeanGet.where_plain(url, "/health")
        self.instances[inst.id] = inst
        self.metrics.set_health(inst.id, False)
        refresh_s, state_timeout = self.config.refresh_ms / 1000.0, max(0.2, self.config.health_interval)
        events = self.config.kv_event_endpoints(url)
        if events is not None:
            inst.kv_events = KvEventFeed(
                *events, on_drop=lambda reason, i=inst.id: self.metrics.kv_events_dropped(i, reason)
            )
            inst.kv_events.start()
        inst.tasks = [
            asyncio.create_task(health_loop(self, inst), name=f"health-{inst.id}"),
            asyncio.create_task(
                state_loop(self.session, inst, refresh_s, state_timeout, self._changed, self.min_read_gap),
                name=f"state-{inst.id}",
            ),
        ]
        return inst

    async def remove(self, instance_id: str) -> bool:
        inst = self.instances.pop(instance_id, None)
        if inst is None:
            return False
        inst.removed = True
        self._update_routable()
        await self._stop_tasks(inst)
        self.metrics.forget_health(inst.id)
        if not self._in_flight.get(inst.id):  # else once its last request finishes (on_finished)
            self.metrics.forget_in_flight(inst.id)
        return True  # requests in flight there finish normally

    async def _stop_tasks(self, inst: Instance) -> None:
        inst.removed = True
        if inst.sidecar is not None:
            inst.sidecar.close()
        if inst.kv_events is not None:
            await inst.kv_events.stop()
        for task in inst.tasks:
            task.cancel()
        await asyncio.gather(*inst.tasks, return_exceptions=True)
        inst.tasks = []
        if inst.source is not None:
            inst.source.close()
        if inst.health_get is not None:
            inst.health_get.close()

    def set_draining(self, inst: Instance, draining: bool) -> None:
        """Draining: out of rotation for new requests while those in flight finish (scale-down)."""
        if inst.draining != draining:
            inst.draining = draining
            self._update_routable()

    def min_read_gap(self) -> float:
        """Seconds between two state reads of one instance, at least: the fleet's read budget shared by
        every configured instance (on a small fleet, below the refresh period: no effect)."""
        return len(self.instances) / self.config.state_reads_per_s

    # -- rotation ------------------------------------------------------------------------------

    def routable(self) -> list[Instance]:
        return self._routable

    def _update_routable(self) -> None:
        self._routable = [i for i in self.instances.values() if i.routable]
        self.routable_ids = frozenset(i.id for i in self._routable)
        self._served = served_by(self._routable)
        sizes = {i.tracker.block_size for i in self._routable if i.tracker is not None}
        self.prefix_block_size = sizes.pop() if len(sizes) == 1 else PREFIX_BLOCK_SIZE
        if self.fleet is not None:
            self.fleet.instances = max(1, len(self._routable))

    def set_healthy(self, inst: Instance, healthy: bool) -> None:
        if inst.healthy != healthy:
            inst.healthy = healthy
            if not healthy and inst.kv_events is not None:  # whatever comes back has an empty cache
                inst.kv_events.engine_restarted()
            self.metrics.set_health(inst.id, healthy)
            self._update_routable()

    def mark_failed(self, inst: Instance, error: str) -> None:
        """Passive check: a connection that failed takes the instance out until /health says otherwise."""
        inst.last_error = error
        if inst.healthy:
            log.warning("instance %s out of rotation: %s", inst.id, error)
            self.set_healthy(inst, False)

    def suspend(self, inst: Instance, error: str) -> None:
        """A timeout: out of rotation, and health checks cannot bring it back for a cool-down. A hung
        engine still answers /health; the cool-down doubles per timeout without a completed response
        in between (up to 8x), so a hung instance costs one timed-out attempt per cool-down at most."""
        inst.last_error = error
        cooldown = self.config.timeout_cooldown_s * 2 ** min(inst.timeouts_in_a_row, 3)
        inst.timeouts_in_a_row += 1
        inst.suspended_until = time.monotonic() + cooldown
        if inst.healthy:
            log.warning("instance %s out of rotation for %.0f s: %s", inst.id, cooldown, error)
            self.set_healthy(inst, False)

    def completed(self, inst: Instance) -> None:
        """A response from it completed: it generates, so the next timeout starts the cool-down over."""
        inst.timeouts_in_a_row = 0

    async def bring_up(self, inst: Instance) -> None:
        """Healthy again: detect the kind and build the tracker the first time, then rejoin."""
        if time.monotonic() < inst.suspended_until:
            return  # a timeout's cool-down: /health answering says nothing about generating
        if inst.tracker is None and not await self._setup(inst):
            return
        await learn(self.session, inst, self._models_timeout)
        if not inst.removed:
            log.info("instance %s in rotation (%s)", inst.id, inst.kind)
            self.set_healthy(inst, True)

    def _profile(self, name: str | None) -> Profile | None:
        """The profile of that name (a shipped one or a .json path), loaded once; None for no name or
        one that is not a profile (warned once: forecasts are then unavailable where it is named)."""
        if not name:
            return None
        if name not in self._profiles:
            try:
                self._profiles[name] = load_profile(name)
            except (ValueError, OSError):
                log.warning("unknown profile %r: forecasts unavailable where it is named", name)
                self._profiles[name] = None
        return self._profiles[name]

    async def _setup(self, inst: Instance) -> bool:
        """Detect where its state comes from, read a first snapshot and make its tracker."""
        timeout = max(0.5, self.config.health_interval)
        kind = await detect(self.session, inst.url, timeout)
        if kind is None:
            inst.last_error = "could not fetch /state"
            return False
        # What the fleet file says of this instance: used where the instance itself does not say.
        engine = self.config.fleet.engine_for(inst.url)
        fleet_profile = self._profile(engine.profile) if engine is not None else None
        base = engine.replica_config(fleet_profile) if engine is not None else self.base_config
        source = kind(inst.url, base, self.config.metrics_read_ms / 1000.0)
        try:
            snapshot, step_end = await source.read(self.session, timeout)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            inst.last_error = f"first snapshot failed: {type(e).__name__}: {e}"
            return False
        inst.source = source
        inst.accepts_expected_field = source.accepts_expected_field
        # Block engines name their profile in /state; for stock vLLM it is the one the instance was added
        # with (discovery's pod label), else the fleet file's for this instance, else the router's --profile.
        profile = self._profile(snapshot.profile)
        if profile is None and inst.profile:
            profile = self._profile(inst.profile)
        if profile is None:
            profile = fleet_profile or self._profile(self.config.profile)
        inst.tracker = router_tracker(
            inst.id,
            profile,
            snapshot.config,
            self.config.default_output_tokens,
            fleet=self.fleet,
            calibrate=self.config.calibration,
        )
        inst.tracker.exact_cache = inst.kv_events
        inst.tracker.observe(snapshot, time.monotonic(), step_end)
        inst.listeners.add(source)
        if inst.tracker.calibration is not None:  # it hears the tokens streaming back (proxy.py)
            inst.listeners.add(inst.tracker.calibration)
        if inst.predictor_url:
            inst.sidecar = SidecarClient(
                inst.predictor_url,
                self.session,
                self.config.predictor_token,
                timeout_s=self.config.predictor_notify_timeout_s,
                max_in_flight=self.config.predictor_notify_max_in_flight,
                on_drop=self.metrics.predictor_notice_dropped,
            )
            inst.listeners.add(SidecarNotices(inst.sidecar, inst.tracker.calibration))
        return True

    # -- served models -------------------------------------------------------------------------

    @property
    def _models_timeout(self) -> float:
        return max(0.5, self.config.health_timeout)

    def served_models(self) -> frozenset[str] | None:
        """The model names the instances in rotation serve; None while one of them has not said."""
        if self._served is None:
            now = time.monotonic()
            for inst in self._routable:
                if inst.models is None and now - inst.models_asked_at >= RETRY_S:
                    inst.models_asked_at = now  # one question in flight per instance
                    self._spawn(self._learn_models(inst))
        return self._served

    async def _learn_models(self, inst: Instance) -> None:
        if await learn(self.session, inst, self._models_timeout):
            self._update_routable()

    def first_healthy(self) -> Instance | None:
        return self._routable[0] if self._routable else None

    # -- bookkeeping ---------------------------------------------------------------------------

    def on_routed(
        self, inst: Instance, request: RoutingRequest, now: float, forecast: Forecast | None = None
    ) -> None:
        """`forecast`: the decision's forecast for this instance, when it made one."""
        assert inst.tracker is not None  # only instances in rotation are routed to
        routed = Routed(request, now, forecast)
        self.listeners.routed(inst.id, routed)  # first: they see the queue without this request
        if request.prefix_hashes:  # what it was believed to hold, before it records this prompt
            cached = inst.tracker.cached_prefix_blocks(request) * request.prefix_block_size
            self.metrics.prefix_routed(request.prompt_tokens, cached)
        inst.tracker.on_routed(request, now)
        self._in_flight[inst.id] = self._in_flight.get(inst.id, 0) + 1
        self.metrics.in_flight_child(inst.id).inc()
        inst.listeners.routed(inst.id, routed)

    def on_tokens(self, inst: Instance, request_id: str, count: int, now: float) -> None:
        """`count` output tokens streamed back (only the listeners that hear tokens need telling)."""
        inst.listeners.tokens(inst.id, request_id, count, now)
        self.listeners.tokens(inst.id, request_id, count, now)

    def on_finished(self, inst: Instance, request_id: str, now: float) -> None:
        if inst.tracker is not None:
            inst.tracker.on_finished(request_id, now)
        self.metrics.in_flight_child(inst.id).dec()
        left = self._in_flight[inst.id] = self._in_flight[inst.id] - 1
        if left == 0 and inst.id not in self.instances:  # a deleted instance's last request
            del self._in_flight[inst.id]
            self.metrics.forget_in_flight(inst.id)
        inst.listeners.finished(inst.id, request_id, now)
        self.listeners.finished(inst.id, request_id, now)
        self._changed()

    def _changed(self) -> None:
        for call in self.on_change:
            call()

    def hears_tokens(self, inst: Instance) -> bool:
        """Does anyone listen to this instance's streamed tokens (the stock-vLLM source does)?"""
        return bool(inst.listeners.on_tokens or self.listeners.on_tokens)

    def probe_idle_sidecar(self, inst: Instance) -> None:
        """A sidecar no request has used lately gets a bounded GET /health (its status in GET /instances)."""
        if inst.sidecar is not None and inst.sidecar.claim_probe():
            self._spawn(inst.sidecar.probe(self.config.health_timeout))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
