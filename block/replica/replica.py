"""A vLLM-style instance in virtual time: continuous batching over a paged KV cache.

Pure and deterministic: no clocks, no I/O, no randomness. The engine emulator drives it in real
time, the predictor copies it to ask "what if", and the cluster simulator runs many of them.

A step is two halves so that a real-time driver can sleep in between:

    batch = replica.schedule()                 # form the batch at replica.now
    outcome = replica.complete(batch, end)     # the step ran until `end`: apply its results

`step()` does both with the profile's mean step time (plus optional noise).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from block.profiles.profile import Profile
from block.replica.batch import Batch
from block.replica.config import ReplicaConfig
from block.replica.kv_cache import KVCache, blocks_for
from block.replica.request import Request
from block.replica.snapshot import RequestState, Snapshot


@dataclass(slots=True)
class StepOutcome:
    start: float
    end: float
    batch: Batch
    emitted: list[Request] = field(default_factory=list)  # requests that produced a token this step
    finished: list[Request] = field(default_factory=list)


class Replica:
    def __init__(self, config: ReplicaConfig, profile: Profile) -> None:
        self.config = config
        self.profile = profile
        self.kv = KVCache(config.num_gpu_blocks, config.block_size)
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
        if blocks_for(request.prompt_tokens + request.output_tokens, self.config.block_size) > self.kv.num_blocks:
            raise ValueError(f"request {request.id} needs more KV blocks than the cache holds")
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
        while budget, sequence slots and blocks last.
        """
        cfg = self.config
        batch = Batch()
        budget = cfg.max_num_batched_tokens
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.num_missing_tokens, budget)
            preempted_itself = False
            while not self.kv.try_allocate(req, n):
                victim = self.running.pop()
                self._preempt(victim)
                batch.preempted.append(victim)
                if victim is req:
                    preempted_itself = True  # it was the newest: nothing after it remains
                    break
            if preempted_itself:
                break
            batch.add(req, n)
            budget -= n
            i += 1

        if batch.preempted:
            return batch
        while self.waiting and budget > 0 and len(self.running) < cfg.max_num_seqs:
            req = self.waiting[0]
            n = min(req.num_missing_tokens, budget)
            if not self.kv.try_allocate(req, n):
                break
            self.waiting.popleft()
            self.running.append(req)
            if req.first_scheduled_time is None:
                req.first_scheduled_time = self.now
            batch.add(req, n)
            budget -= n
        return batch

    def complete(self, batch: Batch, end: float) -> StepOutcome:
        """The step that computed `batch` ended at `end`: advance progress, emit tokens, finish."""
        if end < self.now:
            raise ValueError(f"time cannot go back: step ends at {end} before now {self.now}")
        outcome = StepOutcome(self.now, end, batch)
        for req, n in zip(batch.requests, batch.num_new_tokens, strict=True):
            if req.aborted:
                continue  # aborted by its client while the step ran
            req.num_computed_tokens += n
            if req.num_computed_tokens < req.num_tokens:
                continue  # a prefill chunk that did not reach the end of the prompt
            req.num_generated += 1
            if req.first_token_time is None:
                req.first_token_time = end
            outcome.emitted.append(req)
            if req.num_generated >= req.output_tokens:
                req.finish_time = end
                self.kv.free(req)
                outcome.finished.append(req)
        if outcome.finished:
            self.running = [r for r in self.running if not r.is_finished]
        self.now = end
        return outcome

    def step(self, noise: Callable[[float], float] | None = None) -> StepOutcome | None:
        """Run one step at the profile's mean time (times `noise`), or return None when idle."""
        batch = self.schedule()
        if not batch.requests:
            if batch.preempted:
                raise RuntimeError("a request needs more KV blocks than the cache holds")
            return None
        duration = self.profile.step_time(batch.shape())
        if noise is not None:
            duration = noise(duration)
        return self.complete(batch, self.now + duration)

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
            running=[_state_of(r) for r in self.running],
            waiting=[_state_of(r) for r in self.waiting],
            free_blocks=self.kv.free_blocks,
            num_preemptions=self.num_preemptions,
            profile=self.profile.name,
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
        replica.running = [_request_of(s, length(s)) for s in snapshot.running]
        replica.waiting = deque(_request_of(s, length(s)) for s in snapshot.waiting)
        for req in _chain(replica.running, replica.waiting):
            replica.kv.adopt(req)
        return replica


def _state_of(r: Request) -> RequestState:
    return RequestState(
        id=r.id,
        arrival_time=r.arrival_time,
        prompt_tokens=r.prompt_tokens,
        computed_tokens=r.num_computed_tokens,
        output_tokens=r.num_generated,
        expected_output_tokens=r.expected_output_tokens,
    )


def _request_of(s: RequestState, output_tokens: int) -> Request:
    return Request(
        id=s.id,
        prompt_tokens=s.prompt_tokens,
        output_tokens=max(output_tokens, s.output_tokens + 1),
        arrival_time=s.arrival_time,
        expected_output_tokens=s.expected_output_tokens,
        num_computed_tokens=s.computed_tokens,
        num_generated=s.output_tokens,
    )


def _expected_or_next(s: RequestState) -> int:
    return s.expected_output_tokens if s.expected_output_tokens is not None else s.output_tokens + 1


def _chain(*its: Iterable[Request]) -> Iterable[Request]:
    for it in its:
        yield from it
