"""What-if forecasts from an instance snapshot: "what happens to one more request, sent now?"

`forecast()` is the one-shot entry point. `Forecaster` prepares a snapshot once and answers many
candidates (the tracker and `/predict_batch` keep one per instance state), caching the run without
the candidate that `added_delay_s` is measured against.

Time: the snapshot is taken at its `now`; the candidate is sent `elapsed_s` later and reaches the
engine's queue the profile's `request_overhead(prompt)` after that (0 unless fitted on a real server; the
emulator applies it too, and so does every request routed since the snapshot). The instance runs on
alone until then (every step that starts before the arrival), the candidate then joins the waiting
queue behind everything already there, and all times returned are relative to when it was sent.

`added_delay_s` (the harm to others) is the sum, over the requests that finish no later than the
candidate in the run with it, of (finish with candidate - finish without). Requests that outlive the
candidate are not counted: their shift is only known after draining both runs to the end, which
costs several times more (`added_delay="full"` does that when wanted). Either way it needs the run
without the candidate (drained once per Forecaster, then cached), which about doubles the cost of a
one-shot forecast: so it is opt-in (`added_delay="horizon"`) for `forecast()`.

Prefix caching (the snapshot's config has it on and something has an identity): the candidate's
`prefix_hashes` (when named at the instance's block size) are looked up in the instance's cache when it
is admitted, as every queued request's are, so a cached prefix shortens its prefill on this instance
only, blocks the requests ahead of it compute serve it too, and blocks evicted before it is admitted
do not (block/predictor/prefix_start.py: the cache a forecast starts from).

Deep queues: a Forecaster asked more than once keeps a checkpoint (checkpoint.py), the run without a
candidate up to the first step a candidate queued last can take part in, and starts later forecasts
there, so only the candidate's own part is replayed each time (same results, up to float rounding); a
tracker's new state after a route extends the previous state's checkpoint instead of replaying the
queue again. The checkpoint also gives a much tighter floor (`checkpoint_floor`, `ready_each`).

Asked again: from a state's second forecast on (the first where the previous state, before a route, had
one), forecasts are read off its timeline (timeline.py): the run without a candidate, recorded once to its
end (from the checkpoint where it serves, else from the snapshot, without the prefix-cache model), and a
candidate queued last read off it in microseconds where it preempts no one and never goes without its
token. With the prefix cache modelled, only candidates that cannot hit, where nobody is preempted (the
run without the model is then the run with it). Elsewhere the forecast replays as below; same times up to
float rounding either way.

Anticipated arrivals (opt-in, `Arrivals`): a plain forecast cannot see the requests that will reach
the instance after the candidate and join its batch, so it runs a little fast under load. With
`arrivals`, synthetic requests of the given mean lengths arrive at the given rate, deterministically
`1 / rate` apart from the candidate's arrival, until the candidate finishes. They are never watched
and their own times are not reported; `added_delay_s` keeps its meaning (it is measured on a run
without them, which costs one more run when both are asked for).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Literal

from block.predictor.cache_overlap import CacheOverlap
from block.predictor.checkpoint import Checkpoint, extended, run_to_checkpoint
from block.predictor.floor import MARGIN, EndToEndFloor, KnownPrefix, planned_output, step_floor
from block.predictor.lengths import DEFAULT_OUTPUT_TOKENS, OVERRUN_TOKENS, LengthRule, Plan, max_output
from block.predictor.prefix_start import PrefixStart
from block.predictor.timeline import Timeline
from block.profiles.profile import Profile
from block.replica.config import ReplicaConfig
from block.replica.fast_replica import DeadlineExceeded, FastReplica, SimRequest, SimulationStuck
from block.replica.prefix_cache import prompt_hashes
from block.replica.snapshot import RequestState, Snapshot
from block.request import Forecast, RoutingRequest

# A state's forecasts replayed before its run is recorded and read (timeline.py): a recording costs two
# or three replays and pays from about the third read; in `block simulate bench` (a) (12 instances, a
# snapshot every 20 ms) most states are asked once or twice, and recording at the second cost 6% more CPU.
REPLAYS_BEFORE_RECORDING = 2
CANDIDATE = "\0candidate"  # cannot clash with a request id from an engine
ANTICIPATED = "\0anticipated"  # prefix of the synthetic future arrivals' keys
AddedDelay = Literal["none", "horizon", "full"]


@dataclass(frozen=True, slots=True)
class Arrivals:
    """Requests expected to arrive after the candidate: `rate` per second, of these mean lengths."""

    rate: float
    prompt_tokens: int
    output_tokens: int

    @property
    def active(self) -> bool:
        return self.rate > 0 and self.prompt_tokens >= 1 and self.output_tokens >= 1

    def sized_for(self, config: ReplicaConfig) -> tuple[int, int]:
        """(prompt, output) tokens of each synthetic request, capped to what the instance can hold."""
        cap = config.room - 1
        prompt = max(1, min(self.prompt_tokens, cap))
        return prompt, max(1, min(self.output_tokens, max_output(prompt, config)))


@dataclass(frozen=True, slots=True)
class Prediction(Forecast):
    """A Forecast plus what it cost and what it assumed."""

    output_tokens: int  # the candidate's output length used (after capping)
    steps: int  # engine steps simulated, skipped ones included
    events: int  # steps simulated one by one
    preemptions: int  # of the candidate
    # Unfinished at the horizon asked for: every time is then the horizon, a lower bound.
    capped: bool = False
    anticipated_rate: float = 0.0  # req/s of the synthetic arrivals added after the candidate (0: none)


class Forecaster:
    """A snapshot (plus requests routed since) prepared for many what-if questions."""

    def __init__(
        self,
        snapshot: Snapshot,
        profile: Profile,
        *,
        pending: Sequence[RequestState] = (),
        pending_at: Sequence[float] | None = None,
        rule: LengthRule | None = None,
        step_end: float | None = None,
        previous: Forecaster | None = None,
    ) -> None:
        """`step_end`: when the snapshot was taken during an engine step (the Block engine reports
        `step_in_progress_until`), that step's end on the snapshot's clock. The snapshot then shows
        the state the step started from; the forecast replays that step and ends it then.

        `previous`: the forecaster of this state less the last pending request (the tracker's, before
        it routed one): its checkpoint, extended by that request, is this one's (see checkpoint.py).

        `pending_at`: when each pending request reaches the engine, in seconds after the snapshot
        (default: all at the snapshot). Those at or before 0 queue right away, the others join the
        waiting queue as time passes, as they would in the engine."""
        self.snapshot = snapshot
        self.step_end_s = None if step_end is None else max(0.0, step_end - snapshot.now)
        self.profile = profile
        self.config = snapshot.config
        self.rule = rule or LengthRule()
        plan_all, cfg = self.rule.plan_all, self.config
        self._running = plan_all(snapshot.running, cfg)
        self._waiting = plan_all(snapshot.waiting, cfg)
        self._later: list[tuple[float, Plan]] = []  # (offset, request) of pending arriving later
        # A request reaches the engine's queue a while after it was sent (HTTP, tokenising): fitted
        # profiles of real servers measure it; the emulator applies it.
        offsets = [0.0] * len(pending) if pending_at is None else list(pending_at)
        if len(offsets) != len(pending):
            raise ValueError("pending_at needs one time per pending request")
        overhead = profile.request_overhead
        offsets = [t + overhead(s.prompt_tokens) for t, s in zip(offsets, pending, strict=True)]
        if pending:
            arrivals = sorted(zip(offsets, pending, strict=True), key=lambda x: x[0])
            for (t, _), p in zip(arrivals, plan_all([s for _, s in arrivals], cfg), strict=True):
                if t <= 0:
                    self._waiting.append(p)
                else:
                    self._later.append((t, p))
        self._drained: dict[str, float] | None = None  # finish times without a candidate
        self._idle_at: float | None = None  # see idle_from
        self._busy_until: float | None = None  # a time before which it cannot be idle (idle_by)
        # prefix caching: each request's prompt hashes; modelled when anything is, or may be, cached
        self._hashes: dict[str, tuple[int, ...]] = {}
        if cfg.enable_prefix_caching:
            bs = cfg.block_size
            for s in (*snapshot.running, *snapshot.waiting, *pending):
                if s.prefix_hashes:
                    self._hashes[s.id] = prompt_hashes(s.prefix_hashes, s.prompt_tokens, bs)
        self._caching = bool(self._hashes or snapshot.free_cached)
        self._prefix_start: PrefixStart | None = None  # prepared on first use
        self._overlap: CacheOverlap | None = None  # prepared on first use
        self._cache_views: tuple[dict[str, int] | None, KnownPrefix] | None = None  # for the floors
        self._floor: EndToEndFloor | None = None
        # the run without a candidate up to where one is first seen (checkpoint.py): built at the
        # second forecast (a state asked once gains nothing), or at the first when `previous` had one
        self._checkpoint: Checkpoint | None = None
        self._checkpoint_floor: EndToEndFloor | None = None
        # the run without a candidate to its end (timeline.py), two or three replays to record: recorded
        # after REPLAYS_BEFORE_RECORDING forecasts replayed (at the first where its checkpoint is built),
        # or at once where the previous state had one (an instance routed to is asked again)
        self._timeline: Timeline | None = None
        self._kept: tuple[RoutingRequest, float, Prediction] | None = None  # see read_floor
        hot = previous is not None and previous._timeline is not None
        self._replays_before_timeline = 0 if hot else REPLAYS_BEFORE_RECORDING
        self._asked = 0
        self._extends: tuple[Checkpoint, Plan, float] | None = None
        if previous is not None and previous._checkpoint is not None:
            self._extends = self._extension_of(previous)

    def _extension_of(self, previous: Forecaster) -> tuple[Checkpoint, Plan, float] | None:
        """(previous checkpoint, the request this state adds at the end, when it reaches the queue), when
        this state is `previous`'s plus one pending request queued behind all the others."""
        cp = previous._checkpoint
        same = (
            cp is not None
            and not self._caching
            and previous.snapshot is self.snapshot
            and previous.profile is self.profile
            and previous.rule == self.rule
            and previous.step_end_s == self.step_end_s
            and previous._running == self._running
        )
        if not same:
            return None
        assert cp is not None
        if self._later:  # it reaches the queue after the snapshot, after every other pending one
            if previous._waiting == self._waiting and previous._later == self._later[:-1]:
                t, plan = self._later[-1]
                return cp, plan, t
        elif (  # queued at the snapshot: loaded with the queue, before the step in flight if any
            not previous._later
            and self.step_end_s is None
            and previous._waiting == self._waiting[:-1]
            and len(self._waiting) == len(previous._waiting) + 1
        ):
            return cp, self._waiting[-1], 0.0
        return None

    def _reuses(self) -> bool:
        """Whether this state is worth its checkpoint: asked before (a state asked once gains nothing
        from it), or extending its predecessor's (cheap), or built already."""
        return self._asked > 1 or self._checkpoint is not None or self._extends is not None

    def checkpoint(self, deadline: float | None = None) -> Checkpoint | None:
        """The run without a candidate up to where one queued last is first seen (checkpoint.py),
        built on first use. With the prefix cache modelled it is run with the cache (its hits and
        evictions), but it keeps only the requests' progress: forecasts do not start from it then,
        floors do."""
        if self._checkpoint is None:
            if self._extends is not None:
                cp, plan, t = self._extends
                self._checkpoint = extended(cp, plan, t, self.config, self.profile, deadline)
                self._extends = None
            if self._checkpoint is None:
                valid_from = self._later[-1][0] if self._later else 0.0
                sim, _ = self._build(until=valid_from)
                self._checkpoint = run_to_checkpoint(sim, max(0.0, valid_from), deadline)
        return self._checkpoint

    def checkpoint_floor(
        self, request: RoutingRequest, elapsed_s: float, deadline: float | None = None, prepare: bool = False
    ) -> float | None:
        """A tighter floor than `floor` (same meaning), from the checkpoint: the time the queue ahead
        takes is replayed, the rest bounded; None when the candidate reaches the queue outside it.
        Builds the checkpoint (a replay) where a forecast would (see `_reuses`), or with `prepare`; where
        the cache is modelled, forecasts do not start from it (a replay more), only with `prepare` (a
        fleet's walk: the bound it gives the instance's place in the order lasts for the state)."""
        # without a queue beyond its sequence slots, a state is bounded by its forecast read off its
        # timeline (recorded in a fleet's walk, `prepare`: cheap there); a deep queue's checkpoint bounds
        # it well for less than a read (which walks the preemptions of a nearly full cache)
        if self.num_requests < self.config.max_num_seqs:
            floor = self.read_floor(request, elapsed_s, deadline, prepare)
            if floor is not None:
                return floor
        if not (prepare or (not self._caching and (self._asked > 0 or self._reuses()))):
            return None
        cp = self.checkpoint(deadline)
        sent = max(0.0, elapsed_s)
        if cp is None or not cp.covers(sent + self.profile.request_overhead(request.prompt_tokens)):
            return None
        # from the checkpoint on, the candidate is in the queue already: no request overhead
        floor = self._floor_at_checkpoint(cp).e2e_s(request, 0.0, queued=True)
        return (cp.at - sent + floor) * (1 - MARGIN)

    def read_floor(
        self, request: RoutingRequest, elapsed_s: float, deadline: float | None = None, record: bool = False
    ) -> float | None:
        """The forecast's e2e_s itself where it can be read off the state's timeline (timeline.py; with
        `record`, recorded now if there is none): the tightest floor there is, about what a floor costs,
        and the forecast asked next for the same request is that read. None where it cannot be read."""
        cfg, prompt = self.config, request.prompt_tokens
        if self._timeline is None and not record:
            return None
        if not cfg.fits(prompt):
            return None  # the forecast says why
        sent = max(0.0, elapsed_s)
        arrival = sent + self.profile.request_overhead(prompt)
        out = planned_output(request, cfg)
        read = self._read(prompt, out, sent, arrival, self.candidate_hashes(request), deadline, record=record)
        if read is None:
            return None
        self._kept = (request, elapsed_s, read)
        return read.e2e_s * (1 - MARGIN)

    def ready_each(self, elapsed_s: float, own_steps: Sequence[int]) -> tuple[list[float], bool]:
        """For each n of `own_steps`, a time `ready` such that for any candidate of at least n steps, sent
        `elapsed_s` or later after the snapshot, with or without cache hits: e2e_s >= ready +
        floor.steps.own_s(request) - sent, less MARGIN of it (the cheap floor a fleet's fan-out orders
        instances by); and whether they are tight (from the checkpoint or the recorded run). From the
        floor's `ready_s`; from the checkpoint when it covers such
        candidates (their wait for the queue ahead replayed, then the checkpoint's floor: much the
        tighter); tightest, from the run recorded from the snapshot (`_recorded_ready_each`), recorded
        here for a state without a queue beyond its sequence slots (cheap, and it has no checkpoint to
        speak of). Extends the previous state's checkpoint first where it can (a few steps, not the
        queue)."""
        cp = self._checkpoint
        if cp is None and self._extends is not None:
            with contextlib.suppress(SimulationStuck):  # a forecast will say so
                cp = self.checkpoint()
                if cp is not None and not self._replays_before_timeline:  # asked next, most likely
                    self._timeline = self._record(cp.at, None)
        elif cp is None and self._timeline is None and self.num_requests < self.config.max_num_seqs:
            with contextlib.suppress(SimulationStuck):
                self._timeline = self._record(elapsed_s, None)
        recorded = self._recorded_ready_each(elapsed_s, own_steps)
        if recorded is not None:
            return recorded, True
        if cp is not None and cp.valid_from <= elapsed_s:
            floor = self._floor_at_checkpoint(cp)
            return [cp.at + floor.ready_s(n) for n in own_steps], True
        return [self.floor.ready_s(n) for n in own_steps], False

    def _recorded_ready_each(self, elapsed_s: float, own_steps: Sequence[int]) -> list[float] | None:
        """`ready_each` from the run recorded from the snapshot: the end of the
        n-th step from the first one a candidate sent then can be admitted in, less `step_s` for each
        after the first (each step takes at least that: a longer own part is bounded by those)
        (timeline.py: `end_floors`); None without such a recording, or where such a floor does not hold
        for every candidate: a step may get shorter with more in it (StepFloor.rising), or with the
        cache modelled the recording (without it) may not be the run (anyone preempted, or a prompt
        there may find another's blocks)."""
        timeline = self._timeline
        # (a deep queue's checkpoint orders it as well, for less: the walk reaches few of those)
        if timeline is None or self._checkpoint is not None or not timeline.serves(elapsed_s):
            return None
        steps = step_floor(self.profile, self.config)
        if not steps.rising or (self._caching and (timeline.preempts or not self._cannot_hit(()))):
            return None
        if timeline.end <= elapsed_s:  # done with all it has by then: a candidate meets it idle, and
            return [timeline.end] * len(own_steps)  # the fan-out forecasts it as an idle one (idle_by)
        ends = timeline.end_floors(elapsed_s, own_steps, steps.step_s)
        if ends is None:
            return None
        return [end - (n - 1) * steps.step_s for end, n in zip(ends, own_steps, strict=True)]

    def _floor_at_checkpoint(self, cp: Checkpoint) -> EndToEndFloor:
        if self._checkpoint_floor is None:
            cacheable, known = self._cache_view() if self.config.enable_prefix_caching else (None, None)
            if cacheable is not None:  # one preempted in the run may find its own blocks again: any
                cacheable = {key: len(hs) for key, hs in self._hashes.items()}
            self._checkpoint_floor = EndToEndFloor(
                self.profile,
                self.config,
                [*cp.running, *cp.waiting],
                (),
                None,
                cacheable=cacheable,
                known=known,
            )
        return self._checkpoint_floor

    @property
    def caches(self) -> bool:
        """Whether forecasts from this state model prefix-cache hits whatever the candidate."""
        return self._caching

    @property
    def floor(self) -> EndToEndFloor:
        """The lower bound of this state's forecasts (see floor.py), prepared on first use; with the
        prefix cache modelled, it charges only the prompt tokens that cannot be found cached."""
        if self._floor is None:
            cacheable, known = self._cache_view() if self.config.enable_prefix_caching else (None, None)
            self._floor = EndToEndFloor(
                self.profile,
                self.config,
                [*self._running, *self._waiting],
                self._later,
                self.step_end_s,
                cacheable=cacheable,
                known=known,
            )
        return self._floor

    def _cache_view(self) -> tuple[dict[str, int] | None, KnownPrefix]:
        if self._cache_views is None:
            self._cache_views = self._view_of_cache()
        return self._cache_views

    def _view_of_cache(self) -> tuple[dict[str, int] | None, KnownPrefix]:
        """For the floor: each request's leading prompt blocks that another request's prompt names or
        that are cached free (the most it may find cached at admission; None when nothing is modelled),
        and how many leading blocks of a candidate's prompt anything here names. Hashes are chained:
        prompts share a block only if they share every block before it, so only prompts whose first
        block is shared or cached need looking at."""
        hashes = self._hashes
        free = self.snapshot.free_hashes()
        by_first: dict[int, list[str]] = {}
        for key, hs in hashes.items():
            if hs:
                by_first.setdefault(hs[0], []).append(key)
        cacheable: dict[str, int] = {}
        for key, hs in hashes.items():
            family = by_first[hs[0]] if hs else ()
            if len(family) < 2 and (not hs or hs[0] not in free):
                continue
            others = set(chain.from_iterable(hashes[k] for k in family if k != key))
            n = 0
            while n < len(hs) and (hs[n] in others or hs[n] in free):
                n += 1
            cacheable[key] = n

        def known(candidate: Sequence[int], most: int) -> int:
            names = set(chain.from_iterable(hashes[k] for k in by_first.get(candidate[0], ())))
            n = 0
            while n < most and (candidate[n] in names or candidate[n] in free):
                n += 1
            return n

        return (cacheable if self._caching else None), known

    @property
    def num_requests(self) -> int:
        return len(self._running) + len(self._waiting) + len(self._later)

    def models_cache(self, request: RoutingRequest) -> bool:
        """Whether a forecast of `request` here counts prefix-cache hits (someone's prompt may be found
        cached)."""
        return self._caching or bool(self.candidate_hashes(request))

    def candidate_hashes(self, request: RoutingRequest) -> tuple[int, ...]:
        """The candidate's prompt hashes as this instance names its blocks (none: not modelled)."""
        cfg = self.config
        if not cfg.enable_prefix_caching or request.prefix_block_size != cfg.block_size:
            return ()
        return prompt_hashes(request.prefix_hashes, request.prompt_tokens, cfg.block_size)

    def _build(
        self,
        watch_all: bool = False,
        until: float = 0.0,
        candidate: tuple[int, ...] = (),
        model_cache: bool = True,
        record: list | None = None,
    ) -> tuple[FastReplica, list[SimRequest]]:
        """The instance at the snapshot, run on until `until`, with the pending requests queued as
        they arrive (any due later than `until`, e.g. from clock skew, at `until`). `candidate`: the
        candidate's prompt hashes (the prefix cache is modelled when anything has an identity, unless
        `model_cache` is False: see cache_overlap.py). `record`: the steps go there (timeline.py)."""
        sim = FastReplica(self.config, self.profile)
        sim.record = record
        reqs = sim.load(self._running, self._waiting, watch_all)
        hashes = self._hashes
        if model_cache and (candidate or self._caching):
            start = self._prefix_start
            if start is None:
                bs = self.config.block_size
                held = [hashes.get(r.key, ())[: r.c // bs] for r in reqs]
                start = self._prefix_start = PrefixStart(
                    held, list(hashes.values()), self.snapshot.free_cached or []
                )
            cache, held_records, implicit = start.start(sim.free + start.shared_blocks, candidate)
            sim.enable_prefix(
                cache,
                reqs,
                [hashes.get(r.key, ()) for r in reqs],
                held_records,
                implicit,
                start.shared_blocks,
                start.wanted,
                frozenset(candidate),
            )
        if self.step_end_s is not None and sim.has_work:
            sim.first_step_end = self.step_end_s
            sim.step()  # the step in flight: nothing that arrives now can join it
        for t, (key, prompt, out, c, g) in self._later:
            sim.advance_until(min(t, until))
            r = SimRequest(key, prompt, out, c, g, watch_all, hashes=hashes.get(key, ()))
            sim.add_waiting(r)
            reqs.append(r)
        sim.advance_until(until)
        return sim, reqs

    def without_candidate(self, deadline: float | None = None) -> dict[str, float]:
        """Finish time (from the snapshot) of every request if nothing more arrives. Cached."""
        if self._drained is None:
            sim, reqs = self._build(watch_all=True, until=self._later[-1][0] if self._later else 0.0)
            sim.run_until_watched_done(deadline=deadline)
            self._drained = {r.key: r.finish for r in reqs}  # type: ignore[misc]
        return self._drained

    def idle_from(self, deadline: float | None = None) -> float | None:
        """Seconds after the snapshot from which this instance has nothing to do if no candidate comes
        (every request finished, no step in flight): 0 when idle now; None where forecasts model the
        prefix cache (what it holds then depends on what ran). A run without a candidate, once per
        state; raises as a forecast would."""
        if self._caching:
            return None
        if self._idle_at is None:
            if not self.num_requests:
                self._idle_at = self.step_end_s or 0.0
            else:
                sim, _ = self._build(watch_all=True, until=self._later[-1][0] if self._later else 0.0)
                sim.run_until_watched_done(deadline=deadline)
                self._idle_at = max(sim.now, self.step_end_s or 0.0)
        return self._idle_at

    def idle_by(self, request: RoutingRequest, elapsed_s: float, deadline: float | None = None) -> bool:
        """Whether `request` sent `elapsed_s` after the snapshot reaches an instance with nothing left to
        do (no prefix-cache hits modelled for it): its forecast is then an idle instance's, bit for bit
        (see `forecast`)."""
        if self.candidate_hashes(request):
            return False
        arrival = max(0.0, elapsed_s) + self.profile.request_overhead(request.prompt_tokens)
        if self._busy_until is None:  # each request makes a token a step at most: no run needed for most
            step_s = step_floor(self.profile, self.config).step_s
            ahead = [(0.0, p) for p in (*self._running, *self._waiting)]
            left = [t + (p[2] - p[4]) * step_s for t, p in (*ahead, *self._later)]
            self._busy_until = max(left, default=0.0)
        if arrival < self._busy_until:
            return False
        idle_at = self.idle_from(deadline)
        return idle_at is not None and arrival >= idle_at

    def forecast(
        self,
        request: RoutingRequest,
        elapsed_s: float = 0.0,
        *,
        added_delay: AddedDelay = "none",
        deadline: float | None = None,
        arrivals: Arrivals | None = None,
        horizon_s: float | None = None,
    ) -> Prediction:
        """`deadline`: a time.perf_counter() value; past it the run stops with DeadlineExceeded.
        `arrivals`: anticipated arrivals after the candidate (see the module docstring).
        `horizon_s`: stop once the candidate has been there this long; a candidate still unfinished
        then gets a `capped` forecast (times = the horizon, no harm term). For a question such as "over
        the SLO or not?", it bounds the cost on a deep queue. Not combined with `arrivals`."""
        cfg = self.config
        prompt = request.prompt_tokens
        if not cfg.fits(prompt):
            raise ValueError(f"prompt_tokens {prompt} does not fit this instance")
        self._asked += 1
        out = planned_output(request, cfg)
        sent = max(0.0, elapsed_s)
        quiet = arrivals is None or not arrivals.active
        if not self.num_requests and self.step_end_s is None and quiet:
            # idle: nothing happens before it arrives, so its times do not depend on when it is sent;
            # timed as if sent at the snapshot, every idle instance alike gives the same forecast, bit
            # for bit (a decision forecasts one for all: InstanceTracker.idle_signature)
            sent = 0.0
            if not self._caching and not self.candidate_hashes(request):
                return self._alone(prompt, out, horizon_s, deadline)
        elif added_delay == "none" and quiet and self.idle_by(request, sent, deadline):
            # everything here finishes before it arrives: it meets an idle instance, so it gets an idle
            # instance's forecast, computed as one (the same, bit for bit: a decision uses the one
            # forecast of idle instances alike for it)
            return self._alone(prompt, out, horizon_s, deadline)
        arrival = sent + self.profile.request_overhead(prompt)  # when it reaches the engine's queue

        hashes = self.candidate_hashes(request)
        kept, self._kept = self._kept, None
        reusable = added_delay == "none" and quiet and horizon_s is None and kept is not None
        if reusable and kept[0] is request and kept[1] == elapsed_s:  # type: ignore[index]
            return kept[2]  # type: ignore[index]  # read for a fleet's floor just before (read_floor)
        if added_delay == "none" and quiet:
            read = self._read(prompt, out, sent, arrival, hashes, deadline, horizon_s)
            if read is not None:
                return read
        if added_delay == "none" and quiet and not hashes and not self._caching and self._reuses():
            cp = self.checkpoint(deadline)
            if cp is not None and cp.covers(arrival) and (horizon_s is None or cp.at < sent + horizon_s):
                sim = cp.replica(cfg, self.profile)
                return self._candidate_run(sim, [], prompt, out, hashes, sent, horizon_s, deadline, "none")
        if arrivals is not None and arrivals.active:
            cand, steps, events = self._run_anticipating(prompt, out, arrival, arrivals, deadline, hashes)
            harm = 0.0
            if added_delay != "none":  # measured without the synthetic arrivals, as documented
                harm = self.forecast(
                    request, elapsed_s, added_delay=added_delay, deadline=deadline
                ).added_delay_s
            return Prediction(
                ttft_s=cand.first_token - sent,  # type: ignore[operator]
                e2e_s=cand.finish - sent,  # type: ignore[operator]
                queue_delay_s=cand.first_sched - sent,  # type: ignore[operator]
                added_delay_s=harm,
                output_tokens=out,
                steps=steps,
                events=events,
                preemptions=cand.preemptions,
                anticipated_rate=arrivals.rate,
            )

        if added_delay == "none" and (hashes or self._caching) and self._cannot_hit(hashes):
            # nothing can be found cached short of a preemption (cache_overlap.py): the run without the
            # cache model is the run with it, unless it preempted
            sim, _ = self._build(until=arrival, model_cache=False)
            plain = self._candidate_run(sim, [], prompt, out, (), sent, horizon_s, deadline, "none")
            if not sim.num_preemptions:
                return plain
        sim, reqs = self._build(watch_all=added_delay == "full", until=arrival, candidate=hashes)
        return self._candidate_run(sim, reqs, prompt, out, hashes, sent, horizon_s, deadline, added_delay)

    def _alone(self, prompt: int, out: int, horizon_s: float | None, deadline: float | None) -> Prediction:
        """The forecast of a candidate that meets the instance idle, without the prefix cache modelled:
        its run alone, timed from when it was sent. One computation for an idle state and for a busy one
        done by the time it arrives, so that their forecasts are equal to the last bit (a read and a
        replay differ there, and a tie between them would go to whichever came out lower)."""
        sim = FastReplica(self.config, self.profile)
        sim.load([], [])
        sim.advance_until(self.profile.request_overhead(prompt))
        return self._candidate_run(sim, [], prompt, out, (), 0.0, horizon_s, deadline, "none")

    def _read(
        self,
        prompt: int,
        out: int,
        sent: float,
        arrival: float,
        hashes: tuple[int, ...],
        deadline: float | None,
        horizon_s: float | None = None,
        record: bool = False,
    ) -> Prediction | None:
        """The forecast read off the state's timeline (timeline.py), where one is recorded and serves
        it; None where the forecast must replay. With the prefix cache modelled, only for a candidate
        that cannot hit, off the run without the cache model, where nobody is preempted (that run is
        then the run with it: cache_overlap.py). Past `horizon_s`, capped as `forecast` caps. `record`:
        record the timeline now where there is none (else at the state's second such forecast)."""
        plain = not hashes and not self._caching
        if not plain and not self._cannot_hit(hashes):
            return None
        timeline = self._timeline
        if timeline is None:
            # (a state with its checkpoint built was reached in a fleet's walk: asked again, most likely)
            if self._replays_before_timeline and not record and self._checkpoint is None:
                self._replays_before_timeline -= 1
                return None
            timeline = self._timeline = self._record(arrival, deadline)
        if not timeline.serves(arrival):
            return None
        read = timeline.forecast(prompt, out, arrival, unpreempted=not plain)
        if read is None:
            return None
        first_sched, first_token, finish, steps, preemptions = read
        ttft, e2e, queued = first_token - sent, finish - sent, first_sched - sent
        capped = horizon_s is not None and e2e > horizon_s
        if horizon_s is not None and capped:
            ttft, e2e, queued = min(ttft, horizon_s), horizon_s, min(queued, horizon_s)
        return Prediction(
            ttft_s=ttft,
            e2e_s=e2e,
            queue_delay_s=queued,
            added_delay_s=0.0,
            output_tokens=out,
            steps=steps,
            events=0,  # read, not simulated
            preemptions=preemptions,
            capped=capped,
        )

    def _record(self, arrival: float, deadline: float | None) -> Timeline:
        """The state's timeline: from its checkpoint where one is built (or extends the previous state's;
        the queue ahead is not replayed again), else from the snapshot (the run without the cache
        model). Either serves every candidate that reaches the queue after the pending requests."""
        valid_from = self._later[-1][0] if self._later else 0.0
        if not self._caching and (self._checkpoint is not None or self._extends is not None):
            cp = self.checkpoint(deadline)
            if cp is not None:
                sim = cp.replica(self.config, self.profile)
                sim.record = []
                return Timeline(sim, cp.valid_from, 0, cp.preemptions, deadline)
        record: list = []
        sim, _ = self._build(until=valid_from, model_cache=False, record=record)
        in_flight = 1 if self.step_end_s is not None and record else 0
        return Timeline(sim, max(0.0, valid_from), in_flight, 0, deadline)

    def _cannot_hit(self, candidate: tuple[int, ...]) -> bool:
        """Whether no request of a forecast of this candidate can find a block cached before a preemption."""
        overlap = self._overlap
        if overlap is None:
            overlap = self._overlap = CacheOverlap(self._hashes.values(), self.snapshot.free_hashes())
        return overlap.cannot_hit(candidate)

    def _candidate_run(
        self,
        sim: FastReplica,
        reqs: list[SimRequest],
        prompt: int,
        out: int,
        hashes: tuple[int, ...],
        sent: float,
        horizon_s: float | None,
        deadline: float | None,
        added_delay: AddedDelay,
    ) -> Prediction:
        """Queue the candidate on `sim` (its arrival reached) and run until it finishes."""
        cand = SimRequest(CANDIDATE, prompt, out, watched=True, hashes=hashes)
        sim.add_waiting(cand)
        until = None if horizon_s is None else sent + horizon_s
        sim.run_until_watched_done(deadline=deadline, until=until)
        if horizon_s is not None and (cand.finish is None or cand.finish - sent > horizon_s):
            capped = [
                horizon_s if t is None else min(horizon_s, t - sent)
                for t in (cand.first_token, cand.first_sched)
            ]
            return Prediction(
                ttft_s=capped[0],
                e2e_s=horizon_s,
                queue_delay_s=capped[1],
                added_delay_s=0.0,
                output_tokens=out,
                steps=sim.steps,
                events=sim.events,
                preemptions=cand.preemptions,
                capped=True,
            )
        assert cand.finish is not None and cand.first_token is not None and cand.first_sched is not None

        harm = 0.0
        if added_delay != "none":
            base = self.without_candidate(deadline)
            limit = cand.finish if added_delay == "horizon" else float("inf")
            harm = sum(r.finish - base[r.key] for r in reqs if r.finish is not None and r.finish <= limit)
        return Prediction(
            ttft_s=cand.first_token - sent,
            e2e_s=cand.finish - sent,
            queue_delay_s=cand.first_sched - sent,
            added_delay_s=harm,
            output_tokens=out,
            steps=sim.steps,
            events=sim.events,
            preemptions=cand.preemptions,
        )

    def _run_anticipating(
        self,
        prompt: int,
        out: int,
        arrival: float,
        arrivals: Arrivals,
        deadline: float | None,
        hashes: tuple[int, ...] = (),
    ) -> tuple[SimRequest, int, int]:
        """The candidate's run with synthetic requests arriving every 1 / rate after it: the
        candidate, finished, and the steps and events simulated.

        A synthetic request joins the queue before the first step that starts at or after its
        arrival. While it could not be admitted anyway (no free sequence slot, a stuck queue ahead
        of it, too few blocks), a decode stretch need not stop for it: it is queued when the
        stretch ends, before the next step. Under load most stretches then run whole."""
        a_prompt, a_out = arrivals.sized_for(self.config)
        sim, _ = self._build(until=arrival, candidate=hashes)
        cand = SimRequest(CANDIDATE, prompt, out, watched=True, hashes=hashes)
        sim.add_waiting(cand)
        k = 1
        due = arrival + 1 / arrivals.rate
        skip_ahead, step = sim.skip_ahead, sim.step
        while cand.finish is None:
            if deadline is not None and time.perf_counter() > deadline:
                raise DeadlineExceeded(f"forecast unfinished after {sim.events} events")
            if sim.now >= due:
                sim.add_waiting(SimRequest(f"{ANTICIPATED}{k}", a_prompt, a_out))
                k += 1
                due = arrival + k / arrivals.rate
            elif skip_ahead(due, a_prompt):
                continue
            elif not step():
                raise SimulationStuck("idle with the candidate unfinished")
        assert cand.first_token is not None and cand.first_sched is not None
        return cand, sim.steps, sim.events


def forecast(
    snapshot: Snapshot,
    request: RoutingRequest,
    profile: Profile,
    *,
    pending: Sequence[RequestState] = (),
    pending_at: Sequence[float] | None = None,
    elapsed_s: float = 0.0,
    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    length_of: Callable[[RequestState], int] | None = None,
    overrun_tokens: int = OVERRUN_TOKENS,
    added_delay: AddedDelay = "none",
    step_end: float | None = None,
    arrivals: Arrivals | None = None,
) -> Prediction:
    """Forecast `request` sent `elapsed_s` after `snapshot` was taken, with `pending` (routed since the
    snapshot and not in it) queued ahead of it. See the module docstring for the rules."""
    rule = LengthRule(default_output_tokens, overrun_tokens, length_of)
    return Forecaster(
        snapshot, profile, pending=pending, pending_at=pending_at, rule=rule, step_end=step_end
    ).forecast(request, elapsed_s, added_delay=added_delay, arrivals=arrivals)
