"""A vLLM-style instance in virtual time: continuous batching over a paged KV cache.

Pure and deterministic: no clocks, no I/O, no randomness. The engine emulator drives it in real
time, the predictor copies it to ask "what if", and the cluster simulator runs many of them.

A step is two halves so that a real-time driver can sleep in between:

    batch = replica.schedule()                 # form the batch at replica.now
    outcome = replica.complete(batch, end)     # the step ran until `end`: apply its results

`step()` does both with the profile's mean step time (plus optional noise), and `run_decodes()`
does many pure-decode steps in one go, with exactly the same result (the simulator skips with it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from block.profiles.profile import Profile
from block.replica.batch import Batch
from block.replica.config import ReplicaConfig
from block.replica.kv_cache import KVCache, PrefixKVCache, blocks_for
from block.replica.prefix_cache import prompt_hashes
from block.replica.request import Request
from block.replica.snapshot import RequestState, Snapshot


@dataclass(slots=True)
class StepOutcome:
    start: float
    end: float
    batch: Batch
    emitted: list[Request] = field(default_factory=list)  # requests that produced a token this step
    finished: list[Request] = field(default_factory=list)


@dataclass(slots=True)
class DecodeSpan:
    """Consecutive pure-decode steps with the same requests: each of them emitted a token at each end."""

    requests: list[Request]
    ends: list[float]
    finished: list[Request] = field(default_factory=list)  # at the last end


@dataclass(slots=True)
class DecodeRun:
    """What Replica.run_decodes completed, in order."""

    steps: int = 0
    spans: list[DecodeSpan] = field(default_factory=list)
    # A pure-decode step that starts at or before `until` and ends after it has its duration drawn
    # (its noise spent) but is not run: the caller must run that step with exactly this duration.
    next_duration: float | None = None


class Replica:
    def __init__(self, config: ReplicaConfig, profile: Profile, kv: KVCache | None = None) -> None:
        """`kv`: a KV cache other than the one `config` asks for (the simulator's prefix ceiling)."""
        self.config = config
        self.profile = profile
        profile.cost.reserve(config.max_num_batched_tokens)  # hot loops index its tables
        kv_cache = PrefixKVCache if config.enable_prefix_caching else KVCache
        self.kv = kv if kv is not None else kv_cache(config.num_gpu_blocks, config.block_size)
        self.running: list[Request] = []  # scheduling order: oldest first, preemption takes the last
        self.waiting: deque[Request] = deque()
        self.now = 0.0
        self.num_preemptions = 0

    # -- queue ---------------------------------------------------------------------------------

    def add(self, request: Request) -> None:
        """Queue a request (FCFS). Its arrival time is its own; the replica's clock is not moved."""
        if request.prompt_tokens + request.output_tokens > self.config.max_model_len:
            raise ValueError(
                f"request {request.id}: {request.prompt_tokens} prompt + {request.output_tokens} output "
                f"tokens exceed max_model_len {self.config.max_model_len}"
            )
        if not self.kv.fits(request.prompt_tokens + request.output_tokens):
            raise ValueError(f"request {request.id} needs more KV blocks than the cache holds")
        if request.prefix_hashes:
            request.prefix_hashes = prompt_hashes(
                request.prefix_hashes, request.prompt_tokens, self.config.block_size
            )
        self.waiting.append(request)

    def abort(self, request: Request) -> None:
        """Drop a request (a client went away) and free its blocks. Safe mid-step: see complete()."""
        if request.is_finished or request.aborted:
            return
        request.aborted = True
        if request in self.waiting:
            self.waiting.remove(request)
        elif request in self.running:
            self.running.remove(request)
        self.kv.free(request)

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    @property
    def num_requests(self) -> int:
        return len(self.running) + len(self.waiting)

    # -- one step ------------------------------------------------------------------------------

    def schedule(self) -> Batch:
        """Form the next batch, vLLM v1 style.

        Running requests go first in age order, each taking what it still misses (one token for a
        decode, the rest of the prompt for a chunked prefill) within the step's token budget. If a
        request cannot get a KV block, the newest running request is preempted (recompute) until it
        can, possibly itself. Waiting requests are admitted FCFS only when nothing was preempted,
        while budget, sequence slots and blocks last; with prefix caching, a waiting request's cached
        prefix counts as computed when it is admitted.
        """
        # Request.num_missing_tokens is inlined: this runs for every request of every step.
        append, allocate, hit = self.kv.append, self.kv.allocate, self.kv.hit
        caching = self.kv.looks_up_prefixes
        running, waiting = self.running, self.waiting
        budget = self.config.max_num_batched_tokens
        batch = Batch()
        scheduled, new_tokens = batch.requests, batch.num_new_tokens
        # (a preemption pops from the end of `running`: iteration then ends before the popped ones)
        for req in running:
            n = req.prompt_tokens + req.num_generated - req.num_computed_tokens
            if n > budget:
                n = budget
            if not append(req, n) and self._preempt_until_fits(req, n, batch.preempted):
                break  # it preempted itself: it was the newest, nothing after it remains
            scheduled.append(req)
            new_tokens.append(n)
            budget -= n
            if budget == 0:
                break

        if not batch.preempted:
            max_seqs = self.config.max_num_seqs
            while waiting and budget > 0 and len(running) < max_seqs:
                req = waiting[0]
                cached = hit(req) if caching else None
                n = req.prompt_tokens + req.num_generated - req.num_computed_tokens
                if cached:
                    n -= len(cached) * self.kv.block_size
                if n > budget:
                    n = budget
                if not allocate(req, n, cached):
                    break
                waiting.popleft()
                running.append(req)
                if req.first_scheduled_time is None:
                    req.first_scheduled_time = self.now
                scheduled.append(req)
                new_tokens.append(n)
                budget -= n
        batch.measure()
        return batch

    def _preempt_until_fits(self, req: Request, num_new_tokens: int, preempted: list[Request]) -> bool:
        """Preempt the newest running requests until `req` gets the blocks for `num_new_tokens`
        more tokens. Returns True when `req` itself had to go."""
        while True:
            victim = self.running.pop()
            self._preempt(victim)
            preempted.append(victim)
            if victim is req:
                return True
            if self.kv.append(req, num_new_tokens):
                return False

    def complete(self, batch: Batch, end: float) -> StepOutcome:
        """The step that computed `batch` ended at `end`: advance progress, emit tokens, finish."""
        if end < self.now:
            raise ValueError(f"time cannot go back: step ends at {end} before now {self.now}")
        outcome = StepOutcome(self.now, end, batch)
        emitted, finished = outcome.emitted, outcome.finished
        for req, n in zip(batch.requests, batch.num_new_tokens, strict=True):
            if req.aborted:
                continue  # aborted by its client while the step ran
            done = req.num_computed_tokens + n
            req.num_computed_tokens = done
            if done < req.prompt_tokens + req.num_generated:
                continue  # a prefill chunk that did not reach the end of the prompt
            generated = req.num_generated + 1
            req.num_generated = generated
            if req.first_token_time is None:
                req.first_token_time = end
            emitted.append(req)
            if generated >= req.output_tokens:
                req.finish_time = end
                self.kv.free(req)
                finished.append(req)
        if finished:
            self.running = [r for r in self.running if r.finish_time is None]
        self.now = end
        return outcome

    def step(self, noise: Callable[[float], float] | None = None) -> StepOutcome | None:
        """Run one step at the profile's mean time (times `noise`), or return None when idle."""
        batch = self.schedule()
        if not batch.requests:
            if batch.preempted:
                raise RuntimeError("a request needs more KV blocks than the cache holds")
            return None
        duration = self.profile.cost.seconds(
            batch.num_tokens, len(batch.requests), batch.kv_tokens_read, batch.prefill_attention_pairs
        )
        if noise is not None:
            duration = noise(duration)
        return self.complete(batch, self.now + duration)

    def run_decodes(self, until: float, noise: Callable[[float], float] | None = None) -> DecodeRun:
        """Complete, in one go, the steps from now on that are pure decodes and end at or before `until`.

        A pure-decode step is one in which every running request decodes one token, no allocation
        fails and no waiting request is admitted: most steps of a busy instance. The result is exactly
        that of calling step(noise) for each of them (the same durations, the same noise draws in the
        same order, bit for bit), at one pass over the running requests per run of steps instead of
        one schedule() and complete() per step. It stops before the first step that is not a pure
        decode, or that would end after `until`; see DecodeRun.next_duration for that case.

        Within a run of k steps nothing changes but progress, so k is safe when:
        - k <= min over running of (output - generated): the step emitting someone's last token ends it;
        - the KV blocks the k steps allocate, sum of blocks_for(computed + k) - blocks held, fit the
          free blocks (demand grows with k, so no step in between fails an allocation either);
        - the head of the waiting queue cannot be admitted in the first step (no sequence slot, no token
          budget or not enough blocks after the decodes took theirs); free blocks only shrink during the
          run, so it cannot be admitted in any later step either.
        """
        run = DecodeRun()
        cost = self.profile.cost
        kv_s = cost.kv
        while self.now <= until:
            k, kv0 = self._safe_decode_steps()
            if k == 0:
                return run
            running = self.running
            n = len(running)
            t = self.now
            ends: list[float] = []
            # StepCost.seconds of a decode step is `base + kv_s * kv`, summed in the same order.
            base = cost.decode_base[n]
            for j in range(k):
                d = base + kv_s * (kv0 + j * n)
                if noise is not None:
                    d = noise(d)
                if t + d > until:
                    run.next_duration = d
                    break
                t += d
                ends.append(t)
            j = len(ends)
            if j:
                run.spans.append(self._apply_decodes(j, ends, finishes=j == k))
                run.steps += j
            if run.next_duration is not None or j < k:
                break
        return run

    def _safe_decode_steps(self) -> tuple[int, int]:
        """(k, KV tokens read by the first step): how many pure-decode steps are safe now; k = 0: none."""
        running = self.running
        n = len(running)
        if n == 0 or n > self.config.max_num_batched_tokens:
            return 0, 0
        k = 1 << 62
        kv0 = n
        for q in running:
            g = q.num_generated
            c = q.num_computed_tokens
            if g == 0 or c != q.prompt_tokens + g - 1:
                return 0, 0  # a prefill (or recompute) is still in progress
            if q.output_tokens - g < k:
                k = q.output_tokens - g
            kv0 += c
        kv = self.kv
        first_demand = kv.demand(running, 1)  # blocks the first step allocates
        free = kv.free_blocks
        budget = self.config.max_num_batched_tokens - n
        if self.waiting and n < self.config.max_num_seqs and budget > 0:
            head = self.waiting[0]
            cached = len(kv.hit(head))
            m = min(head.num_missing_tokens - cached * kv.block_size, budget)
            # with a cache hit, the fewest blocks it could take (its hit blocks may be free ones, or be
            # evicted by the decodes): a hit only shrinks while nothing is prefilled, so this only grows
            need = blocks_for(m, kv.block_size) if cached else kv.blocks_needed(head, m)
            if need <= free - first_demand:
                return 0, 0  # it may be admitted in the first step
        # A request holds at least blocks_for(computed) blocks, so k steps allocate at most
        # n * blocks_for(k) of them: only when that does not fit is the exact demand needed.
        if n * blocks_for(k, kv.block_size) > free and kv.demand(running, k) > free:
            lo, hi = 0, k  # the largest k whose demand fits: demand(lo) fits, demand(hi) does not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if kv.demand(running, mid) <= free:
                    lo = mid
                else:
                    hi = mid
            k = lo
        return k, kv0

    def _apply_decodes(self, j: int, ends: list[float], finishes: bool) -> DecodeSpan:
        """The effect of j completed decode steps ending at `ends`, as complete() would leave it."""
        kv = self.kv
        running = self.running
        kv.append_all(running, j)  # fits: _safe_decode_steps checked the demand of all j steps
        for q in running:
            q.num_computed_tokens += j
            q.num_generated += j
        end = ends[-1]
        self.now = end
        span = DecodeSpan(list(running), ends)
        if finishes:
            span.finished = [q for q in running if q.num_generated >= q.output_tokens]
            for q in span.finished:
                q.finish_time = end
                kv.free(q)
            self.running = [q for q in running if q.finish_time is None]
        return span

    def advance_to(self, t: float) -> None:
        """Idle until `t` (no work was possible in between)."""
        self.now = max(self.now, t)

    def _preempt(self, req: Request) -> None:
        self.kv.free(req)
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(req)

    # -- snapshots -----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return Snapshot(
            config=self.config,
            now=self.now,
            running=_states_of(self.running),
            waiting=_states_of(self.waiting),
            free_blocks=self.kv.free_blocks,
            num_preemptions=self.num_preemptions,
            profile=self.profile.name,
            free_cached=None if self.kv.prefix is None else self.kv.prefix.free_queue(),
        )

    @classmethod
    def from_snapshot(
        cls,
        snapshot: Snapshot,
        profile: Profile,
        output_tokens_of: Callable[[RequestState], int] | None = None,
    ) -> Replica:
        """Rebuild a replica. `output_tokens_of` gives each request's total output length
        (default: its expected length, and at least one more token than it already has)."""
        replica = cls(snapshot.config, profile)
        replica.now = snapshot.now
        replica.num_preemptions = snapshot.num_preemptions
        length = output_tokens_of or _expected_or_next
        bs = snapshot.config.block_size
        replica.running = [_request_of(s, length(s), bs) for s in snapshot.running]
        replica.waiting = deque(_request_of(s, length(s), bs) for s in snapshot.waiting)
        if isinstance(replica.kv, PrefixKVCache):
            everyone = [*replica.running, *replica.waiting]
            replica.kv.adopt_all(everyone, snapshot.free_cached or [])
            return replica
        for req in _chain(replica.running, replica.waiting):
            replica.kv.adopt(req)
        return replica


def _states_of(requests: Iterable[Request]) -> list[RequestState]:
    # positional, the cheaper call: (id, arrival_time, prompt_tokens, computed_tokens, output_tokens,
    # expected_output_tokens); a snapshot is taken at every router refresh
    return [
        RequestState(
            r.id,
            r.arrival_time,
            r.prompt_tokens,
            r.num_computed_tokens,
            r.num_generated,
            r.expected_output_tokens,
            r.prefix_hashes,
        )
        for r in requests
    ]


def _request_of(s: RequestState, output_tokens: int, block_size: int) -> Request:
    return Request(
        id=s.id,
        prompt_tokens=s.prompt_tokens,
        output_tokens=max(output_tokens, s.output_tokens + 1),
        arrival_time=s.arrival_time,
        expected_output_tokens=s.expected_output_tokens,
        num_computed_tokens=s.computed_tokens,
        num_generated=s.output_tokens,
        prefix_hashes=prompt_hashes(s.prefix_hashes, s.prompt_tokens, block_size),
    )


def _expected_or_next(s: RequestState) -> int:
    return s.expected_output_tokens if s.expected_output_tokens is not None else s.output_tokens + 1


def _chain(*its: Iterable[Request]) -> Iterable[Request]:
    for it in its:
        yield from it
