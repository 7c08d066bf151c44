"""What one instance looks like right now: its latest snapshot plus what was routed to it since.

`InstanceTracker` is the data layer's record of one instance and the policies' read-only view of it
(`block.policies.InstanceView`). The router, the cluster simulator and the predictor sidecar each keep
one per instance, so live and simulated decisions see the same thing and forecast through the same
code. Without a profile (a stock vLLM instance whose step times are unknown) it counts exactly as with
one and makes no forecasts.

Freshness: a snapshot is old the moment it is taken. Requests routed since (`on_routed`) are kept
as *pending* and folded into the counts and forecasts as waiting requests, behind the snapshot's
queue, until a snapshot shows them (matched by request id) or they finish (`on_finished`). A pending
request that a snapshot taken more than `forget_after_s` after its routing still does not show has
come and gone (or was lost) and is dropped. Requests reported finished are also removed from the
current snapshot's queue, so an early end (EOS before the planned length) frees its place at once.

In-flight record: the router's is exact (it sees every request end). A sidecar hears of requests only
from notices, which may be lost or forged, so with `in_flight_follows_snapshots` it keeps only the
requests still pending or in the latest snapshot: an id that never shows up is gone after
`forget_after_s`, and one whose /finished was lost goes when the engine no longer shows it.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from block.fleet.arrival_log import ArrivalLog, FleetLog
from block.fleet.calibration import InstanceCalibration
from block.fleet.prefix_holders import PrefixHolders
from block.fleet.prefix_index import PrefixIndex
from block.fleet.sources.block_state import reading
from block.predictor.floor import StepFloor, step_floor
from block.predictor.forecast import AddedDelay, Arrivals, Forecaster, Prediction
from block.predictor.lengths import DEFAULT_OUTPUT_TOKENS, OVERRUN_TOKENS, LengthRule
from block.profiles.profile import Profile
from block.replica.config import ReplicaConfig
from block.replica.fast_replica import DeadlineExceeded, SimulationStuck
from block.replica.snapshot import RequestState, Snapshot
from block.request import Forecast, RoutingRequest

ANTICIPATE_WINDOW_S = 10.0
# a snapshot received this long after a request finished shows its cached blocks (polls every 20 ms)
DONE_UNSEEN_S = 0.1  # anticipated arrivals follow the routing rate over this window


class ExactCache(Protocol):
    """An instance's prefix cache as the instance itself reports it."""

    def match_blocks(self, prefix_hashes: Sequence[int], block_size: int) -> int | None:
        """Leading blocks held; None when it cannot say now (then the approximate index answers)."""
        ...


def added_delay_for(policy: object) -> AddedDelay:
    """The harm term (the delay a request adds to others) costs an extra run per forecaster and a
    comparison per forecast: compute it only for a policy that gives it weight (the choice is the
    same either way)."""
    return "horizon" if getattr(policy, "harm_weight", 0.0) else "none"


_VERSIONS = itertools.count(1)
_latest = 0  # the newest version any tracker took


def _next_version() -> int:
    global _latest
    _latest = next(_VERSIONS)
    return _latest


def latest_version() -> int:
    """The newest `version` any tracker took: where it has not moved, no tracker changed (a fleet of a
    thousand is not scanned for changes at every decision)."""
    return _latest


class InstanceTracker:
    def __init__(
        self,
        id: str,
        profile: Profile | None,
        config: ReplicaConfig | None = None,
        *,
        default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
        length_of: Callable[[RequestState], int] | None = None,
        overrun_tokens: int = OVERRUN_TOKENS,
        added_delay: AddedDelay = "horizon",
        forget_after_s: float = 2.0,
        in_flight_follows_snapshots: bool = False,
        anticipate_arrivals: bool = False,
        anticipate_window_s: float = ANTICIPATE_WINDOW_S,
        fleet: FleetLog | None = None,
        prefix_index: PrefixIndex | None = None,
        calibrate: bool = False,
        holders: PrefixHolders | None = None,
    ) -> None:
        """`anticipate_arrivals`: forecasts add synthetic requests arriving after the candidate at
        the routing rate over the last `anticipate_window_s`, with the mean lengths of the requests
        routed then (see `block.predictor.forecast`): the `fleet`'s rate per instance when the
        trackers share one (see `block.fleet.arrival_log`), else this instance's own. Off by
        default. Without a `profile` (a stock vLLM instance whose step times are unknown) the tracker
        counts exactly as with one and makes no forecasts: `predict` answers None. `prefix_index`: the
        record of the prompt blocks routed here (block.fleet.prefix_index), kept within the instance's
        KV blocks, for `cached_prefix_blocks` when the instance reports no cache of its own.

        `calibrate`: keep an online calibration of the profile (block.fleet.calibration) in
        `calibration`, a listener of this instance's requests that the caller registers where they
        are routed; forecasts then use the profile scaled by its factors."""
        self.id = id
        self.profile = profile
        self.config = config or (
            ReplicaConfig.from_dict(profile.engine_defaults)
            if profile is not None and profile.engine_defaults
            else ReplicaConfig()
        )
        self.rule = LengthRule(default_output_tokens, overrun_tokens, length_of)
        self.added_delay: AddedDelay = added_delay
        self.forget_after_s = forget_after_s
        self.in_flight_follows_snapshots = in_flight_follows_snapshots
        self.anticipate_arrivals = anticipate_arrivals
        self.anticipate_window_s = anticipate_window_s
        self.fleet = fleet
        self.prefix_index = prefix_index
        self.holders = holders  # the fleet's record of where prompts' first blocks went (prefix_holders.py)
        self.exact_cache: ExactCache | None = None  # e.g. a vLLM KV-event feed (block.fleet.kv_events)
        self.last_forecast: Forecast | None = None  # for GET /instances
        self.snapshot: Snapshot | None = None
        self.snapshot_at: float | None = None  # caller time when the snapshot was received
        self.step_end: float | None = None  # end of the step in flight at the snapshot (engine clock)
        self._pending: dict[str, tuple[RequestState, float]] = {}  # id -> (state, routed at)
        # pending requests that finished before any snapshot showed them: id -> (prefix hashes, at)
        self._done_unseen: dict[str, tuple[tuple[int, ...], float]] = {}
        self._in_flight: set[str] = set()
        self._finished: set[str] = set()  # finished since the snapshot, still in it
        self._routed = ArrivalLog()
        self._forecaster: Forecaster | None = None
        # a new number whenever the state forecasts start from may have changed (see ready_at); unique
        # across trackers, so that a tracker replaced by a new one is never taken for it
        self.version = _next_version()
        # the forecaster before the latest request was routed here: the new one extends its checkpoint
        self._previous: Forecaster | None = None
        self.calibration: InstanceCalibration | None = None
        if calibrate and profile is not None:
            self.calibration = InstanceCalibration(
                profile,
                self.config.max_num_batched_tokens,
                lambda r: self.cached_prefix_blocks(r) * self.block_size,
                max_num_seqs=self.config.max_num_seqs,
            )
        self._scales = (1.0, 1.0)  # the calibration factors the forecaster was built with
        # running, waiting, waiting tokens to prefill (snapshot part), free blocks
        self._counts = (0, 0, 0, self.config.num_gpu_blocks)

    # -- what arrives ----------------------------------------------------------------------------

    def observe(self, snapshot: Snapshot, at: float, step_end: float | None = None) -> None:
        """A new snapshot, received at caller time `at` (`step_end`: see Forecaster)."""
        if self._still_idle(snapshot, step_end):
            # what forecasts start from is the same (an idle forecast is timed from when it is sent):
            # what was prepared for it stays (on a large, lightly loaded fleet most reads are of these)
            self.snapshot, self.snapshot_at = snapshot, at
            return
        self.snapshot, self.snapshot_at, self.step_end = snapshot, at, step_end
        self._forecaster = self._previous = None
        self.version = _next_version()
        self._finished.clear()
        # most snapshots come with nothing routed since the last one
        if self._pending or (self.in_flight_follows_snapshots and self._in_flight):
            seen = {s.id for s in snapshot.running}
            seen.update(s.id for s in snapshot.waiting)
            cutoff = at - self.forget_after_s
            self._pending = {k: v for k, v in self._pending.items() if k not in seen and v[1] >= cutoff}
            if self.in_flight_follows_snapshots:
                self._in_flight.intersection_update(seen | self._pending.keys())
        if self._done_unseen:  # a snapshot received well after they finished shows their blocks
            self._done_unseen = {k: v for k, v in self._done_unseen.items() if v[1] > at - DONE_UNSEEN_S}
        self._recount()

    def _still_idle(self, snapshot: Snapshot, step_end: float | None) -> bool:
        """Idle at the last snapshot and at this one, with the same engine state, and nothing routed,
        finished or forgotten here since."""
        old = self.snapshot
        return (
            old is not None
            and step_end is None
            and self.step_end is None
            and not (old.running or old.waiting or snapshot.running or snapshot.waiting)
            and not (self._pending or self._finished or self._done_unseen)
            and not (self.in_flight_follows_snapshots and self._in_flight)
            and old.free_blocks == snapshot.free_blocks
            and old.num_preemptions == snapshot.num_preemptions
            and old.profile == snapshot.profile
            and old.config == snapshot.config
            and old.free_cached == snapshot.free_cached
        )

    def observe_state(self, state: dict[str, Any], at: float) -> None:
        """A Block engine's `/state` body (which may name the step in flight)."""
        snapshot, step_end = reading(state)
        self.observe(snapshot, at, step_end)

    def on_routed(self, request: RoutingRequest, at: float) -> None:
        """`request` was routed here at caller time `at`: waiting, as far as this tracker knows."""
        prompt, expected = request.prompt_tokens, request.expected_output_tokens
        # its prompt's block hashes, when named as this instance names blocks (the forecast's cache)
        hashes = request.prefix_hashes if request.prefix_block_size == self.block_size else ()
        self._pending[request.id] = (RequestState(request.id, at, prompt, 0, 0, expected, hashes), at)
        self._in_flight.add(request.id)
        self._routed.record(at, prompt, expected)
        if self.fleet is not None:
            self.fleet.record(at, prompt, expected)
        if self.holders is not None and request.prefix_hashes:
            self.holders.record(request.prefix_hashes[0], self.id)
        index = self.prefix_index
        if index is not None and request.prefix_hashes:
            if index.capacity != self.num_gpu_blocks:  # the bound follows what the instance reports
                index.resize(self.num_gpu_blocks)
            index.record(request.prefix_hashes)
        self._previous, self._forecaster = self._forecaster, None
        self.version = _next_version()

    def on_finished(self, request_id: str, at: float) -> None:
        self._in_flight.discard(request_id)
        gone = self._pending.pop(request_id, None)
        if gone is not None:
            self._forecaster = None
            self.version = _next_version()
            if gone[0].prefix_hashes:  # done before a snapshot showed it: its blocks stay cached
                self._done_unseen[request_id] = (gone[0].prefix_hashes, at)
        if request_id not in self._finished and self._in_snapshot(request_id):
            self._finished.add(request_id)
            self._forecaster = None
            self.version = _next_version()
            self._recount()

    def _in_snapshot(self, request_id: str) -> bool:
        snap = self.snapshot
        if snap is None:
            return False
        return any(s.id == request_id for s in snap.running) or any(s.id == request_id for s in snap.waiting)

    # -- InstanceView ----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def running(self) -> int:
        return self._counts[0]

    @property
    def waiting(self) -> int:
        return self._counts[1] + len(self._pending)

    @property
    def free_blocks(self) -> int:
        """The engine's free KV blocks (pending requests, like waiting ones, hold none yet)."""
        return self._counts[3]

    @property
    def num_gpu_blocks(self) -> int:
        return (self.snapshot.config if self.snapshot else self.config).num_gpu_blocks

    @property
    def block_size(self) -> int:
        return (self.snapshot.config if self.snapshot else self.config).block_size

    @property
    def waiting_prompt_tokens(self) -> int:
        return self._counts[2] + sum(s.prompt_tokens for s, _ in self._pending.values())

    @property
    def pending(self) -> list[RequestState]:
        return [s for s, _ in self._pending.values()]

    def routed_in_last(self, seconds: float, now: float) -> int:
        return self._routed.count_since(now - seconds)

    def recent_arrivals(self, now: float, seconds: float | None = None) -> Arrivals | None:
        """The arrivals to expect here: the routing rate over the last `seconds` (default: the
        anticipation window) - the fleet's per instance when shared, else this instance's own - and
        the mean lengths of those requests; None when none was routed then."""
        window = self.anticipate_window_s if seconds is None else seconds
        if self.fleet is not None:
            return self.fleet.per_instance(now, window)
        return self._routed.arrivals(now, window)

    def cached_prefix_blocks(self, request: RoutingRequest) -> int:
        """See InstanceView. A Block engine's snapshot names the blocks it caches exactly (Snapshot.
        cached_prefix_blocks); otherwise from the instance's own account when it gives one (vLLM's KV
        events, while in sync), else from the router's record of what it routed here (the prefix
        index); 0 without either, and 0 from a Block engine that says caching is off."""
        if not request.prefix_hashes:
            return 0
        snap = self.snapshot
        if snap is not None and snap.profile and not snap.config.enable_prefix_caching:
            return 0  # a Block engine (one read from /metrics names no profile) that says caching is off
        if snap is not None and snap.free_cached is not None:  # a Block engine, caching on
            if request.prefix_block_size != snap.config.block_size:
                return 0
            n = snap.cached_prefix_blocks(request.prefix_hashes)
            for s, _ in self._pending.values():  # routed since: their blocks are on the way
                n = max(n, _common_prefix(s.prefix_hashes, request.prefix_hashes))
            for hashes, _ in self._done_unseen.values():  # or already cached
                n = max(n, _common_prefix(hashes, request.prefix_hashes))
            return n
        if self.exact_cache is not None:
            held = self.exact_cache.match_blocks(request.prefix_hashes, request.prefix_block_size)
            if held is not None:
                return held
        if self.prefix_index is not None:
            return self.prefix_index.match(request.prefix_hashes)
        return 0

    def prefix_sharers(self, request: RoutingRequest) -> int:
        """Requests in flight here (routed and not finished) whose prompt starts with the same block as
        this one: they hold that prefix's blocks in the KV cache, so it stays resident while they run.
        0 when the prompt has no prefix identity."""
        if not request.prefix_hashes:
            return 0
        first = request.prefix_hashes[0]
        n = sum(1 for s, _ in self._pending.values() if s.prefix_hashes[:1] == (first,))
        snap = self.snapshot
        if snap is not None:
            finished = self._finished
            for s in (*snap.running, *snap.waiting):
                if s.prefix_hashes[:1] == (first,) and s.id not in finished:
                    n += 1
        return n

    @property
    def decode_scale(self) -> float:
        """The calibrated decode factor forecasts use (1: not calibrated); policies may read it."""
        return 1.0 if self.calibration is None else self.calibration.scales()[0]

    def snapshot_age(self, now: float) -> float | None:
        return None if self.snapshot_at is None else now - self.snapshot_at

    # -- forecasts -------------------------------------------------------------------------------

    def forecaster(self) -> Forecaster | None:
        """The prepared forecaster for the current state (rebuilt only when the state changed); None
        before the first snapshot or without a profile."""
        if self.snapshot is None or self.profile is None:
            return None
        if self.calibration is not None and self.calibration.scales() != self._scales:
            self._forecaster = None  # a factor moved
        if self._forecaster is None:
            snap = self.snapshot
            if self._finished:
                gone = self._finished
                snap = Snapshot(
                    snap.config,
                    snap.now,
                    [s for s in snap.running if s.id not in gone],
                    [s for s in snap.waiting if s.id not in gone],
                    None,
                    snap.num_preemptions,
                    snap.profile,
                    snap.free_cached,  # (a finished request's blocks count as uncached free ones)
                )
            at = self.snapshot_at or 0.0
            profile = self.profile
            if self.calibration is not None:
                self._scales = self.calibration.scales()
                profile = profile.scaled(*self._scales)
            self._forecaster = Forecaster(
                snap,
                profile,
                pending=self.pending,
                pending_at=[routed - at for _, routed in self._pending.values()],
                rule=self.rule,
                step_end=self.step_end,
                previous=self._previous,
            )
            self._previous = None
        return self._forecaster

    def predict(
        self,
        request: RoutingRequest,
        now: float,
        *,
        added_delay: AddedDelay | None = None,
        deadline: float | None = None,
        horizon_s: float | None = None,
    ) -> Prediction | None:
        """Forecast `request` routed here at caller time `now`; None before any snapshot, or when
        `deadline` (a time.perf_counter() value) passes first. `added_delay`: instead of the
        tracker's own setting. `horizon_s`: see `Forecaster.forecast` (ignored when anticipating)."""
        fc = self.forecaster()
        if fc is None or self.snapshot_at is None:
            return None
        try:
            f = fc.forecast(
                request,
                max(0.0, now - self.snapshot_at),
                added_delay=self.added_delay if added_delay is None else added_delay,
                deadline=deadline,
                arrivals=self.recent_arrivals(now) if self.anticipate_arrivals else None,
                horizon_s=None if self.anticipate_arrivals else horizon_s,
            )
        except DeadlineExceeded:
            return None
        self.last_forecast = f
        return f

    def e2e_floor(self, request: RoutingRequest, now: float, horizon_s: float | None = None) -> float | None:
        """A time `predict(request, now)`'s e2e_s cannot be below (block.predictor.floor), from the same
        prepared state (with prefix caching modelled, it charges only what cannot be found cached);
        None when there is no forecast to bound (no snapshot, no profile). Raises ValueError as
        `predict` does for a request that cannot fit."""
        fc = self.forecaster()
        if fc is None or self.snapshot_at is None:
            return None
        horizon = None if self.anticipate_arrivals else horizon_s
        return fc.floor.e2e_s(request, max(0.0, now - self.snapshot_at), horizon)

    def ready_at(self, now: float, own_steps: Sequence[int]) -> tuple[list[float], bool] | None:
        """For each n of `own_steps`, a caller time R such that any forecast here of a request of at least
        n steps of its own routed at `now` or later has e2e_s >= R - now + own_s(request) (less
        floor.MARGIN of it; own_s: the request's own minimal time, see `own_floor`; with prefix
        caching, every block of its prompt found cached); and whether they come from the forecaster's
        checkpoint (block.predictor.checkpoint: tight; else from the snapshot's floor). Valid until
        `version` changes (or a checkpoint is built). None when there is no such bound: no forecasts,
        or calibration (its factors move between versions)."""
        if self.calibration is not None or self.snapshot_at is None or now < self.snapshot_at:
            return None
        fc = self.forecaster()
        if fc is None:
            return None
        if not fc.num_requests and fc.step_end_s is None:  # idle (ReadyOrder files these apart)
            return [self.snapshot_at] * len(own_steps), True
        elapsed = now - self.snapshot_at
        ready, tight = fc.ready_each(elapsed, own_steps)
        return [self.snapshot_at + r for r in ready], tight

    def prepare(self) -> None:
        """Build the forecaster's checkpoint now (block.predictor.checkpoint: a replay of the queue)
        rather than at the first decision that needs it; nothing where it does not apply."""
        fc = self.forecaster()
        if fc is not None and not self.anticipate_arrivals:
            with contextlib.suppress(SimulationStuck, DeadlineExceeded):  # a forecast will say so
                fc.checkpoint()

    def own_floor(self) -> tuple[StepFloor, ReplicaConfig] | None:
        """What `ready_at`'s own_s is computed with: StepFloor.own_s(request, config)."""
        fc = self.forecaster()
        return None if fc is None else (step_floor(fc.profile, fc.config), fc.config)

    def checkpoint_floor(
        self, request: RoutingRequest, now: float, deadline: float | None = None, prepare: bool = False
    ) -> float | None:
        """A tighter e2e_floor (without a horizon), from the forecaster's checkpoint (block.predictor.
        checkpoint: the queue ahead replayed once per state, where the state is asked again, or with
        `prepare`); None where it does not apply. Raises as `predict` does."""
        fc = self.forecaster()
        if fc is None or self.snapshot_at is None or self.anticipate_arrivals:
            return None
        return fc.checkpoint_floor(request, max(0.0, now - self.snapshot_at), deadline, prepare)

    def idle_signature(self, now: float) -> tuple[object, ...] | None:
        """For an instance with nothing to do (no request, no step in flight, no anticipated
        arrivals), what its forecasts depend on besides the request: equal signatures, equal forecasts
        (a decision forecasts one idle instance for all alike). None when not idle, or when its prefix
        cache is modelled (what it holds cached decides a request's hits there)."""
        fc = self.forecaster()
        if fc is None or fc.num_requests or fc.step_end_s is not None or self.anticipate_arrivals:
            return None
        if fc.caches:
            return None
        # (not when: an idle forecast is timed from the snapshot whenever it is sent, Forecaster.forecast)
        return self._idle_kind(fc)

    def idle_by(
        self, request: RoutingRequest, now: float, deadline: float | None = None
    ) -> tuple[object, ...] | None:
        """The idle signature this instance's forecast of `request` routed at `now` has (see
        `idle_signature`) where everything it has finishes before the request reaches it: that forecast
        is then an idle instance's (Forecaster.idle_by). None otherwise, or where not known without a
        run that fails (the forecast will say so)."""
        fc = self.forecaster()
        if fc is None or fc.caches or self.snapshot_at is None or self.anticipate_arrivals:
            return None
        try:
            if not fc.idle_by(request, now - self.snapshot_at, deadline):
                return None
        except (SimulationStuck, DeadlineExceeded):
            return None
        return self._idle_kind(fc)

    def _idle_kind(self, fc: Forecaster) -> tuple[object, ...]:
        """What an idle forecast here depends on besides the request (the profile as calibrated, when
        it is): equal kinds, equal forecasts."""
        return (id(fc.profile), fc.config, self.rule)

    def _recount(self) -> None:
        snap = self.snapshot
        if snap is None:
            return
        gone = self._finished
        running = [s for s in snap.running if s.id not in gone] if gone else snap.running
        waiting = [s for s in snap.waiting if s.id not in gone] if gone else snap.waiting
        bs = snap.config.block_size
        if snap.free_blocks is not None and not gone:
            free = snap.free_blocks
        else:
            used = sum(-(-s.computed_tokens // bs) for s in (*running, *waiting))
            free = snap.config.num_gpu_blocks - used
        # a preempted request recomputes its prompt and what it had generated
        prompt_left = sum(max(0, s.prompt_tokens + s.output_tokens - s.computed_tokens) for s in waiting)
        self._counts = (len(running), len(waiting), prompt_left, free)


def router_tracker(
    id: str,
    profile: Profile | None,
    config: ReplicaConfig | None,
    default_output_tokens: int,
    length_of: Callable[[RequestState], int] | None = None,
    fleet: FleetLog | None = None,
    calibrate: bool = False,
) -> InstanceTracker:
    """The router's tracker of one instance. Block engines name their profile in /state; for stock vLLM
    it is the router's `profile` setting. With a `fleet` log, forecasts anticipate the fleet's arrival
    rate per instance (where there are forecasts: with a profile). It records the prompt blocks routed
    there (a prefix index bounded by the instance's KV blocks). `calibrate`: see InstanceTracker."""
    tracker = InstanceTracker(
        id,
        profile,
        config=config,
        default_output_tokens=default_output_tokens,
        length_of=length_of,
        anticipate_arrivals=fleet is not None and profile is not None,
        fleet=fleet,
        calibrate=calibrate,
    )
    tracker.prefix_index = PrefixIndex(tracker.num_gpu_blocks)
    return tracker


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):  # lengths differ
        if x != y:
            break
        n += 1
    return n
