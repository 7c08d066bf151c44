"""The event loop: request arrivals and per-replica step completions, in virtual time.

Each replica steps on its own: a step is scheduled at the replica's clock (its batch formed then), runs for
the profile's time of that batch times the replica's seeded noise, and completes; the next step starts at
once if there is work, otherwise the replica idles until a request arrives. A request arriving during a
step joins the next one, as in an engine. At equal times a step completion is processed before an arrival.

Routing follows the live router, through the same data layer (block.fleet): trackers are refreshed to the
latest 20 ms tick (freshness.py), the filters keep the instances a decision may use, forecasts are made
for the policy's targets only (the router's fan-out, without its deadline and budget: virtual time), the
policy chooses among them, the chosen tracker learns of the routed request and, when it completes, of its
end; the request listeners (auto-provisioning) hear of both. With calibration on, the trackers'
calibrations (block.fleet.calibration) hear every token as the router would: one event per request per
step, or per stretch of decode steps skipped in one go (a chunk of that many tokens at its end).

Session workloads (multi-turn chat) release a turn when the one before it finishes plus a think time
(sessions.py): a finish may bring an arrival forward, so step completion stops at it and the loop routes
the earliest pending arrival next. Such runs are eager and complete decode steps one by one. One
approximation: when a finish releases a turn due within the same router tick, changes earlier in that tick
were not captured for it (the decision was not yet known), so it sees them, up to one tick (20 ms) fresher
than the live router would; only think times shorter than a tick do this (0.4% of turns at a 5 s mean).

With admission (sim/admission.py) a request no instance's forecast serves within its target is held or
rejected instead, as in the router; while requests are held the loop re-checks them on every finish and
snapshot tick (run_holding_until). Admission is simulated behind one router.

Two schedules of the same events, with identical results:
- eager: a heap of step completions; before each decision every replica is brought up to its time, as
  policies that read instance state (or the router's in-flight counts) need;
- lazy, for policies whose choice reads no state (round robin, random): a replica is only brought up to
  date when a request is routed to it (and at the end). Replicas are independent between arrivals, so
  nothing changes, but runs of pure-decode steps grow long and Replica.run_decodes skips them in one go.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from block.admission import Target, Verdict
from block.admission.gate import admitted_candidates
from block.bench.record import RequestRecord
from block.fleet.calibration import Calibrations
from block.fleet.filters import Filter, apply_filters
from block.fleet.forecasts import Forecasts
from block.fleet.listeners import Listeners, Routed
from block.policies import Candidates, Choice, Policy
from block.prefix import PREFIX_BLOCK_SIZE
from block.profiles.model_error import TrueStepTime
from block.replica import Batch, DecodeRun, Replica, Request
from block.replica.ceiling_cache import CeilingKVCache, FleetBlocks
from block.request import RoutingRequest
from block.sim.admission import SimAdmission
from block.sim.config import SimConfig
from block.sim.early_stop import TtftWatch
from block.sim.records import build_records
from block.sim.requests import SimRequests
from block.sim.routers import make_routers, router_of
from block.sim.sessions import InOrder, SessionTurns
from block.sim.tracking import needs_snapshots, reads_state

# Called after each routing decision, before the request reaches its instance: (cluster, request index,
# now, the candidates with the forecasts the policy saw, choice); the cluster gives read access to
# replicas (for counterfactuals). Used by the prediction experiment; None costs nothing.
DecisionHook = Callable[["Cluster", int, float, Candidates, Choice], None]
_INF = float("inf")


@dataclass
class SimOutcome:
    config: SimConfig
    records: list[RequestRecord]
    duration_s: float  # virtual: start of the run to the last completion
    stats: dict[str, Any] = field(default_factory=dict)  # work counters and wall times


class Cluster:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        # Each instance its own profile and engine settings (a heterogeneous fleet); the first stands for
        # the fleet where one is asked for.
        self.profiles, self.replica_configs = config.instance_models()
        self.profile, self.replica_config = self.profiles[0], self.replica_configs[0]
        n = config.instances
        fleet_blocks = FleetBlocks() if config.prefix_ceiling else None
        self.replicas = [
            Replica(
                c,
                p,
                None
                if fleet_blocks is None
                else CeilingKVCache(c.num_gpu_blocks, c.block_size, fleet_blocks),
            )
            for p, c in zip(self.profiles, self.replica_configs, strict=True)
        ]
        # the router(s): policy, trackers, forecasts and snapshot feed each (routers.py); the first
        # one's are the cluster's own attributes, as with a single router
        self.routers = make_routers(
            config, self.profiles, self.replica_configs, self.replicas, self.step_end_of
        )
        first = self.routers[0]
        self.policy: Policy = first.policy
        self.trackers = first.trackers
        self.index_of = first.index_of
        self.feed = first.feed
        self.filters: list[Filter] = []  # in front of the policy (provisioning: the active instances)
        self.listeners = Listeners()  # told of every request routed and finished
        if config.calibration:
            calibrations = {t.id: t.calibration for t in self.trackers if t.calibration is not None}
            self.listeners.add(Calibrations(calibrations))
        self.noises = [config.noise_for(r) for r in range(n)]
        self.noise = [
            self.step_time_for(r, None if nz.is_exact else nz.apply) for r, nz in enumerate(self.noises)
        ]
        self.feeds = [router.feed for router in self.routers]
        self.uses_snapshots = needs_snapshots(self.policy)
        self.lazy = config.schedule == "auto" and not reads_state(self.policy)
        self.poll = config.refresh == "poll" and self.uses_snapshots and not self.lazy
        self.polled_tick = -1
        self.inflight: list[Batch | None] = [None] * n
        self.next_end: list[float] = [_INF] * n
        self.heap: list[tuple[float, int, int]] = []
        self.seq = 0  # heap tie-breaker: equal end times complete in the order they were scheduled
        self.token_times: dict[Request, list[float]] | None = {} if config.record_itl else None
        self.steps = 0
        self.limit = 0.0  # steps ending at or before this time may complete now (the next arrival)
        self.fast_forward = config.fast_forward
        self.sessions: SessionTurns | None = None  # a session workload's turns, released at finishes
        self.released = _INF  # earliest turn released since the loop last looked (sessions only)
        self.finishes = 0  # requests finished so far (a held request is re-checked after each)
        # SLO-aware admission (sim/admission.py): it needs every replica current and its snapshots.
        self.admission: SimAdmission | None = None
        admission = config.admission_settings()
        if admission.enabled:
            self.admission = SimAdmission(admission)
            self.uses_snapshots, self.lazy = True, False
            self.checked_tick = -1  # the latest snapshot tick at which held requests were re-checked

    @property
    def forecasts(self) -> Forecasts:
        """The first router's forecasts (provisioning replaces them with its own)."""
        return self.routers[0].forecasts

    @forecasts.setter
    def forecasts(self, forecasts: Forecasts) -> None:
        self.routers[0].forecasts = forecasts

    def before_change(self, r: int, t: float) -> None:
        for feed in self.feeds:
            feed.before_change(r, t)

    # -- replica steps -----------------------------------------------------------------------------

    def step_time_for(
        self, r: int, noise: Callable[[float], float] | None
    ) -> Callable[[float], float] | None:
        """What replica r's steps take beyond the profile's mean: model error (a true speed the trackers'
        profile does not know), then step noise. None: exactly the mean."""
        factor = self.config.model_error_for(r)
        if factor is None:
            return noise
        rep = self.replicas[r]
        return TrueStepTime(factor, lambda: rep.now, noise)

    def step_end_of(self, r: int) -> float | None:
        return self.next_end[r] if self.inflight[r] is not None else None

    def start_step(self, r: int, drawn: float | None = None) -> None:
        """Form replica r's next batch at its clock and schedule its completion."""
        rep = self.replicas[r]
        if drawn is None and self.fast_forward:
            decoded = rep.run_decodes(self.limit, self.noise[r])
            drawn = decoded.next_duration
            if decoded.steps:
                self._decoded(r, decoded)
                if self.uses_snapshots:  # marks the tick of the last change (no capture: see run)
                    self.before_change(r, rep.now)
        batch = rep.schedule()
        if not batch.requests:
            if batch.preempted:
                raise RuntimeError("a request needs more KV blocks than the cache holds")
            self.inflight[r] = None
            self.next_end[r] = _INF
            return
        if drawn is None:
            drawn = self.profiles[r].step_time(batch.shape())
            noise = self.noise[r]
            if noise is not None:
                drawn = noise(drawn)
        end = rep.now + drawn
        self.inflight[r] = batch
        self.next_end[r] = end
        if not self.lazy:
            self.seq += 1
            heapq.heappush(self.heap, (end, self.seq, r))

    def end_step(self, r: int, end: float) -> None:
        if self.uses_snapshots:
            self.before_change(r, end)
        batch = self.inflight[r]
        assert batch is not None
        outcome = self.replicas[r].complete(batch, end)
        self.steps += 1
        times = self.token_times
        if times is not None:
            for q in outcome.emitted:
                times[q].append(end)
        if self.listeners.on_tokens:
            tell, instance = self.listeners.tokens, self.trackers[r].id
            for q in outcome.emitted:
                tell(instance, q.id, 1, end)
        if outcome.finished:
            for q in outcome.finished:
                self.finished(r, q, end)
        self.start_step(r)

    def finished(self, r: int, q: Request, at: float) -> None:
        """The router that routed q sees it end (its stream closes) at `at`."""
        router = self.routers[router_of(q.id, len(self.routers))]
        tracker = router.trackers[r]
        tracker.on_finished(q.id, at)
        self.finishes += 1
        if self.uses_snapshots and not self.poll:
            router.feed.on_finished(r, q.id, at)
        if self.listeners.on_finished:
            self.listeners.finished(tracker.id, q.id, at)
        if self.sessions is not None:
            self.release_after(int(q.id), at)

    def release_after(self, i: int, at: float) -> None:
        """Request i of a session workload ended: its session's next turn is now due (sessions.py)."""
        assert self.sessions is not None
        t = self.sessions.release_after(i, at)
        if t is None:
            return
        self.released = min(self.released, t)
        # The next decision may now come sooner: capture pre-change states for its tick (freshness.py).
        k = self.feed.tick(t)
        for feed in self.feeds:
            if feed.next_decision_tick < 0 or k < feed.next_decision_tick:
                feed.next_decision_tick = k

    def _decoded(self, r: int, run: DecodeRun) -> None:
        """Report the steps Replica.run_decodes completed, as end_step reports one step."""
        self.steps += run.steps
        times = self.token_times
        tell = self.listeners.tokens if self.listeners.on_tokens else None
        for span in run.spans:
            if times is not None:
                ends = span.ends
                for q in span.requests:
                    times[q].extend(ends)
            if tell is not None:
                instance, count, end = self.trackers[r].id, len(span.ends), span.ends[-1]
                for q in span.requests:
                    tell(instance, q.id, count, end)
            for q in span.finished:
                self.finished(r, q, span.ends[-1])

    def run_steps_until(self, t: float, limit: float) -> None:
        """Complete every step (of every replica) that ends at or before `t`."""
        if self.admission is not None and len(self.admission.queue):
            self.run_holding_until(t)
        self.limit = limit
        heap = self.heap
        while heap and heap[0][0] <= t:
            end, _, r = heapq.heappop(heap)
            self.end_step(r, end)
            if self.released < t:
                return  # a finish released a session turn that arrives first

    def run_holding_until(self, t: float) -> None:
        """run_steps_until while requests are held: one step at a time, re-checking the held requests
        when a request finishes and at the start of each snapshot tick, as the router does. Nothing is
        skipped ahead (a placement may come at any step), and decisions may come in any tick, so each
        replica's state at a tick is captured before its first change there (freshness.py)."""
        adm, feed, heap = self.admission, self.feed, self.heap
        assert adm is not None
        saved = feed.next_decision_tick
        while heap and heap[0][0] <= t and len(adm.queue):
            end, _, r = heap[0]
            k = feed.tick(end)
            if k > self.checked_tick:  # a new snapshot: re-check at the tick's start, before its changes
                self.checked_tick = feed.next_decision_tick = k
                self.limit = k * self.config.refresh_s
                adm.recheck(self.limit)
                continue
            heapq.heappop(heap)
            feed.next_decision_tick = k
            self.limit = end
            finished = self.finishes
            self.end_step(r, end)
            if self.finishes != finished:
                adm.recheck(end)
        feed.next_decision_tick = saved

    def poll_until(self, t: float) -> None:
        """Reference refresh: snapshot every replica at every tick up to `t`, as the router polls."""
        dt = self.config.refresh_s
        k_last = self.feed.tick(t)
        while self.polled_tick < k_last:
            self.polled_tick += 1
            tau = self.polled_tick * dt
            before = math.nextafter(tau, -_INF)  # a change exactly at a tick comes after it
            self.run_steps_until(before, before)
            for r in range(len(self.replicas)):
                snapshot, step_end = self.feed.poll(r, self.polled_tick)
                for router in self.routers:
                    router.trackers[r].observe(snapshot, tau, step_end)

    def bring_up_to(self, r: int, t: float) -> None:
        """Lazy schedule: complete replica r's steps that end at or before `t`."""
        self.limit = t
        next_end, inflight = self.next_end, self.inflight
        while inflight[r] is not None and next_end[r] <= t:
            self.end_step(r, next_end[r])

    # -- routing -----------------------------------------------------------------------------------

    def route(
        self,
        rr: RoutingRequest,
        now: float,
        clock: list[float],
        router: int = 0,
        target: Target | None = None,
    ) -> tuple[int, Choice, Candidates] | Verdict:
        """Where `rr` goes, decided by router `router` (routers.py). With a `target` (admission), only
        instances whose forecast meets it are candidates, and the gate's Verdict comes back instead when
        none does."""
        side = self.routers[router]
        policy, trackers, forecasts = side.policy, side.trackers, side.forecasts
        if self.uses_snapshots and not self.poll:
            side.feed.refresh(range(len(trackers)), now)
        views = apply_filters(self.filters, trackers) if self.filters else trackers
        wants = policy.wants_forecasts
        if wants or target is not None:
            targets = policy.forecast_targets(views) if wants else views
            t0 = time.process_time()  # CPU time: meaningful even when other work shares the cores
            if target is None:
                made = forecasts.made
                candidates = forecasts.candidates(rr, targets, now)
                clock[0] += time.process_time() - t0
                clock[1] += forecasts.made - made
            else:  # the gate judges every target's forecast: none is pruned
                every = forecasts.in_process(rr, targets, now)
                clock[0] += time.process_time() - t0
                clock[1] += len(targets)
                assert self.admission is not None
                verdict = self.admission.gate.verdict(target, rr.prompt_tokens, targets, every, now)
                if not verdict.admit:
                    return verdict
                candidates = admitted_candidates(targets, every, verdict, wants)
        else:
            candidates = Candidates(views)
        choice = policy.choose(rr, candidates, now)
        return side.index_of[choice.instance.id], choice, candidates

    # -- the loop ----------------------------------------------------------------------------------

    def run(
        self,
        requests: SimRequests,
        on_decision: DecisionHook | None,
        pins: dict[int, int] | None = None,
        give_up_ttft_s: float | None = None,
    ) -> SimOutcome:
        """`pins` (request index -> replica index) sends those requests there whatever the policy chose,
        for counterfactuals; the policy still decides, so its own state moves on as in the plain run.
        `give_up_ttft_s`: stop as soon as the P99 TTFT is certain to exceed it (early_stop.py; the
        records are then partial and `stats["gave_up_at_s"]` says when)."""
        heard = self.listeners.on_routed or self.listeners.on_tokens or self.listeners.on_finished
        if on_decision is not None or heard:
            self.lazy = False  # a hook or a listener may look at any replica: keep them all current
        if on_decision is not None:
            for router in self.routers:
                router.forecasts.prune = False  # a hook may read every target's forecast
        wall0, cpu0 = time.perf_counter(), time.process_time()
        prompts = requests.prompt_tokens.tolist()
        outputs = requests.output_tokens.tolist()
        # Estimated lengths: the router plans with these and sends free-length requests (no max_tokens);
        # the replica still generates the true `outputs`.
        estimated = requests.planned_tokens is not None
        planned = requests.planned_tokens.tolist() if estimated else outputs
        arrivals = requests.arrival_s.tolist()
        hashes = requests.prefix_hashes  # the prompts' prefix identity, when the workload gives one
        # the replicas' prefix caches use it when they name blocks as the workload does
        same_blocks = self.replica_config.block_size == PREFIX_BLOCK_SIZE
        n = len(arrivals)
        queue: InOrder | SessionTurns = InOrder(n)
        if requests.sessions is not None:
            if self.poll:
                raise ValueError("session workloads are not simulated with refresh 'poll'")
            queue = self.sessions = SessionTurns(requests.sessions, arrivals)
            # Finishes decide when turns arrive: every replica stays current, steps end one by one.
            self.lazy = self.fast_forward = False
        feed, replicas, inflight = self.feed, self.replicas, self.inflight
        feeds, routers = self.feeds, len(self.routers)
        refresh_s = self.config.refresh_s
        # A request any instance could not hold is rejected (a mixed fleet: the smallest instance's limits).
        max_len = min(c.max_model_len for c in self.replica_configs)
        max_cached = min(c.num_gpu_blocks * c.block_size for c in self.replica_configs)
        reqs: list[Request | None] = [None] * n
        instance_of = [-1] * n
        clock = [0.0, 0]  # forecast seconds, forecasts
        fallbacks = 0
        times = self.token_times
        lazy = self.lazy
        listeners = self.listeners.on_routed
        admission = self.admission
        watch = None
        # the watch reads the replicas' first tokens: they must be current (eager), in arrival order
        if give_up_ttft_s is not None and not lazy and admission is None and requests.sessions is None:
            watch = TtftWatch(give_up_ttft_s, arrivals, 2 * refresh_s)
        gave_up_at = None
        if admission is not None:
            admission.priorities = [] if requests.priorities is None else requests.priorities.tolist()
            admission.route = lambda rr, now, target: self.route(rr, now, clock, 0, target)

            def place(
                i: int, rr: RoutingRequest, t: float, r: int, choice: Choice, cands: Candidates
            ) -> None:
                """Send an admitted request to replica r at `t` (the arrival path's steps below)."""
                nonlocal fallbacks
                fallbacks += choice.fallback
                if on_decision is not None:
                    on_decision(self, i, t, cands, choice)
                tracker = self.trackers[r]
                if listeners:
                    self.listeners.routed(tracker.id, Routed(rr, t, cands.forecast_for(tracker)))
                tracker.on_routed(rr, t)
                q = Request(
                    rr.id,
                    rr.prompt_tokens,
                    outputs[i],
                    t,
                    rr.expected_output_tokens,
                    prefix_hashes=rr.prefix_hashes if same_blocks else (),
                )
                reqs[i], instance_of[i] = q, r
                if times is not None:
                    times[q] = []
                self.before_change(r, t)
                rep = replicas[r]
                rep.add(q)
                if inflight[r] is None:
                    rep.advance_to(t)
                    self.limit = t
                    self.start_step(r)

            admission.place = place
        while True:
            i = queue.peek()
            if i < 0:
                if self.sessions is None or not self.heap:
                    break
                self.released = _INF
                self.run_steps_until(_INF, _INF)  # the last turns of sessions come from finishes
                continue
            t = arrivals[i]
            self.released = _INF
            if self.poll:
                self.poll_until(t)
                self.run_steps_until(t, t)
            elif not lazy:
                k = feed.tick(t)
                for f in feeds:
                    f.next_decision_tick = k
                # Skipped steps must end before this decision's tick starts: a replica's first change
                # within the tick may need its pre-change state captured (freshness.py).
                limit = math.nextafter(k * refresh_s, -_INF) if self.uses_snapshots else t
                self.run_steps_until(t, min(limit, t))
                if queue.peek() != i:
                    continue  # a finish released a session turn that arrives first
            if watch is not None and watch.over(t, reqs, i):
                gave_up_at = t
                break
            queue.pop()
            p, o = prompts[i], outputs[i]
            if p + o > max_len or p + o > max_cached:
                if self.sessions is not None:
                    self.release_after(i, t)
                continue  # rejected as an engine would (recorded as failed)
            e = planned[i]
            rid = str(i)
            h = hashes[i] if hashes else ()
            rr = RoutingRequest(p, e, None if estimated else o, rid, h)
            if admission is not None:  # routes it, holds it or rejects it (then placed by `place`)
                admission.arrive(i, rr, t)
                continue
            side = i % routers if routers > 1 else 0  # as router_of(rid)
            routed = self.route(rr, t, clock, side)
            assert not isinstance(routed, Verdict)
            r, choice, candidates = routed
            if pins is not None and i in pins:
                r = pins[i]
            fallbacks += choice.fallback
            if on_decision is not None:
                on_decision(self, i, t, candidates, choice)
            tracker = self.routers[side].trackers[r]
            if listeners:  # first: they see the queue without this request, as the decision did
                forecast = candidates.forecast_for(tracker)
                self.listeners.routed(tracker.id, Routed(rr, t, forecast))
            tracker.on_routed(rr, t)
            q = Request(rid, p, o, t, e, prefix_hashes=h if same_blocks else ())
            reqs[i], instance_of[i] = q, r
            if times is not None:
                times[q] = []
            if lazy:
                self.bring_up_to(r, t)
            elif not self.poll:
                nxt = queue.peek()
                k = feed.tick(arrivals[nxt]) if nxt >= 0 else -1
                for f in feeds:
                    f.next_decision_tick = k
                if self.uses_snapshots:
                    self.before_change(r, t)
            rep = replicas[r]
            rep.add(q)
            if inflight[r] is None:
                rep.advance_to(t)
                self.limit = t  # nothing may be skipped past an arrival not yet routed
                self.start_step(r)
        loop_s = time.perf_counter() - wall0
        if gave_up_at is not None:
            pass  # the verdict is in: no drain
        elif lazy:
            for r in range(len(replicas)):
                self.bring_up_to(r, _INF)
        else:
            self.run_steps_until(_INF, _INF)
        if admission is not None:
            admission.close()
        drain_s = time.perf_counter() - wall0 - loop_s
        records = build_records(
            reqs, instance_of, prompts, planned, arrivals, [t.id for t in self.trackers], times
        )
        if requests.priorities is not None:
            for rec, priority in zip(records, requests.priorities.tolist(), strict=True):
                rec.priority = priority
        if admission is not None:
            for i, why in admission.rejected.items():
                records[i].status, records[i].error = 429, f"rejected: {why}"
        duration = max(
            (q.finish_time for q in reqs if q is not None and q.finish_time is not None), default=0.0
        )
        stats = {
            "wall_s": time.perf_counter() - wall0,
            "cpu_s": time.process_time() - cpu0,
            "loop_s": loop_s + drain_s,
            "schedule": "lazy" if lazy else "eager",
            "steps": self.steps,
            "preemptions": sum(rep.num_preemptions for rep in replicas),
            "forecasts": clock[1],
            "forecast_cpu_s": clock[0],
            "pruned": sum(router.forecasts.pruned for router in self.routers),
            "walked": sum(router.forecasts.walked for router in self.routers),  # reached in a ready order
            "snapshots": sum(f.snapshots_taken for f in feeds),
            "routers": routers,
            "fallbacks": fallbacks,
            # vLLM's counters (vllm:prefix_cache_queries / _hits), per instance: prompt tokens looked up
            # in the prefix cache at admission and, of them, found cached
            "prefix_cache_queries": [getattr(rep.kv, "queries", 0) for rep in replicas],
            "prefix_cache_hits": [getattr(rep.kv, "hits", 0) for rep in replicas],
            # the same for requests readmitted after a preemption (tokens to recompute, found cached)
            "prefix_cache_recompute_queries": sum(
                getattr(rep.kv, "recompute_queries", 0) for rep in replicas
            ),
            "prefix_cache_recompute_hits": sum(getattr(rep.kv, "recompute_hits", 0) for rep in replicas),
            "engine": self.replica_config.to_dict(),
        }
        if gave_up_at is not None:
            stats["gave_up_at_s"] = gave_up_at
        if self.config.fleet:
            stats["engines"] = [c.to_dict() for c in self.replica_configs]
        if admission is not None:
            stats["admission"] = admission.summary()
        return SimOutcome(self.config, records, duration, stats)


def simulate(
    config: SimConfig,
    requests: SimRequests,
    on_decision: DecisionHook | None = None,
    pins: dict[int, int] | None = None,
    give_up_ttft_s: float | None = None,
) -> SimOutcome:
    """Run `requests` through a cluster built from `config`. Deterministic for a given config."""
    return Cluster(config).run(requests, on_decision, pins, give_up_ttft_s)
