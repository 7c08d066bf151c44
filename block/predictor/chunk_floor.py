"""The least a prompt's prefill chunks add to their steps through the non-attention layers.

A fleet's ready order (block/fleet/ready_order.py) bounds every candidate by a part of the instance's
state and a part of the candidate's own (`StepFloor.own_s`). The steps a candidate's prefill joins are
counted in the instance's part as they run without it (or at `step_s`, past the end of what runs there),
so its own part must say what its chunks add. Pairs and sequences add linearly; the layers' time
`linear(tokens)` does not (flat for a few tokens, steep when compute-bound), and `own_s` used to count
nothing for it: at light load, where alike instances differ by less than a prefill, the walk reached
most of them.

The candidate is last in a step's FCFS loop, so each step it prefills in computes
`k = min(tokens left, max_tokens - t)` of its tokens, `t` the tokens the others compute there (at least
one while it shares the step), or `k = min(tokens left, max_tokens)` alone, where the step is counted at
`step_s` (`linear(1..)` at its least, `least`). What a chunk adds is then at least

    linear(t + k) - linear(t)      shared (t >= 1), or
    linear(k) - least              alone,

and the least a prompt of r tokens adds over any sequence of others' `t` is, chunk by chunk,

    adds(r) = min over t of [what that chunk adds + adds(r - k)],  adds(0) = 0,

a table over r (one vector operation per r over the possible t). Where the layers' time never falls
with more tokens, `adds` never falls with more tokens either (a sequence for r + 1 tokens less one token
of its last chunk, which takes all that is left, is a sequence for r that adds no more), so past
`MAX_TOKENS_TABLED` tokens it is at least what it is there. So also for a candidate preempted mid-prefill:
the chunks before the preemption took the whole budget left, so with the least for the rest they are a
sequence for the whole prompt, and what it computes again after is no less than that rest. Where the
layers' time may fall (`rising` false), a chunk may add less than nothing and the bound is 0, as before.
"""

from __future__ import annotations

import numpy as np

MAX_TOKENS_TABLED = 1024  # prompt tokens tabled exactly; a longer prompt adds at least what this many do


class ChunkFloor:
    """`adds(tokens)`: seconds a prefill of `tokens` uncached prompt tokens adds to the steps it joins, at
    least, through the linear layers (times `scale`, the profile's least phase factor)."""

    def __init__(self, linear: list[float], max_tokens: int, rising: bool, scale: float) -> None:
        """`linear[t]`: the layers' time for t tokens, t = 0 .. at least `max_tokens`."""
        self.max_tokens = max_tokens
        self.rising = rising
        self.scale = scale
        self._linear = np.asarray(linear[: max_tokens + 1], dtype=float)
        self._least = float(self._linear[1:].min()) if max_tokens else 0.0
        self._adds = np.zeros(1)  # adds(r) for r = 0 .. len - 1, extended on demand

    def adds(self, tokens: int) -> float:
        if not self.rising or tokens <= 0:
            return 0.0
        tokens = min(tokens, MAX_TOKENS_TABLED)  # (it never falls with more: see the module docstring)
        self._extend(tokens)
        return float(self._adds[tokens]) * self.scale

    def _extend(self, last: int) -> None:
        """Table adds(r) up to r = `last`."""
        have = len(self._adds)
        if last < have:
            return
        lin, m, least = self._linear, self.max_tokens, self._least
        adds = np.concatenate([self._adds, np.zeros(last + 1 - have)])
        top = lin[m]
        for r in range(have, last + 1):
            k = min(r, m)
            best = lin[k] - least + adds[r - k]  # alone
            if r < m:  # shared, the whole rest in one chunk: t = 1 .. m - r
                best = min(best, float((lin[1 + r : m + 1] - lin[1 : m - r + 1]).min()))
            lo = max(1, m - r + 1)  # shared, a chunk of the budget left (m - t): t = lo .. m - 1
            if lo < m:
                rest = adds[r - m + lo : r]  # adds(r - (m - t))
                best = min(best, float((top - lin[lo:m] + rest).min()))
            adds[r] = best
        self._adds = adds
