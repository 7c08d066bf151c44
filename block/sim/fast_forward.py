"""Skip over decode-only steps of a Replica in one go, with exactly the effect of stepping them.

Most engine steps in a busy cluster change nothing but progress: every running request decodes one
token, nobody finishes, no block allocation fails, no waiting request can be admitted. Stepping those
through `Replica.schedule()`/`complete()` costs a few microseconds per request per step. Here a run of
such steps costs one pass over the running requests to find how many steps are safe, one cheap loop per
step for its duration (the profile's time of the same batch shape, times the replica's noise: the same
draws in the same order as stepping), and one pass to apply the progress.

Safe run length k (all steps pure decode, none preempting, none admitting):
- k <= min over running of (output - generated): the step emitting someone's last token ends the run;
- cumulative KV demand of k steps, sum of blocks_for(computed + k) - blocks held, fits the free blocks
  (demand grows with k, so no step in between fails an allocation either);
- the head of the waiting queue cannot be admitted in the first step (no sequence slot, no token budget
  or not enough blocks after the decodes took theirs); free blocks only shrink during the run, so it
  cannot be admitted in any later step either.

The equivalence with plain stepping is tested bit for bit (tests/sim/test_fast_forward.py).
"""

from __future__ import annotations

from collections.abc import Callable

from block.replica import Replica, Request
from block.replica.kv_cache import blocks_for

FinishHook = Callable[[Request, float], None]


def _demand(running: list[Request], k: int, bs: int) -> int:
    """KV blocks the running decodes allocate over the next k steps."""
    return sum(-(-(q.num_computed_tokens + k) // bs) - q.num_blocks for q in running)


def _safe_steps(rep: Replica) -> tuple[int, int]:
    """(k, KV tokens read by the first step): how many pure-decode steps are safe now; k = 0: none."""
    cfg = rep.config
    running = rep.running
    n = len(running)
    if n == 0 or n > cfg.max_num_batched_tokens:
        return 0, 0
    k = 1 << 62
    kv0 = 0
    for q in running:
        g = q.num_generated
        c = q.num_computed_tokens
        if g == 0 or c != q.prompt_tokens + g - 1:
            return 0, 0  # a prefill (or recompute) is still in progress
        rem = q.output_tokens - g
        if rem < k:
            k = rem
        kv0 += c + 1
    bs = cfg.block_size
    free = rep.kv.free_blocks
    budget = cfg.max_num_batched_tokens - n
    if rep.waiting and n < cfg.max_num_seqs and budget > 0:
        head = rep.waiting[0]
        m = min(head.num_missing_tokens, budget)
        if blocks_for(head.num_computed_tokens + m, bs) - head.num_blocks <= free - _demand(running, 1, bs):
            return 0, 0  # it would be admitted in the first step
    if _demand(running, k, bs) > free:
        lo, hi = 0, k  # largest k whose demand fits: demand(lo) fits, demand(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _demand(running, mid, bs) <= free:
                lo = mid
            else:
                hi = mid
        k = lo
    return k, kv0


def fast_forward(
    rep: Replica,
    limit: float,
    noise: Callable[[float], float] | None,
    token_times: dict[Request, list[float]] | None,
    on_finish: FinishHook,
) -> tuple[int, float | None]:
    """Complete the pure-decode steps of `rep` that end at or before `limit`.

    Returns (steps completed, duration of the next step if it was already drawn). A drawn duration
    belongs to a pure-decode step that starts at or before `limit` and ends after it: the caller must
    schedule that step with exactly this duration (its noise draw is spent).
    """
    done = 0
    profile = rep.profile
    kv_s = profile.decode_kv_token_s
    bs = rep.config.block_size
    while rep.now <= limit:
        k, kv0 = _safe_steps(rep)
        if k == 0:
            return done, None
        running = rep.running
        n = len(running)
        t = rep.now
        ends: list[float] = []
        drawn: float | None = None
        # Profile.decode_step_time(n, kv), the step_time of this batch shape, is `base + kv_s * kv`
        # summed in the same order (the equivalence test checks the results bit for bit).
        base = profile.decode_step_time(n, 0)
        for j in range(k):
            d = base + kv_s * (kv0 + j * n)
            if noise is not None:
                d = noise(d)
            if t + d > limit:
                drawn = d
                break
            t += d
            ends.append(t)
        j = len(ends)
        if j:
            _apply(rep, j, ends, bs, token_times, on_finish, finishes=j == k)
            done += j
        if drawn is not None or j < k:
            return done, drawn
    return done, None


def _apply(
    rep: Replica,
    j: int,
    ends: list[float],
    bs: int,
    token_times: dict[Request, list[float]] | None,
    on_finish: FinishHook,
    finishes: bool,
) -> None:
    """The effect of j completed decode steps ending at `ends` (as Replica.complete would leave it)."""
    kv = rep.kv
    freed = 0
    for q in rep.running:
        c = q.num_computed_tokens + j
        q.num_computed_tokens = c
        q.num_generated += j
        nb = -(-c // bs)
        freed -= nb - q.num_blocks
        q.num_blocks = nb
        if token_times is not None:
            token_times[q].extend(ends)
    kv.free_blocks += freed
    end = ends[-1]
    rep.now = end
    if finishes:
        done = [q for q in rep.running if q.num_generated >= q.output_tokens]
        for q in done:
            q.finish_time = end
            kv.free(q)
            on_finish(q, end)
        rep.running = [q for q in rep.running if q.finish_time is None]
