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
- preemption can only add work, except that a preempted request recomputes with pairs instead of
  reading its KV: the context reads of the requests ahead are only counted when no preemption is
  possible (everything ahead and the candidate fit the cache at their full length), and the
  candidate's own at the smaller of the two rates.

Steps that begin before the candidate is sent count only through the total since the snapshot
(minus the time elapsed); the step in flight at the snapshot (`step_end`) counts as its remaining
time only. Pending requests arriving after the candidate are left out (they are behind it).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from itertools import accumulate

from block.predictor.lengths import Plan, max_output
from block.profiles.profile import Profile
from block.replica.config import ReplicaConfig
from block.request import RoutingRequest

MARGIN = 1e-7  # relative: the replay sums its floats in another order


class StepFloor:
    """The per-step constants of one profile on one engine configuration."""

    __slots__ = ("token_s", "step_s", "per_seq_s", "kv_s", "pair_s", "max_tokens", "overhead")

    def __init__(self, profile: Profile, config: ReplicaConfig) -> None:
        cost = profile.cost
        m = max(config.max_num_batched_tokens, config.max_num_seqs)
        cost.reserve(m)
        overhead = profile.step_overhead_s
        linear = cost.linear[1 : m + 1]
        floor_after = list(accumulate(reversed(linear), min))[::-1]  # min linear(k) for k >= n
        self.step_s = overhead + floor_after[0]
        self.token_s = min((overhead + f) / n for n, f in enumerate(floor_after, 1))
        self.per_seq_s = profile.per_seq_s
        self.kv_s = profile.decode_kv_token_s
        self.pair_s = profile.prefill_pair_s
        self.max_tokens = config.max_num_batched_tokens
        self.overhead = profile.request_overhead


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
    ) -> None:
        """`ahead`: running then waiting, as the replay loads them; `later`: pending requests with
        the time they reach the queue (seconds after the snapshot); `in_flight_s`: the end of the
        step in flight, when there is one."""
        self.config = config
        self.cap = min(config.max_model_len, config.num_gpu_blocks * config.block_size)
        self.steps = steps or step_floor(profile, config)
        self.in_flight = in_flight_s is not None and bool(ahead)
        self.in_flight_s = (in_flight_s or 0.0) if self.in_flight else 0.0
        self.later_until = max((t for t, _ in later), default=float("-inf"))
        bs = config.block_size
        self.full_blocks = sum(-(-(p + o) // bs) for _, p, o, _, _ in (*ahead, *(q for _, q in later)))
        args = (self.in_flight, config.max_num_seqs, config.max_num_batched_tokens)
        self._with = _Ahead(ahead, [q for _, q in later], *args)
        self._without = _Ahead(ahead, (), *args) if later else self._with

    def e2e_s(self, request: RoutingRequest, elapsed_s: float, horizon_s: float | None = None) -> float:
        """A time the forecast of `request` sent `elapsed_s` after the snapshot cannot beat."""
        cfg, st = self.config, self.steps
        prompt = request.prompt_tokens
        if prompt < 1 or prompt >= self.cap:
            raise ValueError(f"prompt_tokens {prompt} does not fit this instance")
        out = max(1, min(request.expected_output_tokens, max_output(prompt, cfg)))
        if request.max_tokens is not None:
            out = max(1, min(out, request.max_tokens))
        elapsed = max(0.0, elapsed_s)
        overhead = st.overhead(prompt)
        ahead = self._with if self.later_until <= elapsed + overhead else self._without
        chunks = -(-prompt // st.max_tokens)
        decodes = out - 1
        own_steps = chunks + decodes
        pairs = prompt * (prompt + 1) // 2
        reads = decodes * prompt + decodes * (decodes + 1) // 2  # the candidate's decodes
        bs = cfg.block_size
        no_preemption = self.full_blocks + -(-(prompt + out) // bs) <= cfg.num_gpu_blocks
        kv_own = st.kv_s if no_preemption else min(st.kv_s, st.pair_s * (prompt + 1) / 2)
        own_fixed = st.pair_s * pairs + kv_own * reads + st.per_seq_s * own_steps + decodes * st.step_s
        own = overhead + max(st.token_s * prompt, chunks * st.step_s) + own_fixed
        # since the snapshot: the step in flight, the prefills ahead, the slots, the others' decodes
        pre_steps = max(0, ahead.slot_steps - self.in_flight)
        prefill = max(st.token_s * (ahead.tokens + prompt), (pre_steps + chunks) * st.step_s)
        seqs, kv = ahead.participation(own_steps)
        total = self.in_flight_s + prefill + own_fixed + st.per_seq_s * seqs
        if no_preemption:
            total += st.kv_s * kv
        floor = max(total - elapsed, own) * (1 - MARGIN)
        return floor if horizon_s is None else min(floor, horizon_s)


class _Ahead:
    """The requests ahead of a candidate, summarised for the floor: the prefill tokens they are
    missing, the steps until enough of them finished to free a slot, and their decodes."""

    def __init__(
        self, first: Sequence[Plan], then: Sequence[Plan], in_flight: bool, max_seqs: int, max_tokens: int
    ) -> None:
        tokens = 0
        left: list[int] = []  # tokens each has still to generate (a step makes at most one)
        rows: list[tuple[int, int]] = []  # (decode steps left, first decode's reads)
        for _, p, o, c, g in (*first, *then):
            missing = p + g - c
            if missing == 1 and g > 0:  # decoding: each step reads its context
                d, b = o - g, p + g
            else:  # prefilling (or recomputing): chunks first, the last makes a token
                tokens += missing
                d, b = o - g - 1, p + g + 1
            left.append(o - g)
            if in_flight:  # the step in flight (not timed by the formula) may take one
                d -= 1
            if d > 0:
                rows.append((d, b))
        # the step in flight computes up to max_tokens of them at no formula cost
        self.tokens = max(0, tokens - max_tokens) if in_flight else tokens
        surplus = len(left) - (max_seqs - 1)
        self.slot_steps = sorted(left)[surplus - 1] if surplus > 0 else 0
        rows.sort()
        self._d = [d for d, _ in rows]
        # by decode steps left: prefix sums of d and of its reads, suffix sums of first reads
        self._sum_d = [0, *accumulate(self._d)]
        self._sum_reads = [0, *accumulate(d * b + d * (d - 1) // 2 for d, b in rows)]
        self._suffix_b = [*accumulate((b for _, b in reversed(rows)), initial=0)][::-1]

    def participation(self, own_steps: int) -> tuple[int, int]:
        """(decodes, KV tokens they read) of the requests ahead before the candidate finishes. Each
        unfinished one takes part in every candidate step, the first maybe as a prefill chunk: it
        decodes min(its decodes left, own_steps - 1) times at least."""
        s = own_steps - 1
        if s <= 0:
            return 0, 0
        i = bisect.bisect_right(self._d, s)  # rows[:i] decode all they have left
        n = len(self._d) - i
        return self._sum_d[i] + n * s, self._sum_reads[i] + n * (s * (s - 1) // 2) + s * self._suffix_b[i]
