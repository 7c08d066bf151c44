"""A lean replica for forecasting: `Replica`'s semantics exactly, with skip-ahead.

The reference model steps token by token and allocates a `Batch` per step. A forecast only needs
the times at which requests get scheduled, emit their first token and finish, so this copy keeps
plain slotted records and follows the same rules, in the same order:

- running requests in age order, each taking min(missing, budget) tokens;
- a request that cannot get its KV blocks preempts the newest running request (recompute), until
  it fits or it was itself the newest;
- waiting requests are admitted FCFS only when nothing was preempted in the step, while budget,
  sequence slots and blocks last.

The speed comes from the *decode group*: the longest prefix of `running` whose requests all decode
(one missing token, at least one generated). While the batch shape does not change, every member
gains one token per step, so members are stored relative to a shared clock `T` (the number of
group steps so far) and a whole step costs O(1):

- KV tokens read = sum of (computed + 1) = sum_base + n * T + n;
- the members that need a new block at step T are those whose computed count is a multiple of the
  block size, i.e. whose residue (-base) mod block_size equals T mod block_size: a histogram;
- the next member to finish is the top of a heap of absolute finish clocks.

Skip-ahead: when the group is all of `running` and no waiting request can be admitted, the next
event is the earlier of the next completion and the first step whose cumulative block demand
exceeds the free blocks (found in O(block_size) from the histogram). Every step up to it (the
completing step included: it has the same shape, the request leaves after it) is a decode step
whose time is linear in the KV tokens read, so k of them take the closed form
`StepCost.decodes(n, k, K0)` (K0: the KV tokens read by the first of them).

Prefix caching (`enable_prefix`, when the state has any prefix hashes): the same block pool as
PrefixKVCache (prefix_cache.PrefixCache), driven at the same points: a cache hit at admission,
registration when a prefill chunk is scheduled, release at finish and preemption, and `take` for every
block allocated, in bulk after a skipped stretch (nothing else touches the free queue within one). A
decode never fills a prompt block, so the decode group needs nothing more.

Everything else (prefill chunks, admissions, preemptions, completions) runs through the general
step, which is exact for any state. Every step is timed by the profile's `StepCost` (`seconds`, or
`decodes` for a stretch), and the block arithmetic is KVCache's (`blocks_for(computed + n) - held`),
applied here to many requests at once; tests/predictor/test_skip_ahead.py keeps this file equal to
`Replica` stepped token by token.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable
from itertools import accumulate
from typing import NamedTuple

from block.profiles.profile import Profile
from block.replica.config import ReplicaConfig
from block.replica.kv_cache import blocks_for
from block.replica.prefix_cache import CachedBlock, PrefixCache


class SimRequest:
    """One request. While `grouped`, `c` and `g` are relative to the group clock (actual = value + T)."""

    __slots__ = (
        "key",
        "prompt",
        "out",
        "c",
        "g",
        "blocks",
        "grouped",
        "tag",
        "first_sched",
        "first_token",
        "finish",
        "watched",
        "preemptions",
        "hashes",
        "held",
        "implicit",
    )

    def __init__(
        self,
        key: str,
        prompt: int,
        out: int,
        c: int = 0,
        g: int = 0,
        watched: bool = False,
        blocks: int = 0,
        hashes: tuple[int, ...] = (),
    ) -> None:
        self.key = key
        self.prompt = prompt
        self.out = out  # total output tokens it will generate
        self.c = c  # computed tokens (KV in cache)
        self.g = g  # generated tokens
        self.blocks = blocks  # KV blocks held (only maintained while not grouped)
        self.grouped = False
        self.tag = -1  # identifies its live heap entry while grouped
        self.first_sched: float | None = None
        self.first_token: float | None = None
        self.finish: float | None = None
        self.watched = watched
        self.preemptions = 0
        self.hashes = hashes  # prefix hashes of its prompt's full blocks (prefix caching)
        self.held: list[CachedBlock] | tuple[CachedBlock, ...] = ()  # records of its leading blocks
        self.implicit = 0  # its private cached blocks after them (see block/predictor/prefix_start.py)


class Step(NamedTuple):
    """One general step as a timeline records it (FastReplica.record)."""

    start: float
    end: float
    num_tokens: int
    num_seqs: int
    kv_read: int
    pairs: int
    free: int  # free KV blocks after the step's allocations and admissions (before its completions)
    preempted: bool
    running: int  # requests running after its admissions
    queue_empty: bool  # nothing left waiting after its admissions


class Stretch(NamedTuple):
    """A skipped run of `steps` decode steps of `num_seqs` sequences (FastReplica.skip_ahead), the first
    reading `first_kv` KV tokens."""

    start: float
    steps: int
    num_seqs: int
    first_kv: int
    free: int  # free KV blocks before it
    cycle: tuple[int, ...]  # blocks its first r < block_size steps take, r = 0 .. block_size - 1
    queue_empty: bool  # nothing waits (else the head of the queue cannot be admitted in it)

    def free_after(self, j: int) -> int:
        """Free KV blocks after the demand of its step j (from 0): each block_size steps take a block
        from every sequence, the steps in between as the cycle says."""
        q, r = divmod(j + 1, len(self.cycle))
        return self.free - q * self.num_seqs - self.cycle[r]


MAX_EVENTS = 1_000_000  # general steps in one run (run_until_watched_done's default, step_while's bound)


class SimulationStuck(RuntimeError):
    """No step can make progress (a request cannot fit the cache even alone)."""


class DeadlineExceeded(RuntimeError):
    """The caller's time for this forecast ran out before the watched requests finished."""


class FastReplica:
    """A replica built for one forecast: load a snapshot's requests, add the candidate, run until
    the watched requests finish (block.predictor.forecast drives it)."""

    def __init__(self, config: ReplicaConfig, profile: Profile) -> None:
        self.max_seqs = config.max_num_seqs
        self.max_tokens = config.max_num_batched_tokens
        self.bs = config.block_size
        self.num_gpu_blocks = self.free = config.num_gpu_blocks
        self.profile = profile
        self.cost = profile.cost
        self.cost.reserve(config.max_num_batched_tokens)  # decodes() and seconds() index its tables
        self.running: list[SimRequest] = []
        self.waiting: deque[SimRequest] = deque()
        self.now = 0.0
        # decode group: running[:nd] all decode; members stored relative to clock T
        self.T = 0
        self.nd = 0
        self.sum_base = 0  # sum of members' relative computed counts
        # due[r]: members needing a new block at steps T with T % bs == r; stored twice over
        # (due[r] == due[r + bs]) so that a run of residues from T % bs is one slice
        self.due = [0] * (2 * self.bs)
        self._heap: list[tuple[int, int, SimRequest]] = []  # (finish clock, tag, request)
        self._tags = 0
        self.watched_left = 0
        # set when the snapshot caught a step in flight: the next step ends then, whatever its shape
        self.first_step_end: float | None = None
        self.steps = 0  # engine steps simulated (skipped ones included)
        self.events = 0  # general steps executed one by one
        self.num_preemptions = 0
        self.prefix: PrefixCache | None = None  # prefix caching: see enable_prefix
        self.wanted: frozenset[int] = frozenset()
        self.wanted_too: frozenset[int] = frozenset()
        # the steps taken, when a timeline is being recorded (block/predictor/timeline.py): a general
        # step as Step, a skipped decode stretch as Stretch
        self.record: list[Step | Stretch] | None = None

    # -- building ------------------------------------------------------------------------------

    def add_running(self, r: SimRequest) -> None:
        """Adopt a running request with its cache filled (as KVCache.adopt). Call `regroup` after."""
        r.blocks = blocks_for(r.c, self.bs)
        self.free -= r.blocks
        self.running.append(r)
        self.watched_left += r.watched

    def add_waiting(self, r: SimRequest) -> None:
        r.blocks = blocks_for(r.c, self.bs)
        self.free -= r.blocks
        self.waiting.append(r)
        self.watched_left += r.watched

    def load(self, running: list, waiting: list, watch_all: bool = False) -> list[SimRequest]:
        """Adopt planned requests (id, prompt, output, computed, generated) as a snapshot has them,
        into a new FastReplica; returns them in order, running first. Same result as
        add_running/add_waiting + regroup."""
        # One pass, everything local, blocks_for inlined: this runs for every request of every forecast.
        bs, free, run, wait = self.bs, self.free, self.running, self.waiting
        # the decode group at T = 0 (bases are the actual counts): the decoding prefix of `running`
        nd, sum_base, due, heap = 0, 0, self.due, self._heap
        grouping = True
        for key, prompt, out, c, g in running:
            r = SimRequest(key, prompt, out, c, g, watch_all, -(-c // bs))
            free -= r.blocks
            run.append(r)
            if grouping and g > 0 and prompt + g - c == 1:
                r.grouped = True
                nd += 1
                r.tag = nd
                sum_base += c
                x = -c % bs
                due[x] += 1
                due[x + bs] += 1
                heap.append((out - g, nd, r))
            else:
                grouping = False
        for key, prompt, out, c, g in waiting:
            r = SimRequest(key, prompt, out, c, g, watch_all, -(-c // bs))
            free -= r.blocks
            wait.append(r)
        self.free = free
        heapq.heapify(heap)
        self.nd, self.sum_base, self._tags = nd, sum_base, nd
        out_reqs = run + list(wait)
        if watch_all:
            self.watched_left += len(out_reqs)
        return out_reqs

    def plans(self) -> tuple[list[tuple[str, int, int, int, int]], list[tuple[str, int, int, int, int]]]:
        """Its requests as `load` takes them, (id, prompt, output, computed, generated), running then
        waiting: between steps, loading them gives this state back (prefix caching aside)."""
        T = self.T
        running = [
            (r.key, r.prompt, r.out, r.c + T, r.g + T) if r.grouped else (r.key, r.prompt, r.out, r.c, r.g)
            for r in self.running
        ]
        return running, [(r.key, r.prompt, r.out, r.c, r.g) for r in self.waiting]

    def enable_prefix(
        self,
        cache: PrefixCache,
        reqs: list[SimRequest],
        hashes: list[tuple[int, ...]],
        held: list[tuple[CachedBlock, ...]],
        implicit: list[int],
        shared_blocks: int,
        wanted: frozenset[int],
        candidate: frozenset[int] = frozenset(),
    ) -> None:
        """Model the prefix cache, after `load` (block/predictor/prefix_start.py prepares it): each
        request's prompt hashes, the records of its leading cached blocks and the number of private
        ones after them; `shared_blocks`: blocks `load` counted once per holder that are one block;
        `wanted` and `candidate`: the hashes someone may look up (any other block is private)."""
        self.prefix = cache
        self.free += shared_blocks
        self.wanted, self.wanted_too = wanted, candidate
        for r, h, mine, n in zip(reqs, hashes, held, implicit, strict=True):
            r.hashes, r.held, r.implicit = h, mine, n

    def _granted(self, r: SimRequest, need: int, done: int) -> None:
        """The prefix pool's side of a step's allocation: `need` new blocks leave the free pool, and the
        prompt blocks `done` computed tokens fill get their identity."""
        if need > 0:
            self.prefix.take(need)  # type: ignore[union-attr]
        if r.hashes:
            self._register(r, done)

    def _register(self, r: SimRequest, done: int) -> None:
        """As PrefixKVCache._register: the prompt blocks `done` computed tokens fill get their
        identity; a private one (and every one after it: hashes are chained) is only counted."""
        hashes, held = r.hashes, r.held
        full = min(len(hashes), done // self.bs)
        i = len(held) + r.implicit
        if i >= full:
            return
        if not r.implicit:
            wanted, too = self.wanted, self.wanted_too
            register = self.prefix.register  # type: ignore[union-attr]
            while i < full and (hashes[i] in wanted or hashes[i] in too):
                if not isinstance(held, list):
                    held = r.held = list(held)
                held.append(register(hashes[i]))
                i += 1
        r.implicit += full - i

    def _release(self, r: SimRequest, again: bool = False) -> int:
        """Free its blocks into the prefix cache (PrefixKVCache.free); returns the blocks freed.
        `again`: it was preempted and will look its own prompt up: its private blocks get records."""
        held = r.held
        if again and r.implicit:
            k = len(held)
            register = self.prefix.register  # type: ignore[union-attr]
            held = (*held, *(register(h) for h in r.hashes[k : k + r.implicit]))
        freed = self.prefix.release(held, r.blocks - len(held))  # type: ignore[union-attr]
        r.held = ()
        r.implicit = 0
        return freed

    def regroup(self) -> None:
        """Extend the decode group over the decoding requests right after it."""
        running, nd = self.running, self.nd
        while nd < len(running):
            r = running[nd]
            if r.g <= 0 or r.prompt + r.g - r.c != 1:
                break
            self._join(r)
            nd += 1

    def _join(self, r: SimRequest) -> None:
        T = self.T
        r.c -= T
        r.g -= T
        r.grouped = True
        self.nd += 1
        self.sum_base += r.c
        x = -r.c % self.bs
        self.due[x] += 1
        self.due[x + self.bs] += 1
        self._tags += 1
        r.tag = self._tags
        heapq.heappush(self._heap, (r.out - r.g, self._tags, r))

    def _leave(self, r: SimRequest) -> None:
        T = self.T
        self.nd -= 1
        self.sum_base -= r.c
        x = -r.c % self.bs
        self.due[x] -= 1
        self.due[x + self.bs] -= 1
        r.c += T
        r.g += T
        r.grouped = False
        r.tag = -1
        r.blocks = -(-r.c // self.bs)  # blocks_for(c), inlined: the invariant of a scheduled request

    def _ungroup_all(self) -> None:
        for r in self.running[: self.nd]:
            self._leave(r)
        self._heap.clear()

    # -- running -------------------------------------------------------------------------------

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def run_until_watched_done(
        self, max_events: int = MAX_EVENTS, deadline: float | None = None, until: float | None = None
    ) -> None:
        """`deadline`: a time.perf_counter() value after which DeadlineExceeded is raised (checked
        between events, each a few microseconds), so one deep queue cannot hold a caller up. `until`:
        stop once virtual time reaches it, watched requests finished or not (a skipped stretch of
        decodes may end past it)."""
        limit = float("inf") if until is None else until
        drain_group, skip_ahead, step = self._drain_group, self.skip_ahead, self.step
        while self.watched_left > 0 and self.now < limit:
            if deadline is not None and time.perf_counter() > deadline:
                raise DeadlineExceeded(f"forecast unfinished after {self.events} events")
            if drain_group() or skip_ahead():
                continue
            if not step():
                raise SimulationStuck("idle with watched requests unfinished")
            if self.events > max_events:
                raise SimulationStuck("too many events")

    def step_while(
        self, busy: Callable[[FastReplica], bool], deadline: float | None = None, what: str = "run"
    ) -> None:
        """Step (skipping decode stretches) while `busy(self)`: only `skip_ahead` and `step`, as a forecast
        runs while its candidate waits (`_drain_group` needs an empty queue). Raises DeadlineExceeded past
        `deadline` (a time.perf_counter() value), SimulationStuck when idle with requests queued or past
        MAX_EVENTS; `what` names the run in those messages."""
        skip_ahead, step = self.skip_ahead, self.step
        while busy(self):
            if deadline is not None and time.perf_counter() > deadline:
                raise DeadlineExceeded(f"{what} unfinished after {self.events} events")
            if skip_ahead():
                continue
            if not step():
                raise SimulationStuck("idle with requests queued")
            if self.events > MAX_EVENTS:
                raise SimulationStuck("too many events")

    def advance_until(self, t: float) -> None:
        """Run every step that starts before `t` (a request arriving at `t` joins the step after)."""
        while (self.running or self.waiting) and self.now < t:
            if self.skip_ahead(t):
                continue
            if not self.step():
                break
        if self.now < t:
            self.now = t

    def skip_ahead(self, before: float | None = None, arriving: int = 0) -> int:
        """Advance over decode-only steps that do not change the batch shape, up to and including
        the next completion; returns how many steps. With `before`, only steps starting before
        that time are taken. `arriving`: the prompt tokens of a new request that joins the queue at
        `before`; when it could not be admitted during the stretch anyway, the stretch runs past
        `before` (the caller queues it afterwards)."""
        nd = self.nd
        running = self.running
        if nd == 0 or len(running) != nd or nd > self.max_tokens or self.first_step_end is not None:
            return 0
        bs, T, free, due = self.bs, self.T, self.free, self.due
        prefix = self.prefix
        if self.waiting and nd < self.max_seqs and nd < self.max_tokens:
            head = self.waiting[0]
            n = head.prompt + head.g - head.c
            hit = 0
            if prefix is not None and head.c == 0 and head.hashes:
                hit = len(prefix.lookup(head.hashes, (n - 1) // bs))
                n -= hit * bs
            n = min(n, self.max_tokens - nd)
            # KVCache.blocks_needed; with a hit, the fewest it could take (as Replica._safe_decode_steps)
            need = -(-n // bs) if hit else -(-(head.c + n) // bs) - head.blocks
            if need <= free - due[T % bs]:
                return 0  # it may be admitted in the next step
        # A stretch keeps the batch's size and only uses up blocks: a newcomer behind a stuck head,
        # or without a sequence slot, budget or blocks now, stays out until the stretch ends.
        if arriving and (
            self.waiting
            or nd >= self.max_seqs
            or nd >= self.max_tokens
            or -(-min(arriving, self.max_tokens - nd) // bs) > free  # blocks_for, inlined
        ):
            before = None
        heap = self._heap
        while not (heap[0][2].grouped and heap[0][2].tag == heap[0][1]):
            heapq.heappop(heap)  # stale: preempted or already left
        k = heap[0][0] - T  # steps until (and including) the next completion
        # the first step whose cumulative block demand exceeds the free blocks ends the stretch
        cycles, rest = divmod(free, nd)
        safe = cycles * bs
        s0 = T % bs
        if safe < k:
            for d in due[s0 : s0 + bs]:
                rest -= d
                if rest < 0:
                    break
                safe += 1
            if safe < k:
                k = safe
        if k <= 0:
            return 0
        cost = self.cost
        k0 = self.sum_base + nd * T + nd  # KV tokens read by the first of the k steps
        if before is not None:
            k = min(k, cost.decodes_starting_before(before - self.now, nd, k, k0))
            if k <= 0:
                return 0
        q, r = divmod(k, bs)
        self.free = free - q * nd - sum(due[s0 : s0 + r])
        if prefix is not None:
            prefix.take(free - self.free)
        if self.record is not None:
            cycle = tuple(accumulate(due[s0 : s0 + bs - 1], initial=0))
            self.record.append(Stretch(self.now, k, nd, k0, free, cycle, not self.waiting))
        self.now += cost.decodes(nd, k, k0)
        self.T = T = T + k
        self.steps += k
        if heap[0][0] <= T:  # the stretch ended with completions
            self._complete_group(self.now)
        return k

    def _drain_group(self) -> int:
        """skip_ahead, back to back, while the decode group is the whole batch and nothing waits: then
        each stretch ends with completions that only shrink the group, so the checks skip_ahead makes
        per call hold throughout. Stops when every watched request finished, or before a stretch in
        which an allocation would fail (the general path takes over there). Returns the steps taken."""
        nd, running = self.nd, self.running
        if nd == 0 or len(running) != nd or nd > self.max_tokens:
            return 0
        if self.waiting or self.first_step_end is not None:
            return 0  # an admission, or the step in flight, may change the batch
        bs, T, free, due, heap = self.bs, self.T, self.free, self.due, self._heap
        # StepCost.decodes, inlined below: a simulated forecast runs ~7 stretches here and the call
        # cost 2% of `block simulate bench`. test_skip_ahead keeps the two equal.
        base, kv_s = self.cost.decode_base, self.cost.kv
        sum_base, now, watched_left, T0 = self.sum_base, self.now, self.watched_left, T
        pop = heapq.heappop
        prefix = self.prefix
        while True:
            top = heap[0]
            while not (top[2].grouped and top[2].tag == top[1]):
                pop(heap)  # stale: preempted or already left
                top = heap[0]
            k = top[0] - T  # steps until (and including) the next completion
            q, r = divmod(k, bs)
            s0 = T % bs
            demand = q * nd + sum(due[s0 : s0 + r])
            if demand > free:
                break  # an allocation fails within the stretch
            free -= demand
            if prefix is not None:
                prefix.take(demand)
            now += k * base[nd] + kv_s * (k * (sum_base + nd * T + nd) + nd * (k * (k - 1) // 2))
            T += k
            while heap and heap[0][0] <= T:  # as _complete_group: _leave, then _finish
                _, tag, m = pop(heap)
                if not (m.grouped and m.tag == tag):
                    continue
                c = m.c
                nd -= 1
                sum_base -= c
                x = -c % bs
                due[x] -= 1
                due[x + bs] -= 1
                m.c = c = c + T
                m.g += T
                m.grouped = False
                m.tag = -1
                if prefix is None:
                    free += -(-c // bs)  # its blocks_for(c), inlined
                else:
                    m.blocks = -(-c // bs)
                    free += self._release(m)
                m.blocks = 0
                m.finish = now
                running.remove(m)
                if m.watched:
                    watched_left -= 1
            if watched_left <= 0 or nd == 0:
                break
        self.nd, self.sum_base, self.T, self.free, self.now = nd, sum_base, T, free, now
        self.watched_left = watched_left
        self.steps += T - T0
        return T - T0

    def step(self) -> bool:
        """One engine step (Replica.schedule + Replica.complete). False when idle."""
        self.events += 1
        if self.nd > self.max_tokens:
            self._ungroup_all()  # the budget ends inside the group: take the exact slow path
        bs, T = self.bs, self.T
        running, waiting = self.running, self.waiting
        free = self.free
        preempted = False
        stop = False

        # decode group: every member takes one token
        prefix = self.prefix
        d = self.due[T % bs]
        if d <= free:
            free -= d
            if prefix is not None and d:
                prefix.take(d)
        else:  # someone cannot grow: walk the members in order, preempting from the end
            i = 0
            while i < self.nd:
                r = running[i]
                if (r.c + T) % bs == 0:
                    if free < 1:
                        free, stop = self._preempt_until_fits(r, 1, free)
                        preempted = True
                        if stop:
                            break
                    free -= 1
                    if prefix is not None:
                        prefix.take(1)
                i += 1
        nd = self.nd
        budget = self.max_tokens - nd
        sched: list[tuple[SimRequest, int]] = []

        # requests after the group: prefill chunks (and decodes that follow one)
        if not stop:
            p = nd
            while p < len(running) and budget > 0:
                r = running[p]
                n = min(r.prompt + r.g - r.c, budget)
                need = -(-(r.c + n) // bs) - r.blocks  # KVCache.blocks_needed, inlined
                if need > free:
                    free, stop = self._preempt_until_fits(r, need, free)
                    preempted = True
                    if stop:
                        break
                free -= need
                r.blocks += need
                if prefix is not None:
                    self._granted(r, need, r.c + n)
                sched.append((r, n))
                budget -= n
                p += 1

        # FCFS admission, only in a step without preemption
        if not preempted:
            max_seqs = self.max_seqs
            while waiting and budget > 0 and len(running) < max_seqs:
                r = waiting[0]
                n = r.prompt + r.g - r.c
                hit = None
                if prefix is not None and r.c == 0 and r.hashes:  # PrefixKVCache.hit and allocate
                    hit = prefix.lookup(r.hashes, (n - 1) // bs)
                if hit:
                    h = len(hit)
                    n = min(n - h * bs, budget)
                    need = -(-(h * bs + n) // bs) - h - r.blocks
                    if need > free - sum(1 for b in hit if b.ref == 0):
                        break
                    free -= prefix.touch(hit)  # type: ignore[union-attr]
                    r.held = hit
                    r.blocks += h
                    r.c = h * bs
                else:
                    if n > budget:
                        n = budget
                    need = -(-(r.c + n) // bs) - r.blocks  # KVCache.blocks_needed, inlined
                    if need > free:
                        break
                waiting.popleft()
                running.append(r)
                if r.first_sched is None:
                    r.first_sched = self.now
                free -= need
                r.blocks += need
                if prefix is not None:
                    self._granted(r, need, r.c + n)
                sched.append((r, n))
                budget -= n
        self.free = free
        record = self.record
        if record is not None:
            after_admission = (free, preempted, len(running), not waiting)

        num_seqs = nd + len(sched)
        if num_seqs == 0:
            if preempted:
                raise SimulationStuck("a request needs more KV blocks than the cache holds")
            return False
        # the batch's shape (see Batch): the group's decodes, then the others' chunks
        num_tokens, kv_read, pairs = nd, self.sum_base + nd * T + nd, 0
        for r, n in sched:
            num_tokens += n
            if n == 1 and r.g > 0:
                kv_read += r.c + 1
            else:
                pairs += n * r.c + n * (n + 1) // 2

        end = self.now + self.cost.seconds(num_tokens, num_seqs, kv_read, pairs)
        if self.first_step_end is not None:
            end, self.first_step_end = max(self.now, self.first_step_end), None
        self.steps += 1
        if record is not None:
            record.append(Step(self.now, end, num_tokens, num_seqs, kv_read, pairs, *after_admission))

        # complete: the group gains a token each; the others advance by their chunk
        finished = joinable = False
        self.T = T = T + 1
        for r, n in sched:
            r.c += n
            if r.c < r.prompt + r.g:
                continue
            r.g += 1
            if r.first_token is None:
                r.first_token = end
            if r.g >= r.out:
                self._finish(r, end)
                finished = True
            else:
                joinable = True  # it decodes from now on: the group may take it
        if finished:
            self.running = running = [r for r in running if r.finish is None]
        heap = self._heap
        if heap and heap[0][0] <= T:
            self._complete_group(end)
        self.now = end
        if joinable and len(self.running) > self.nd:
            self.regroup()
        return True

    def _complete_group(self, end: float) -> None:
        """Finish the group members whose last token came out in the step that ended at `end`."""
        heap, T, running = self._heap, self.T, self.running
        while heap and heap[0][0] <= T:
            _, tag, r = heapq.heappop(heap)
            if r.grouped and r.tag == tag:
                self._leave(r)
                self._finish(r, end)
                running.remove(r)

    def _finish(self, r: SimRequest, end: float) -> None:
        r.finish = end
        self.free += r.blocks if self.prefix is None else self._release(r)
        r.blocks = 0
        if r.watched:
            self.watched_left -= 1

    def _preempt_until_fits(self, r: SimRequest, need: int, free: int) -> tuple[int, bool]:
        """As Replica._preempt_until_fits: preempt the newest running requests until `need` blocks
        are free for `r` (`free`: the free blocks so far). Returns the free blocks, and True when
        `r` itself had to go."""
        running = self.running
        while need > free:
            v = running.pop()
            free += self._preempt(v)
            if v is r:
                return free, True
        return free, False

    def _preempt(self, v: SimRequest) -> int:
        """Recompute preemption: drop its cache and put it first in line. Returns blocks freed."""
        if v.grouped:
            self._leave(v)
        freed = v.blocks if self.prefix is None else self._release(v, again=True)
        v.blocks = 0
        v.c = 0
        v.preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(v)
        return freed
