"""KV-cache room held back for higher priorities: a lower priority starts only where it leaves that room.

Forecasts judge time, but a large prompt also needs room in the KV cache to start. Under overload the
lower priorities, admitted while their own forecasts fit, fill every instance's cache; a high-priority
request with a large prompt then finds no instance with room, or starts and is preempted as the running
decodes grow (the engine preempts its newest request), and misses its target however long it is held.
Measured (sim, 12 x A30, ShareGPT at 2x capacity): every high-priority miss was a prompt of 1,000 to
3,000 tokens held past its deadline, on instances preempting about 1,100 times per 3,000 requests.

The reserve below priority p is the prompt size that covers RESERVE_QUANTILE of the recent prompts of
each priority above p (the 99% that high priority must meet: the largest 1% of its prompts may still
wait). A request of priority p may go to an instance only if the instance's free blocks, less the blocks
the prompts already waiting there will take, less its own prompt's, stay at or above that reserve. The
highest priority has nothing above it and may use the whole cache. An instance that reports no cache
(num_gpu_blocks 0) is not limited.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

from block.policies.base import InstanceView

RESERVE_QUANTILE = 0.99  # of the prompts above, as the share of high priority that must meet its target
WINDOW = 1000  # recent prompts kept per priority: the reserve follows the workload


class Reserve:
    def __init__(self, quantile: float = RESERVE_QUANTILE, window: int = WINDOW) -> None:
        self.quantile = quantile
        self.window = window
        self._recent: dict[int, deque[int]] = {}  # priority -> prompt sizes, oldest first
        self._sorted: dict[int, list[int]] = {}  # the same, sorted

    def saw(self, priority: int, prompt_tokens: int) -> None:
        recent = self._recent.setdefault(priority, deque())
        ordered = self._sorted.setdefault(priority, [])
        if len(recent) >= self.window:
            old = recent.popleft()
            del ordered[bisect.bisect_left(ordered, old)]
        recent.append(prompt_tokens)
        bisect.insort(ordered, prompt_tokens)

    def tokens_above(self, priority: int) -> int:
        """The prompt tokens held back for the priorities above `priority` (0: none above it)."""
        room = 0
        for p, ordered in self._sorted.items():
            if p > priority and ordered:
                k = max(0, math.ceil(self.quantile * len(ordered)) - 1)  # covers that share of them
                room = max(room, ordered[k])
        return room

    def leaves_room(self, view: InstanceView, prompt_tokens: int, reserved_tokens: int) -> bool:
        """Does `view` keep `reserved_tokens` of room once this prompt and those waiting there start?"""
        if reserved_tokens <= 0 or view.num_gpu_blocks <= 0:
            return True
        size = view.block_size
        committed = _blocks(view.waiting_prompt_tokens, size) + _blocks(prompt_tokens, size)
        return view.free_blocks - committed >= _blocks(reserved_tokens, size)


def _blocks(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)
