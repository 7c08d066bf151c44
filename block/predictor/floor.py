"""A floor under a forecast: a lower bound on the candidate's end-to-end latency, without the replay.

A decision over many instances only needs the forecast of those that could win. `EndToEndFloor` is
prepared once per instance state (the Forecaster keeps it) and answers, in O(log n) per candidate, a
time the forecast's `e2e_s` cannot be below; the fan-out (block/fleet/forecasts.py) forecasts in
ascending floor order and stops when the best forecast so far beats the next floor.

It must be a true bound, or the choice changes. It sums what the replay must at least spend, from
facts of the scheduler (fast_replica.py, the same rules as Replica):

- order: running ++ waiting keeps its order (admission appends to running, preemption pops its end
  and puts it first in line), and the candidate joins at the end. In a step where the candidate gets
  tokens, every request before it got all it was missing. So every prefill ahead is done by the end
  of the candidate's own, and every unfinished request ahead takes part in each candidate step;
- slots: the candidate is admitted with fewer than `max_num_seqs` running, all of them ahead: the
  requests ahead beyond `max_num_seqs - 1` must finish first, each after at least as many steps as it
  has tokens left to generate;
- step time (StepCost.seconds): overhead + linear(tokens) per step, at least the fewest-token rate
  `token_s` per token counted and `step_s` per step; per_seq per participant; a decode reads its
  context (kv); a prefill chunk its causal pairs;
- preemption can only add work, except that a preempted request recomputes its context with pairs
  instead of reading it: a token it makes costs at least its context times the smaller of the KV
  rate and pair_s * (context + 1) / 2 (the whole recompute is charged to the token after it). The
  candidate's reads count at the KV rate when no preemption is possible (everything ahead and the
  candidate fit the cache at their full length).

For a fleet the floor has a cheaper form, `ready_s(n) + StepFloor.own_s(request) - elapsed` for any
candidate of at least n steps of its own: a part that depends only on the instance's state (the step in
flight, the prefill work ahead or the steps until a slot frees, the others' decodes during n steps) and
one that depends only on the candidate and the profile (its own prefill and decodes, at the cheapest
rates). It is looser, but an instance's part is computed once per state for a few n, so the fan-out
walks instances in its order and computes the full floor only for those it reaches.

Prefix caching (block/predictor/prefix_start.py): a hit at admission skips the prompt's leading cached
blocks, so the floor charges only the tokens that cannot be cached. A request ahead can only find blocks
that someone else's prompt names or that are cached free (`cacheable`: its leading such blocks; not
the candidate's, whose prefill comes after every prefill ahead), at its admission or, one running
preempted mid-prefill, at its next (then also its own computed blocks); the candidate can find at most the
leading blocks that anything the instance holds or queues names (`known`). After a preemption a request
may find its own blocks again, so a recompute can cost as little as one pair per context token: the
reads that may follow one count at the cheaper of the KV rate and pair_s. The KV blocks needed are not
bounded (shared blocks count once). A candidate's own part for a fleet (`StepFloor.own_s`) assumes
every block of its prompt cached.

Steps that begin before the candidate is sent count only through the total since the snapshot
(minus the time elapsed); the step in flight at the snapshot (`step_end`) counts as its remaining
time only. Pending requests arriving after the candidate are left out (they are behind it).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from itertools import accumulate

from block.predictor.chunk_floor import ChunkFloor
from block.predictor.lengths import Plan, max_output
from block.profiles.profile import Profile
from block.replica.config import ReplicaConfig
from block.request import RoutingRequest

MARGIN = 1e-7  # relative: the replay sums its floats in another order


class StepFloor:
    """The per-step constants of one profile on one engine configuration."""

    __slots__ = (
        "token_s",
        "step_s",
        "per_seq_s",
        "kv_s",
        "pair_s",
        "max_tokens",
        "overhead",
        "rising",
        "chunks",
    )

    def __init__(self, profile: Profile, config: ReplicaConfig) -> None:
        cost = profile.cost
        m = max(config.max_num_batched_tokens, config.max_num_seqs)
        cost.reserve(m)
        overhead = profile.step_overhead_s
        linear = cost.linear[1 : m + 1]
        floor_after = list(accumulate(reversed(linear), min))[::-1]  # min linear(k) for k >= n
        # a calibrated view (Profile.scaled) times each step at its phase's factor: bound every step by the
        # smaller one, so an instance measured faster than its profile is not pruned by nominal times
        scale = cost.least_scale
        self.step_s = (overhead + floor_after[0]) * scale
        self.token_s = min((overhead + f) / n for n, f in enumerate(floor_after, 1)) * scale
        self.per_seq_s = profile.per_seq_s * scale
        self.kv_s = profile.decode_kv_token_s * scale
        self.pair_s = profile.prefill_pair_s * scale
        self.max_tokens = config.max_num_batched_tokens
        self.overhead = profile.request_overhead
        # more in a step never makes it shorter (what a floor from a recorded run assumes: timeline.py)
        self.rising = cost.never_shorter(m)
        # what a prompt's chunks add to their steps through the linear layers, at least (chunk_floor.py)
        self.chunks = ChunkFloor(cost.linear, config.max_num_batched_tokens, self.rising, scale)

    def own_steps(self, request: RoutingRequest, config: ReplicaConfig) -> int:
        """The candidate's steps (prefill chunks and decodes) on an instance of this configuration, at
        least (every block of its prompt found cached)."""
        uncached = request.prompt_tokens - _cacheable(request, config) * config.block_size
        return -(-uncached // self.max_tokens) + planned_output(request, config) - 1

    def own_s(self, request: RoutingRequest, config: ReplicaConfig, cached: bool = True) -> float:
        """The candidate's own formula time, at least, on any instance of this profile and configuration
        (the parts of EndToEndFloor.e2e_s's `own_fixed` that do not depend on the requests ahead, the
        reads at the cheaper of the KV and recompute rates, every block of its prompt found cached; and
        what its prefill chunks add to their steps through the linear layers: chunk_floor.py). Not
        `cached`: on an instance that holds none of its prompt (its whole prompt computed once at least;
        after a preemption it may find its own blocks, as the reads' rate allows)."""
        prompt = request.prompt_tokens
        blocks = _cacheable(request, config) if cached else 0
        hit = blocks * config.block_size
        decodes = planned_output(request, config) - 1
        own_steps = -(-(prompt - hit) // self.max_tokens) + decodes
        reads = decodes * prompt + decodes * (decodes + 1) // 2
        kv = min(self.kv_s, self.pair_s * (1 if _hashes(request, config) else (prompt + 1) / 2))
        pairs = prompt * (prompt + 1) // 2 - hit * (hit + 1) // 2
        layers = self.chunks.adds(prompt - hit)
        return self.pair_s * pairs + kv * reads + self.per_seq_s * own_steps + decodes * self.step_s + layers


def _hashes(request: RoutingRequest, config: ReplicaConfig) -> Sequence[int]:
    """The candidate's prompt block hashes as the instance would look them up (none: no caching)."""
    if not config.enable_prefix_caching or request.prefix_block_size != config.block_size:
        return ()
    return request.prefix_hashes[: request.prompt_tokens // config.block_size]


# (a prompt's block hashes, the most blocks to look at) -> how many leading ones may be found cached
KnownPrefix = Callable[[Sequence[int], int], int]


def _cacheable(request: RoutingRequest, config: ReplicaConfig, known: KnownPrefix | None = None) -> int:
    """The most prompt blocks the candidate may find cached at admission: its leading blocks `known`
    allows (None: all), and never its last token (FastReplica's lookup)."""
    hashes = _hashes(request, config)
    most = min(len(hashes), (request.prompt_tokens - 1) // config.block_size)
    return most if known is None or not most else known(hashes, most)


def planned_output(request: RoutingRequest, config: ReplicaConfig) -> int:
    """The candidate's output tokens, as the forecast caps them."""
    out = max(1, min(request.expected_output_tokens, max_output(request.prompt_tokens, config)))
    return out if request.max_tokens is None else max(1, min(out, request.max_tokens))


def _nothing_known(hashes: Sequence[int], most: int) -> int:
    return 0


_STEP_FLOORS: dict[tuple[int, ReplicaConfig], tuple[Profile, StepFloor]] = {}


def step_floor(profile: Profile, config: ReplicaConfig) -> StepFloor:
    """StepFloor, built once per profile and configuration (every instance state asks for it)."""
    key = (id(profile), config)
    hit = _STEP_FLOORS.get(key)
    if hit is None or hit[0] is not profile:
        hit = _STEP_FLOORS[key] = (profile, StepFloor(profile, config))
    return hit[1]


class EndToEndFloor:
    """The floor of one instance state (the snapshot's plans, the pending requests, the step in
    flight), for any candidate."""

    def __init__(
        self,
        profile: Profile,
        config: ReplicaConfig,
        ahead: Sequence[Plan],
        later: Sequence[tuple[float, Plan]],
        in_flight_s: float | None,
        steps: StepFloor | None = None,
        cacheable: Mapping[str, int] | None = None,
        known: KnownPrefix | None = None,
    ) -> None:
        """`ahead`: running then waiting, as the replay loads them; `later`: pending requests with
        the time they reach the queue (seconds after the snapshot); `in_flight_s`: the end of the
        step in flight, when there is one. With prefix caching modelled for them: `cacheable`, the
        leading prompt blocks each request (by id) not yet admitted may find cached; `known`, the
        block hashes a candidate may find (see the module docstring). None: nothing is cached."""
        self.config = config
        self.steps = steps or step_floor(profile, config)
        self.in_flight = in_flight_s is not None and bool(ahead)
        self.in_flight_s = (in_flight_s or 0.0) if self.in_flight else 0.0
        self.later_until = max((t for t, _ in later), default=float("-inf"))
        self.caching = cacheable is not None
        self.known: KnownPrefix = known or _nothing_known
        args = (self.in_flight, config, self.steps, cacheable)
        self._with = _Ahead(ahead, [q for _, q in later], *args)
        self._ahead, self._args = ahead, args
        self._without: _Ahead | None = None if later else self._with  # on first use

    def e2e_s(
        self, request: RoutingRequest, elapsed_s: float, horizon_s: float | None = None, queued: bool = False
    ) -> float:
        """A time the forecast of `request` sent `elapsed_s` after the snapshot cannot beat. `queued`: it
        is in the queue already (behind everything ahead), its request overhead spent."""
        cfg, st = self.config, self.steps
        prompt = request.prompt_tokens
        if not cfg.fits(prompt):
            raise ValueError(f"prompt_tokens {prompt} does not fit this instance")
        out = planned_output(request, cfg)
        elapsed = max(0.0, elapsed_s)
        overhead = 0.0 if queued else st.overhead(prompt)
        ahead = self._with if self.later_until <= elapsed + overhead else self._without_later()
        bs = cfg.block_size
        hit = _cacheable(request, cfg, self.known) * bs  # the prompt tokens it may find cached
        uncached = prompt - hit
        chunks = -(-uncached // st.max_tokens)
        decodes = out - 1
        own_steps = chunks + decodes
        pairs = prompt * (prompt + 1) // 2 - hit * (hit + 1) // 2
        reads = decodes * prompt + decodes * (decodes + 1) // 2  # the candidate's decodes
        no_preemption = self._with.full_blocks + -(-(prompt + out) // bs) <= cfg.num_gpu_blocks
        recompute = st.pair_s * (1 if _hashes(request, cfg) else (prompt + 1) / 2)
        kv_own = st.kv_s if no_preemption else min(st.kv_s, recompute)
        own_fixed = st.pair_s * pairs + kv_own * reads + st.per_seq_s * own_steps + decodes * st.step_s
        own = overhead + max(st.token_s * uncached, chunks * st.step_s) + own_fixed
        # since the snapshot: the step in flight, the prefills ahead, the slots, the others' decodes
        prefill = ahead.until_prefilled(uncached, chunks, st.token_s, st.step_s)
        seqs, kv = ahead.participation(own_steps, no_preemption)
        total = self.in_flight_s + prefill + own_fixed + st.per_seq_s * seqs + kv
        floor = max(total - elapsed, own) * (1 - MARGIN)
        return floor if horizon_s is None else min(floor, horizon_s)

    def ready_s(self, own_steps: int = 1) -> float:
        """The part of `e2e_s`'s total since the snapshot that only the candidate's number of steps
        changes, for a candidate of at least `own_steps`: the step in flight, the prefill work ahead or
        the steps until a slot frees (whichever is longer), the others' decodes during its steps (at
        the cheaper rate), counting only the requests that are ahead of any candidate. For such a
        request sent `elapsed` after the snapshot, e2e_s >= (ready_s(own_steps) +
        steps.own_s(request) - elapsed) less MARGIN of it."""
        ahead, st = self._without_later(), self.steps
        steps = ahead.slot_steps + 1 - ahead.in_flight
        seqs, kv = ahead.participation(own_steps, False)
        return self.in_flight_s + max(st.token_s * ahead.tokens, steps * st.step_s) + st.per_seq_s * seqs + kv

    def _without_later(self) -> _Ahead:
        """The requests ahead when some pending ones reach the queue after the candidate: those
        left out (a bound that holds whichever of them come first)."""
        if self._without is None:
            self._without = _Ahead(self._ahead, (), *self._args)
        return self._without


class _Ahead:
    """The requests ahead of a candidate, summarised for the floor: the prefill tokens they are
    missing, the steps until enough of them finished to free a slot or the blocks for the
    candidate, and their decodes. One pass over the requests; what only some candidates need (the
    order in which they can finish, the reads' cost when preemption is possible) on first use."""

    def __init__(
        self,
        first: Sequence[Plan],
        then: Sequence[Plan],
        in_flight: bool,
        config: ReplicaConfig,
        steps: StepFloor,
        cacheable: Mapping[str, int] | None = None,
    ) -> None:
        max_seqs, max_tokens, bs = config.max_num_seqs, config.max_num_batched_tokens, config.block_size
        self.in_flight, self.block_size, self.steps = in_flight, bs, steps
        self.caching = cacheable is not None
        self.num_gpu_blocks = config.num_gpu_blocks
        tokens = full_blocks = context_blocks = 0
        left: list[int] = []  # tokens each has still to generate (a step makes at most one)
        blocks: list[int] = []  # KV blocks of each one's whole context
        rows: list[tuple[int, int]] = []  # (decode steps left, first decode's reads)
        skip = 1 if in_flight else 0  # the step in flight (not timed by the formula) may take one
        for plans in (first, then):
            for key, p, o, c, g in plans:
                full_blocks += -(-(p + o) // bs)
                missing = p + g - c
                if missing == 1 and g > 0:  # decoding: each step reads its context
                    d, b, ctx = o - g - skip, p + g, c
                else:  # prefilling (or recomputing): chunks first, the last makes a token
                    if cacheable:  # a hit at admission skips leading cached blocks: at its first, or
                        # at the next one after a preemption (then its own computed blocks, or more)
                        lead = min(max(c // bs, cacheable.get(key, 0)), (p + g - 1) // bs) * bs
                        tokens -= max(0, lead - c)
                    tokens += missing
                    d, b, ctx = o - g - 1 - skip, p + g + 1, p + g
                k = -(-ctx // bs)
                context_blocks += k
                blocks.append(k)
                left.append(o - g)
                if d > 0:
                    rows.append((d, b))
        # the step in flight computes up to max_tokens of them at no formula cost (a request it
        # preempts is only admitted again later)
        self.tokens = max(0, tokens - max_tokens) if in_flight else tokens
        self.full_blocks = full_blocks  # everything ahead at its full length
        self.context_blocks = context_blocks
        surplus = len(left) - (max_seqs - 1)
        self.slot_steps = sorted(left)[surplus - 1] if surplus > 0 else 0
        self._holders = (left, blocks)
        self._finishing: tuple[list[int], list[int]] | None = None
        rows.sort()
        self._rows = rows
        self._d = d_ = [d for d, _ in rows]
        # by decode steps left: prefix sums of d and of the reads, suffix sums of the first reads
        self._sum_d = [0, *accumulate(d_)]
        self._sum_reads = [0, *accumulate(d * b + d * (d - 1) // 2 for d, b in rows)]
        self._suffix_b = [*accumulate((b for _, b in reversed(rows)), initial=0)][::-1]
        self._rated: tuple[list[float], list[float], list[float]] | None = None

    def until_prefilled(self, prompt: int, chunks: int, token_s: float, step_s: float) -> float:
        """Formula time from the snapshot (the step in flight aside) to the end of the candidate's
        prefill, at least: the token work (prefills ahead and its own prompt), or the steps it takes
        first to have a slot (slot_steps) and then its chunks, or the steps it takes to have the KV
        blocks for its prompt and its last chunk.

        Blocks: in the candidate's last prefill step every request ahead of it that has not finished
        holds its whole context (it got all it was missing; one preempted since has recomputed), so
        enough must have finished first, each after as many steps as it has tokens left."""
        need = self.context_blocks + -(-prompt // self.block_size) - self.num_gpu_blocks
        memory_steps = 1
        if need > 0 and not self.caching:  # (with caching, shared blocks count once)
            left, freed = self._finishing_order()
            j = bisect.bisect_left(freed, need)
            memory_steps += left[j - 1]
        steps = max(self.slot_steps + chunks, memory_steps) - self.in_flight
        return max(token_s * (self.tokens + prompt), steps * step_s)

    def _finishing_order(self) -> tuple[list[int], list[int]]:
        """Tokens left in ascending order (the order in which they can finish, at the soonest), and
        the blocks freed once the first j of them finished."""
        if self._finishing is None:
            pairs = sorted(zip(*self._holders, strict=True))
            self._finishing = ([o for o, _ in pairs], [*accumulate((b for _, b in pairs), initial=0)])
        return self._finishing

    def participation(self, own_steps: int, no_preemption: bool) -> tuple[int, float]:
        """(decodes, seconds of their context reads) of the requests ahead before the candidate
        finishes. Each unfinished one takes part in every candidate step, the first maybe with a
        prefill chunk: it makes min(its tokens left, own_steps - 1) tokens after that at least.
        `no_preemption`: they all read their context (else a token may come from a recompute)."""
        s = own_steps - 1
        if s <= 0:
            return 0, 0.0
        i = bisect.bisect_right(self._d, s)  # rows[:i] make all they have left
        n = len(self._d) - i
        triangle = s * (s - 1) // 2
        if no_preemption:
            reads = self._sum_reads[i] + s * self._suffix_b[i] + n * triangle
            return self._sum_d[i] + n * s, self.steps.kv_s * reads
        cost_reads, suffix_rb, suffix_r = self._rated_sums()
        return self._sum_d[i] + n * s, cost_reads[i] + s * suffix_rb[i] + triangle * suffix_r[i]

    def _rated_sums(self) -> tuple[list[float], list[float], list[float]]:
        """The reads' prefix and suffix sums, each at its own rate: min(kv, pair_s * (reads + 1) / 2)."""
        if self._rated is None:
            kv_s, half_pair_s, rows = self.steps.kv_s, self.steps.pair_s / 2, self._rows
            if self.caching:  # a recompute may find all but one token's blocks cached
                rates = [min(kv_s, 2 * half_pair_s)] * len(rows)
            else:
                rates = [min(kv_s, half_pair_s * (b + 1)) for _, b in rows]
            costs = [r * (d * b + d * (d - 1) // 2) for (d, b), r in zip(rows, rates, strict=True)]
            firsts = [r * b for (_, b), r in zip(rows, rates, strict=True)]
            self._rated = (
                [0.0, *accumulate(costs)],
                [*accumulate(reversed(firsts), initial=0.0)][::-1],
                [*accumulate(reversed(rates), initial=0.0)][::-1],
            )
        return self._rated
