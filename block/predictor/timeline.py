"""A forecast read off a recorded run: the run without a candidate, recorded once per instance state.

A candidate queued last, once it reaches the queue, is behind everyone, and the requests ahead of it do
not notice it, step for step, as long as none of them is preempted:
- it may first take part in the first step that starts after it arrived (never the one in flight at the
  snapshot), and is admitted last in a step's FCFS loop, with the budget, the slot and the blocks those
  ahead left;
- in every later step it is last in `running` (the queue ahead is empty once it is in, and without a
  preemption nobody joins it), so it takes what is left of the budget (none left: no token that step),
  and the blocks it holds are blocks nobody else asks for while enough stay free;
- when they are not, it is the one preempted (the newest goes first): it leaves the step, its blocks go
  back, and it is in line again from the next step, to recompute what it had.
So the steps of the run with it are the steps of the run without it, in the same order, each one it
takes part in longer by what it adds (StepCost.seconds is affine in its chunk's pairs and in its
reads). `Timeline` records the run without a candidate to its end (FastReplica.record: general steps one
by one, decode stretches whole with their block demand; from the snapshot, or from a checkpoint,
checkpoint.py: a candidate that reaches the queue before it is in line at its first step, a later one
joins where it arrives), with prefix sums over its steps. A forecast is then: the step whose admission
loop reaches the candidate with budget, a slot and blocks; its prefill chunks one by one; its decodes
as prefix sums over the steps they fall in (step by step only where its blocks run short), and, past the
end of the recording, as decodes alone (StepCost.decodes).

Where that cannot be shown, `forecast` says None and the caller replays (the same answer, slower): someone
ahead preempted in the candidate's life (a preempted request comes back behind it), a stretch without
budget for it, more than MAX_PREEMPTIONS of its own.

For forecasts without anticipated arrivals or harm term. Times are the replay's up to float rounding
(sums taken in another order), steps and preemptions exactly; tests/predictor/test_timeline.py holds them
to it. For a fleet's walk, `end_floors` bounds every candidate of at least so many steps from it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from block.replica.fast_replica import FastReplica, Stretch

MAX_PREEMPTIONS = 8  # of the candidate itself, in one read (more: the forecast replays)


class Timeline:
    """The run without a candidate until every request finished, and the forecasts of candidates queued
    last read off it."""

    def __init__(
        self,
        sim: FastReplica,
        valid_from: float,
        first_joinable: int = 0,
        preempted_before: int = 0,
        deadline: float | None = None,
    ) -> None:
        """`sim`: the instance's run without a candidate, recording (`sim.record`) from the snapshot or
        from a checkpoint, every pending request queued from `valid_from` on (a candidate reaching the
        queue before then is not served: the order of arrivals differs). It is run to the end here
        (raises SimulationStuck or DeadlineExceeded as a forecast would). From a checkpoint, a candidate
        that reached the queue before it is in line at its first step, and one that comes later joins
        the recorded run where it arrives. `first_joinable`: the steps before it were in flight at the
        snapshot (none can join). `preempted_before`: preemptions before the recording (a
        checkpoint's)."""
        assert sim.record is not None
        self.valid_from, self.first_joinable = valid_from, first_joinable
        recorded = sum(seg.steps if isinstance(seg, Stretch) else 1 for seg in sim.record)
        self.steps_before = sim.steps - recorded  # engine steps before the recording (a checkpoint's)
        self.preempted_before = preempted_before
        self.max_tokens, self.max_seqs = sim.max_tokens, sim.max_seqs
        self.block_size = sim.bs
        cost = self.cost = sim.cost
        cost.reserve(self.max_tokens + 1)  # one_more_decode reads linear[num_tokens + 1]
        self.num_gpu_blocks = sim.num_gpu_blocks
        sim.step_while(lambda s: bool(s.running or s.waiting), deadline, "timeline")
        self.end = sim.now  # when the last request finishes
        self._index(sim.record)

    def serves(self, arrival: float) -> bool:
        """Whether a candidate reaching the queue at `arrival` (after the snapshot) can be read here."""
        return self.valid_from <= arrival

    def _index(self, record: list) -> None:
        """Per segment (a general step, or a stretch): its first step, when it starts, the budget a
        candidate at the head of the queue would find there (0: none, or not admitted at all), the fewest
        free blocks in it; prefix sums over steps of what a decoding candidate adds (`one_more_decode`:
        fixed, per KV token read, that times the step), of steps without budget for it and of steps that
        preempt."""
        max_tokens, max_seqs, added = self.max_tokens, self.max_seqs, self.cost.one_more_decode
        self.segments = record
        first, start, budget, least_in = [], [], [], []
        stretch_adds: dict[int, tuple[float, float]] = {}  # per stretch: one_more_decode of its steps
        sums = [(0.0, 0.0, 0.0, 0, 0)]
        fixed = rate = rate_s = 0.0
        full = preempted = steps = 0
        for seg in record:
            first.append(steps)
            start.append(seg.start)
            if isinstance(seg, Stretch):
                k, n = seg.steps, seg.num_seqs
                budget.append(max(0, max_tokens - n) if n < max_seqs and seg.queue_empty else 0)
                least_in.append(seg.free_after(k - 1))  # a stretch only takes blocks
                if n >= max_tokens:
                    full += k
                    stretch_adds[len(first) - 1] = (0.0, 0.0)
                else:
                    f, r = stretch_adds[len(first) - 1] = added(n, False)
                    fixed += k * f
                    rate += k * r
                    rate_s += r * (steps + steps + k - 1) * k / 2
            else:
                k = 1
                admits = not seg.preempted and seg.queue_empty and seg.running < max_seqs
                budget.append(max_tokens - seg.num_tokens if admits else 0)
                least_in.append(seg.free)
                preempted += seg.preempted
                if seg.num_tokens >= max_tokens:
                    full += 1
                else:
                    f, r = added(seg.num_tokens, seg.pairs > 0)
                    fixed += f
                    rate += r
                    rate_s += r * steps
            steps += k
            sums.append((fixed, rate, rate_s, full, preempted))
        self.num_steps = steps
        self._first, self._start, self._budget = first, start, budget
        self._least_in, self._sums, self._stretch_adds = least_in, sums, stretch_adds

    def forecast(
        self, prompt: int, out: int, arrival: float, unpreempted: bool = False
    ) -> tuple[float, float, float, int, int] | None:
        """(first scheduled, first token, finish: seconds after the snapshot; engine steps to the finish;
        its preemptions) of a candidate of `prompt` tokens making `out`, reaching the queue at `arrival`
        (see `serves`); None where the recording cannot show it (see the module docstring).
        `unpreempted`: None as well where anyone is preempted before it finishes, from the snapshot on
        (a run without the prefix-cache model stands for the run with it only then: cache_overlap.py)."""
        if -(-(prompt + out - 1) // self.block_size) > self.num_gpu_blocks:
            return None  # it cannot finish even alone
        tail = max(self.end, arrival)  # when a step alone after the recording starts
        s = self._joins(arrival)
        added = 0.0  # what its steps added to the recorded ones, so far
        generated = preemptions = 0
        first_sched = first_token = None
        admitted = -1
        while True:
            s = self._admission(s, prompt + generated)  # type: ignore[assignment]
            if s is None:
                return None
            if first_sched is None:
                first_sched, admitted = self._start_of(s, tail), s
            s, plus, prefilled = self._prefill(s, prompt + generated, generated > 0)
            added += plus
            if prefilled:
                generated += 1
                if first_token is None:
                    first_token = self._end_of(s, tail) + added
                if generated < out:
                    got = self._decodes(s + 1, prompt + generated - 1, out - generated)
                    if got is None:
                        return None
                    s, plus, made = got
                    added += plus
                    generated += made
            if generated >= out:
                break
            preemptions += 1  # at step s, with nothing made there: in line again from the next one
            if unpreempted or preemptions > MAX_PREEMPTIONS:
                return None
            s += 1
        if self._sums[-1][4]:  # someone is preempted in the recording: in its life?
            preempting = self._sums_before(s + 1)[4]
            if preempting != self._sums_before(admitted)[4]:
                return None  # someone ahead is preempted in its life: the order of `running` changes
            if unpreempted and preempting:
                return None
        if unpreempted and self.preempted_before:
            return None
        finish = self._end_of(s, tail) + added
        return first_sched, first_token, finish, self.steps_before + s + 1, preemptions  # type: ignore[return-value]

    def end_floors(self, arrival: float, own_steps: Sequence[int], step_s: float) -> list[float] | None:
        """For each n of `own_steps`, for any candidate of at least n steps of its own (prefill chunks and
        decodes) reaching the queue at `arrival`: a time its finish cannot be before, less what its own
        steps add to the steps it shares (`StepFloor.own_s` without its `step_s` per decode): the end of
        its last step at the soonest, admitted at the first step with budget and a free block (found once
        for all n), each step past the recording `step_s` at least. The steps it shares only get longer
        (it preempts nobody but itself: the newest goes first); None where someone is preempted in the
        recording from there (a preempted request may come back behind it)."""
        first = self._admission(self._joins(arrival), 1)
        if first is None or self._sums[-1][4] != self._sums_before(first)[4]:
            return None
        ends = []
        for n in own_steps:
            last = first + n - 1
            if last < self.num_steps:
                ends.append(self._end_of(last, 0.0))
            else:
                ends.append(max(self.end, arrival) + (last - max(first, self.num_steps) + 1) * step_s)
        return ends

    @property
    def preempts(self) -> bool:
        """Whether anyone is preempted in the recording, or before it."""
        return bool(self._sums[-1][4] or self.preempted_before)

    def _admission(self, s: int, tokens: int) -> int | None:
        """The first step from `s` on whose FCFS loop reaches a candidate at the head of the queue that
        has `tokens` to compute, with budget, a slot and the blocks for its first chunk (the end of the
        recording when none does); None when it would not fit even alone."""
        bs, budget, firsts = self.block_size, self._budget, self._first
        i = self._locate(s)[0] if s < self.num_steps else len(firsts)
        while i < len(firsts):
            b = budget[i]
            if b:
                need = -(-min(tokens, b) // bs)
                seg = self.segments[i]
                if isinstance(seg, Stretch):
                    if need <= seg.free_after(s - firsts[i]):  # its free blocks only fall: now or never
                        return s
                elif need <= seg.free:
                    return s
            i += 1
            if i < len(firsts):
                s = firsts[i]
        if -(-min(tokens, self.max_tokens) // bs) > self.num_gpu_blocks:
            return None
        return max(s, self.num_steps)

    def _prefill(self, s: int, tokens: int, again: bool) -> tuple[int, float, bool]:
        """Its chunks from step `s` (admitted there) until `tokens` are computed: (the step that computes
        the last of them, or the one that preempts it; seconds they added; whether it was the last).
        `again`: a recompute (a one-token chunk is timed as a decode then, as FastReplica's batch does)."""
        bs, max_tokens, seconds = self.block_size, self.max_tokens, self.cost.seconds
        done, added = 0, 0.0
        while True:
            tokens_s, seqs, kv, pairs, base, free = self._shape(s)
            chunk = min(tokens - done, max_tokens - tokens_s)
            if -(-(done + max(chunk, 0)) // bs) > free:
                return s, added, False  # its blocks do not fit there: preempted, the newest
            if chunk > 0:
                if chunk == 1 and again:
                    added += seconds(tokens_s + 1, seqs + 1, kv + done + 1, pairs) - base
                else:
                    own_pairs = chunk * done + chunk * (chunk + 1) // 2
                    added += seconds(tokens_s + chunk, seqs + 1, kv, pairs + own_pairs) - base
                done += chunk
                if done == tokens:
                    return s, added, True
            s += 1

    def _decodes(self, s: int, context: int, wanted: int) -> tuple[int, float, int] | None:
        """Its decodes from step `s` on, the first reading `context` + 1 KV tokens, until `wanted` tokens
        are made or it is preempted: (its last step, or the one that preempts it; seconds added; tokens
        made). A step without budget for it makes none. None where that is not shown step by step (a
        stretch without budget for it)."""
        bs, n_steps = self.block_size, self.num_steps
        made, added = 0, 0.0
        last = min(s + wanted, n_steps) - 1  # within the recording, when every step makes a token
        if s <= last:  # most often: every step there has budget for it and blocks to spare
            before, after = self._sums_before(s), self._sums_before(last + 1)
            least = min(self._least_in[self._locate(s)[0] : self._locate(last)[0] + 1])
            if after[3] == before[3] and least >= -(-(context + last - s + 1) // bs):
                added = (
                    after[0] - before[0] + (context + 1 - s) * (after[1] - before[1]) + after[2] - before[2]
                )
                made, s = last - s + 1, last + 1
        while made < wanted:
            if s >= n_steps:  # alone past the recording (it fits: checked at the start)
                k = wanted - made
                return s + k - 1, added + self.cost.decodes(1, k, context + made + 1), wanted
            i, j = self._locate(s)
            seg = self.segments[i]
            held = context + made  # tokens it holds the blocks of before step s
            if isinstance(seg, Stretch):
                if seg.num_seqs >= self.max_tokens:
                    return None
                k = min(wanted - made, seg.steps - j)
                if seg.free_after(j + k - 1) < -(-(held + k) // bs):
                    # the first of the k where its blocks do not fit: free blocks fall, its blocks grow
                    lo, hi = j, j + k - 1
                    while lo < hi:
                        mid = (lo + hi) // 2
                        if seg.free_after(mid) < -(-(held + mid - j + 1) // bs):
                            hi = mid
                        else:
                            lo = mid + 1
                    k = lo - j
                    if k:
                        added += self._decode_sums(s, s + k - 1, held)
                    return s + k, added, made + k
                added += self._decode_sums(s, s + k - 1, held)
                made += k
                s += k
                continue
            if seg.num_tokens >= self.max_tokens:  # no budget left for it: no token there
                if seg.free < -(-held // bs):
                    return s, added, made
            else:
                if seg.free < -(-(held + 1) // bs):
                    return s, added, made
                added += self._decode_sums(s, s, held)
                made += 1
            s += 1
        return s - 1, added, made

    def _decode_sums(self, first: int, last: int, context: int) -> float:
        """Seconds its decodes add to steps first..last (each with budget for it), the first reading
        `context` + 1 KV tokens and each next one more."""
        fixed0, rate0, rate_s0, _, _ = self._sums_before(first)
        fixed1, rate1, rate_s1, _, _ = self._sums_before(last + 1)
        return fixed1 - fixed0 + (context + 1 - first) * (rate1 - rate0) + (rate_s1 - rate_s0)

    def _joins(self, arrival: float) -> int:
        """The first step a candidate reaching the queue at `arrival` may take part in: the first that
        starts at or after it, never one in flight at the snapshot."""
        starts, segments = self._start, self.segments
        i = bisect.bisect_left(starts, arrival)
        first = self._first[i] if i < len(starts) else self.num_steps
        if i and isinstance(segments[i - 1], Stretch):  # the stretch before may have steps after it
            seg = segments[i - 1]
            j = self.cost.decodes_starting_before(arrival - seg.start, seg.num_seqs, seg.steps, seg.first_kv)
            if j < seg.steps:
                first = self._first[i - 1] + j
        return max(first, self.first_joinable)

    def _locate(self, s: int) -> tuple[int, int]:
        """(segment, step within it) of step `s` (< num_steps)."""
        i = bisect.bisect_right(self._first, s) - 1
        return i, s - self._first[i]

    def _shape(self, s: int) -> tuple[int, int, int, int, float, int]:
        """Step `s` of the recording: (tokens, sequences, KV tokens read, prefill pairs, seconds, free
        blocks after its allocations); nothing past its end (the candidate is alone there)."""
        if s >= self.num_steps:
            return 0, 0, 0, 0, 0.0, self.num_gpu_blocks
        i, j = self._locate(s)
        seg = self.segments[i]
        if isinstance(seg, Stretch):
            n = seg.num_seqs
            kv = seg.first_kv + n * j
            return n, n, kv, 0, self.cost.seconds(n, n, kv), seg.free_after(j)
        return seg.num_tokens, seg.num_seqs, seg.kv_read, seg.pairs, seg.end - seg.start, seg.free

    def _start_of(self, s: int, tail: float) -> float:
        """When step `s` starts (`tail` from the end of the recording on)."""
        if s >= self.num_steps:
            return tail
        i, j = self._locate(s)
        seg = self.segments[i]
        if isinstance(seg, Stretch) and j:
            return seg.start + self.cost.decodes(seg.num_seqs, j, seg.first_kv)
        return seg.start

    def _end_of(self, s: int, tail: float) -> float:
        """When step `s` ends (`tail` from the end of the recording on)."""
        if s >= self.num_steps:
            return tail
        i, j = self._locate(s)
        seg = self.segments[i]
        if isinstance(seg, Stretch):
            return seg.start + self.cost.decodes(seg.num_seqs, j + 1, seg.first_kv)
        return seg.end

    def _sums_before(self, s: int) -> tuple[float, float, float, int, int]:
        """The prefix sums over the steps before `s` (fixed, rate, rate * step, full steps, preempting
        ones)."""
        if s >= self.num_steps:
            return self._sums[-1]
        i, j = self._locate(s)
        fixed, rate, rate_s, full, pre = self._sums[i]
        if j:  # inside a stretch: j of its steps, all alike
            if self.segments[i].num_seqs >= self.max_tokens:
                full += j
            else:
                f, r = self._stretch_adds[i]
                s0 = self._first[i]
                fixed += j * f
                rate += j * r
                rate_s += r * (s0 + s0 + j - 1) * j / 2
        return fixed, rate, rate_s, full, pre
