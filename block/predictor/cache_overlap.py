"""Whether modelling the prefix cache can change a forecast, so that it may run without the model.

The cache model changes a run only through a hit: a request admitted with `c == 0` finds leading blocks
of its prompt cached (fast_replica.py, `PrefixCache.lookup`). Everything else is the same with or
without it: cached free blocks are free blocks to the allocator, a request that shares no block frees
all of its blocks, and a lookup that finds nothing admits as without the model. A hit needs a block
named twice: by two prompts (the snapshot's requests, those routed since, the candidate), by a prompt
and a cached free block, or by a preempted request's own prompt (its blocks are cached when it is
preempted, and it looks them up when it comes back). So where no hash is named twice, the run
without the model is the run with it, step for step, up to its first preemption: a forecast runs
without it and runs again with it only where that run preempted (the caller checks).

Most first-turn prompts share nothing (ShareGPT: 0.6% of prompt tokens hit), and the run without the
model is the cheaper one (no PrefixStart, no registration of blocks, no eviction bookkeeping).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set


class CacheOverlap:
    """The first block hashes of an instance's prompts, and whether any block is named twice.

    Hashes are chained: two prompts share a block only if they share their first (as PrefixStart and the
    floors rely on too), so only first blocks are compared among prompts; cached free blocks may be any
    block of a prompt, so each prompt is checked against them whole (in C: `isdisjoint`, no set built)."""

    def __init__(self, prompts: Iterable[tuple[int, ...]], free: Set[int]) -> None:
        """`prompts`: the prompt hashes of every request the forecast may run (snapshot and pending);
        `free`: the hashes of the snapshot's cached free blocks."""
        firsts: set[int] = set()
        disjoint = True
        for hs in prompts:
            if not hs:
                continue
            if hs[0] in firsts or not free.isdisjoint(hs):
                disjoint = False  # two prompts share a block, or a prompt's block is cached free
                break
            firsts.add(hs[0])
        self._firsts = firsts
        self._free = free
        self.disjoint = disjoint

    def cannot_hit(self, candidate: Sequence[int]) -> bool:
        """Whether no request of a run with this candidate can find a block cached, short of a
        preemption: no block is named twice here, and the candidate names none named here."""
        if not self.disjoint:
            return False
        return not candidate or (candidate[0] not in self._firsts and self._free.isdisjoint(candidate))
