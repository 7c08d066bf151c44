"""The step-time formula of a profile, in the one place it is written (see profile.py for the model).

Every path that times a step calls `StepCost.seconds`: the replica model, the engine, the simulator
and the forecast's fast replica. A pure-decode step is affine in the KV tokens it reads, so a run of
k decode steps over the same n sequences, each reading n more KV tokens than the one before, has a
closed form (`decodes`) and an inverse (`decodes_starting_before`), which the fast paths use to skip
over such runs. Both are derived from `seconds`: `decode_base[n]` is `seconds(n, n)` and `kv` is the
coefficient of the KV tokens read. A new term in `seconds` that is not constant or linear in the KV
tokens read for a decode step must change `decodes` too, and its two inlined twins in the hottest
loops: `Replica.run_decodes` (one decode step as `decode_base[n] + kv * kv_tokens_read`, per step for
the noise) and `FastReplica._drain_group` (`decodes`); and `one_more_decode`, what one more decoding
sequence adds to a step (block/predictor/timeline.py reads forecasts with it). The property tests
(tests/replica/test_run_decodes.py, tests/predictor/test_skip_ahead.py, tests/predictor/test_timeline.py)
fail when they drift apart.

The linear term is read from a table (0 .. the largest batch asked for so far), so a step costs a
list index instead of a bisection; a table value is `Profile.linear_time` itself, so the result is
the same, bit for bit, whichever way it is computed.

`seconds` and `decodes` are closures over the coefficients, not methods: the fast replica calls them
once per step or stretch, and a closure call costs about half a method call that reads its
coefficients from `self` (measured: 0.20 vs 0.37 us).

Calibration (block/fleet/calibration.py) corrects a profile per phase: `scaled(decode, prefill)` is the
same formula times `decode` for a pure-decode step and times `prefill` for a step that prefills (any
prefill attention pairs). It shares the unscaled linear table; `kv` and `decode_base` are scaled, so the
closed forms and their inlined twins stay exact. Unscaled (1, 1) is this class as it was, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

# Batches larger than this are timed without extending the tables (one bisection each).
MAX_TABLE_TOKENS = 1 << 16


class StepCost:
    """`seconds(num_tokens, num_seqs, kv_tokens_read=0, prefill_attention_pairs=0)`: one step, in
    which `num_seqs` sequences compute `num_tokens` tokens, the decodes among them reading
    `kv_tokens_read` KV tokens and the prefill chunks attending over `prefill_attention_pairs`
    causal (query, key) pairs.

    `decodes(num_seqs, steps, first_kv)`: `steps` pure-decode steps of `num_seqs` sequences, the first
    reading `first_kv` KV tokens and each next one `num_seqs` more; the sum of their `seconds`, in
    closed form. Needs `reserve(num_seqs)`.
    """

    __slots__ = ("kv", "linear", "decode_base", "seconds", "decodes", "_args", "_scales", "_rising")

    def __init__(
        self,
        step_overhead_s: float,
        per_seq_s: float,
        decode_kv_token_s: float,
        prefill_pair_s: float,
        linear_time: Callable[[int], float],
        decode_scale: float = 1.0,
        prefill_scale: float = 1.0,
        linear_table: list[float] | None = None,
    ) -> None:
        """`decode_scale`, `prefill_scale`: see the module docstring. `linear_table`: another StepCost's
        `linear` (the same coefficients), shared instead of built again."""
        self._args = (step_overhead_s, per_seq_s, decode_kv_token_s, prefill_pair_s, linear_time)
        self._scales = (decode_scale, prefill_scale)
        self._rising: dict[int, bool] = {}  # see never_shorter
        self.kv = decode_kv_token_s * decode_scale  # seconds per KV token a decode reads
        # linear[t]: the non-attention layers' time for t tokens (unscaled)
        linear = self.linear = linear_table if linear_table is not None else [0.0]
        base = self.decode_base = [0.0]  # decode_base[n]: an n-sequence decode step, KV aside

        def unscaled(
            num_tokens: int, num_seqs: int, kv_tokens_read: int = 0, prefill_attention_pairs: int = 0
        ) -> float:
            if num_seqs == 0:
                return 0.0
            try:
                layers = linear[num_tokens]
            except IndexError:
                layers = self._linear_beyond_table(num_tokens)
            return (
                step_overhead_s
                + per_seq_s * num_seqs
                + layers
                + decode_kv_token_s * kv_tokens_read
                + prefill_pair_s * prefill_attention_pairs
            )

        def scaled(
            num_tokens: int, num_seqs: int, kv_tokens_read: int = 0, prefill_attention_pairs: int = 0
        ) -> float:
            t = unscaled(num_tokens, num_seqs, kv_tokens_read, prefill_attention_pairs)
            return t * (prefill_scale if prefill_attention_pairs else decode_scale)

        seconds = unscaled if decode_scale == 1.0 and prefill_scale == 1.0 else scaled
        kv = self.kv

        def decodes(num_seqs: int, steps: int, first_kv: int) -> float:
            return steps * base[num_seqs] + kv * (steps * first_kv + num_seqs * (steps * (steps - 1) // 2))

        self.seconds = seconds
        self.decodes = decodes

    def __reduce__(self) -> tuple[Any, ...]:  # closures do not pickle: rebuild them
        return (StepCost, (*self._args, *self._scales))

    def never_shorter(self, max_tokens: int) -> bool:
        """Whether a step of up to `max_tokens` tokens never gets shorter with more in it: a token more
        costs no less (the linear term does not fall), and a prefill chunk joining a decode step does
        not scale it down (prefill factor >= decode factor). Once per table size."""
        rising = self._rising.get(max_tokens)
        if rising is None:
            self.reserve(max_tokens)
            linear = self.linear
            rising = self.prefill_scale >= self.decode_scale and all(
                linear[t] <= linear[t + 1] for t in range(min(max_tokens, len(linear) - 1))
            )
            self._rising[max_tokens] = rising
        return rising

    @property
    def decode_scale(self) -> float:
        return self._scales[0]

    @property
    def prefill_scale(self) -> float:
        return self._scales[1]

    @property
    def least_scale(self) -> float:
        """The smallest of the phase factors: every step takes at least its unscaled time times this (a
        step is scaled by one of them), which is what a lower bound built from the coefficients needs."""
        return min(self._scales)

    def one_more_decode(self, num_tokens: int, prefill: bool) -> tuple[float, float]:
        """What one more decoding sequence adds to a step of `num_tokens` tokens (`prefill`: the step
        has prefill pairs): (seconds, its KV reads aside; seconds per KV token it reads). From
        `seconds`: its sequence, its token through the linear layers, its reads, all at the step's
        phase factor. Needs `reserve(num_tokens + 1)`."""
        _, per_seq_s, kv_token_s, _, _ = self._args
        scale = self.prefill_scale if prefill else self.decode_scale
        linear = self.linear
        return scale * (per_seq_s + linear[num_tokens + 1] - linear[num_tokens]), scale * kv_token_s

    def scaled(self, decode: float, prefill: float) -> StepCost:
        """This formula corrected per phase (see the module docstring), sharing the linear table."""
        return StepCost(*self._args, decode, prefill, linear_table=self.linear)

    def reserve(self, max_tokens: int) -> None:
        """Extend the tables to batches of `max_tokens` tokens (hot loops index them directly)."""
        linear, base, linear_time = self.linear, self.decode_base, self._args[4]
        top = min(max_tokens, MAX_TABLE_TOKENS) + 1
        for t in range(len(linear), top):
            linear.append(linear_time(t))
        for t in range(len(base), min(top, len(linear))):  # a shared linear table may be longer
            base.append(self.seconds(t, t))

    def _linear_beyond_table(self, num_tokens: int) -> float:
        if num_tokens > MAX_TABLE_TOKENS:
            return self._args[4](num_tokens)
        self.reserve(num_tokens)
        return self.linear[num_tokens]

    def decodes_starting_before(self, dt: float, num_seqs: int, steps: int, first_kv: int) -> int:
        """How many of the `steps` decode steps of `decodes(num_seqs, steps, first_kv)` start less
        than `dt` from the first one's start."""
        if dt <= 0:
            return 0
        n, k, k0 = num_seqs, steps, first_kv
        decodes = self.decodes
        if decodes(n, k - 1, k0) < dt:
            return k
        # solve decodes(j) = dt for j (a quadratic), then fix rounding: the answer is 1 + the
        # largest j with decodes(j) < dt
        a = self.decode_base[n]
        qa = self.kv * n / 2
        qb = a + self.kv * (k0 - n / 2)
        j = int(dt / qb) if qa == 0 else int((-qb + math.sqrt(qb * qb + 4 * qa * dt)) / (2 * qa))
        j = max(0, min(j, k - 1))
        while j > 0 and decodes(n, j, k0) >= dt:
            j -= 1
        while j + 1 < k and decodes(n, j + 1, k0) < dt:
            j += 1
        return j + 1
