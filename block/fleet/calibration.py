"""Online calibration: each instance's real step times, measured from the tokens that stream back, as
per-phase correction factors of its profile.

The router sees every token of every request come back (the simulator emits the same events from its
replicas' token times). Tokens that come back together (within a fraction of a step) end the same engine
step, so the stream of one instance is a sequence of step ends, and between two of them one step ran:

- what ran in a step is followed as the engine schedules it: the decodes of the requests that had their
  first token, then the waiting prompts (those that had reached the engine: routed + the profile's request
  overhead) in arrival order, in chunks up to the step's token budget and its sequence limit; a prompt's
  first token says it is done, whatever the account said;
- decode: a step with no prompt tokens in it. A request that already had tokens gets its next `count`
  after `count` steps: that gap over the profile's time of `count` decode steps of the batch (the requests
  decoding, their KV tokens) is one decode sample, one per step;
- prefill: a step with prompt tokens in it (a prompt finished or a chunk of one ran): its duration (from
  the end of the step before, or from the arrival of its first prompt at an idle engine) over the
  profile's time of that step (its decodes and chunks) is one prefill sample.

Each phase keeps the last `window` samples of log(observed / predicted), each clipped to the factor
bounds, and its factor is the median of them, within [0.25, 4]: a stall is one sample of the window
(clipped), not a poisoned estimate; the window is a second or two of decode steps and a few seconds of
prefill steps, so a slowdown is followed within seconds. A phase's factor stays 1 until it has `min_samples`.
Forecasts use the factors rounded to QUANTUM in log space (Profile.scaled): one formula for a step's
cost, and a forecaster is only rebuilt when a factor moved by a step of that size.

A predictor sidecar sees no tokens: the router sends its factors with each /routed notice and the sidecar's
tracker adopts them (`adopt`), so both forecast with the same corrected profile.

Prefix caching: a prompt's cached blocks are not computed. `routed` takes the uncached part from the
tracker's `cached_prefix_blocks` (0 until the data layer knows the cache), so prefill samples are on
uncached tokens as soon as it does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from block.fleet.listeners import RequestListener, Routed
from block.profiles.profile import Profile
from block.request import RoutingRequest

PHASES = ("decode", "prefill")
FACTOR_BOUNDS = (0.25, 4.0)
DECODE_WINDOW = 32  # steps: one to two seconds of decoding
PREFILL_WINDOW = 16  # steps that finished prompts: a few seconds at a few requests per second
MIN_SAMPLES = 4
QUANTUM = 0.02  # forecasts use factors rounded to this step of log(factor): about 2%
SAME_STEP = 0.3  # tokens closer than this share of a decode step came back from the same step
MIN_SAME_STEP_S = 0.001
MAX_UNSEEN_STEPS = 64  # prefill-only steps accounted for between two tokens of an idle instance


class PhaseFactor:
    """The median of the last `window` log ratios observed / predicted, clipped and clamped."""

    __slots__ = ("window", "min_samples", "samples", "_ring", "_next", "_log", "factor")

    def __init__(self, window: int, min_samples: int = MIN_SAMPLES) -> None:
        self.window = window
        self.min_samples = min_samples
        self.samples = 0  # ever added
        self._ring: list[float] = []
        self._next = 0
        self._log = 0.0
        self.factor = 1.0

    def add(self, observed_s: float, predicted_s: float) -> None:
        if observed_s <= 0 or predicted_s <= 0:
            return
        lo, hi = LOG_BOUNDS
        x = min(hi, max(lo, math.log(observed_s / predicted_s)))
        ring = self._ring
        if len(ring) < self.window:
            ring.append(x)
        else:
            ring[self._next] = x
            self._next = (self._next + 1) % self.window
        self.samples += 1
        if len(ring) >= self.min_samples:
            s = sorted(ring)
            n = len(s)
            self._log = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
            self.factor = math.exp(self._log)

    def adopt(self, factor: float) -> None:
        """Take a factor measured elsewhere (a predictor sidecar takes its router's), clamped."""
        lo, hi = FACTOR_BOUNDS
        self.factor = min(hi, max(lo, factor))
        self._log = math.log(self.factor)

    @property
    def quantised(self) -> float:
        """The factor forecasts use: rounded to QUANTUM in log space (exactly 1.0 near 1)."""
        q = round(self._log / QUANTUM)
        return 1.0 if q == 0 else math.exp(q * QUANTUM)


LOG_BOUNDS = (math.log(FACTOR_BOUNDS[0]), math.log(FACTOR_BOUNDS[1]))


@dataclass(slots=True)
class _Request:
    id: str
    prompt: int  # uncached prompt tokens: what its prefill computes
    arrival: float  # when it reached the engine: routed + the profile's request overhead
    left: int = 0  # prompt tokens not prefilled yet, as far as the engine's chunking is followed
    generated: int = 0
    last_at: float = 0.0  # its last token


class InstanceCalibration(RequestListener):
    """One instance's factors, from the routed / tokens / finished events of its requests (a listener of
    that instance only: the `instance` argument is not read).

    To know what ran in a step it follows the engine's chunked prefill: each step computes the decodes,
    then fills the token budget with the waiting prompts in arrival order (a prompt's first token says it
    is done). A step that, by this account, computed prompt tokens is a prefill sample, whether or not a
    prompt finished in it; only a step with none is a decode sample."""

    def __init__(
        self,
        profile: Profile,
        max_num_batched_tokens: int,
        cached_tokens: Callable[[RoutingRequest], int] | None = None,
        *,
        max_num_seqs: int | None = None,
        decode_window: int = DECODE_WINDOW,
        prefill_window: int = PREFILL_WINDOW,
        min_samples: int = MIN_SAMPLES,
    ) -> None:
        """`cached_tokens(request)`: the prompt tokens this instance will not compute (prefix cache hits);
        None: all are computed. `max_num_seqs`: the engine's sequence limit (None: unknown, unlimited);
        a prompt waits for a seat as well as for token budget, and under load it is the seats that run
        out: planning chunks into steps that had no seat for them charges those steps with prefill they
        did not do, and the prefill factor comes out low (0.76 for an engine at 1.01, at 39 req/s on
        12 x A30)."""
        self.profile = profile
        self.cost = profile.cost
        self.budget = max(1, max_num_batched_tokens)
        self.max_num_seqs = max_num_seqs
        self.cached_tokens = cached_tokens
        self.decode = PhaseFactor(decode_window, min_samples)
        self.prefill = PhaseFactor(prefill_window, min_samples)
        self._waiting: dict[str, _Request] = {}  # no token yet, in arrival order
        self._decoding: dict[str, _Request] = {}
        self._kv = 0  # the decoding requests' KV tokens (uncached prompt + generated: what decodes read)
        self._step_end = -math.inf  # the step whose tokens are coming back
        self._prev_end = -math.inf  # the step before it
        self._same_step_s = MIN_SAME_STEP_S
        # the current step, kept until it ends (a later token of it may show that it prefilled)
        self._step_decoding = self._step_kv = 0  # its decodes, as it began
        self._finishing: list[_Request] = []  # prompts whose first token it produced
        self._decode_sample: tuple[float, float, int] | None = None  # observed, predicted, steps

    # -- what forecasts use ----------------------------------------------------------------------

    def scales(self) -> tuple[float, float]:
        """(decode, prefill) factors as forecasts use them (quantised)."""
        return self.decode.quantised, self.prefill.quantised

    def factors(self) -> dict[str, float]:
        return {"decode": self.decode.factor, "prefill": self.prefill.factor}

    def adopt(self, decode: float, prefill: float) -> None:
        """Factors measured where the tokens are seen: the router tells its predictor sidecar, which does
        not see them, in each /routed notice."""
        self.decode.adopt(decode)
        self.prefill.adopt(prefill)

    def describe(self) -> dict[str, float | int]:
        """For GET /instances and reports."""
        return {
            "decode": round(self.decode.factor, 4),
            "prefill": round(self.prefill.factor, 4),
            "decode_samples": self.decode.samples,
            "prefill_samples": self.prefill.samples,
        }

    # -- events ----------------------------------------------------------------------------------

    def routed(self, instance: str, routed: Routed) -> None:
        request = routed.request
        prompt = request.prompt_tokens
        if self.cached_tokens is not None:  # the prefix-cache hook: prefill computes the rest only
            prompt = max(1, prompt - self.cached_tokens(request))
        arrival = routed.at + self.profile.request_overhead(request.prompt_tokens)
        self._waiting[request.id] = _Request(request.id, prompt, arrival, prompt)

    def tokens(self, instance: str, request_id: str, count: int, at: float) -> None:
        if count <= 0:
            return
        if at - self._step_end > self._same_step_s:
            self._end_step()
            self._prev_end, self._step_end = self._step_end, at
            self._step_decoding, self._step_kv = len(self._decoding), self._kv
        r = self._decoding.get(request_id)
        if r is None:
            r = self._waiting.get(request_id)
            if r is None:
                return  # routed before this listener was told
            self._finishing.append(r)  # its first token: its prompt's last chunk ran in this step
            self._decoding[request_id] = r
            self._kv += r.prompt
        elif self._decode_sample is None and r.last_at >= self._prev_end - self._same_step_s:
            # its previous token ended the step before: the gap is `count` steps of this batch
            n, kv = self._step_decoding, self._step_kv
            predicted = count * self.cost.seconds(n, n, kv + n * (count - 1) // 2)
            self._decode_sample = (at - r.last_at, predicted, count)
        self._kv += count
        r.generated += count
        r.last_at = at

    def finished(self, instance: str, request_id: str, at: float) -> None:
        r = self._decoding.pop(request_id, None)
        if r is not None:
            self._kv -= r.prompt + r.generated
        else:
            self._waiting.pop(request_id, None)

    # -- steps -----------------------------------------------------------------------------------

    def _end_step(self) -> None:
        """The step whose tokens came back is over: its sample goes to its phase."""
        finishing, sample = self._finishing, self._decode_sample
        self._finishing, self._decode_sample = [], None
        if self._step_end == -math.inf:
            return
        n, kv = self._step_decoding, self._step_kv
        if n == 0 and finishing:
            # nothing decoding: the engine may have run several prefill-only steps unseen, since the
            # first of these prompts arrived
            start = max(self._prev_end, min(r.arrival for r in finishing))
            predicted = 0.0
            for _ in range(MAX_UNSEEN_STEPS):
                tokens, seqs, pairs = self._plan(0, start)
                predicted += self.cost.seconds(tokens, seqs, 0, pairs)
                if not any(r.left for r in finishing):
                    break
            predicted += self.cost.seconds(*self._finish(finishing))
        else:
            start = self._prev_end
            tokens, seqs, pairs = self._plan(n, start)
            more_tokens, more_seqs, more_pairs = self._finish(finishing)
            tokens, seqs, pairs = tokens + more_tokens, seqs + more_seqs, pairs + more_pairs
            if not tokens:  # a pure decode step
                if sample is not None:
                    observed, predicted, steps = sample
                    self.decode.add(observed, predicted)
                    step_s = predicted / steps * self.decode.factor
                    self._same_step_s = max(MIN_SAME_STEP_S, SAME_STEP * step_s)
                return
            if sample is not None and sample[2] > 1:
                return  # tokens came back in a chunk of several steps: this step's length is unknown
            predicted = self.cost.seconds(n + tokens, n + seqs, kv, pairs)
        for r in finishing:
            self._waiting.pop(r.id, None)
        self.prefill.add(self._step_end - start, predicted)

    def _plan(self, n: int, start: float) -> tuple[int, int, int]:
        """One step's prompt chunks after `n` decodes, as the engine fills its budget with the prompts
        that had arrived, in arrival order: (tokens, seqs, pairs)."""
        budget = self.budget - n
        seats = math.inf if self.max_num_seqs is None else self.max_num_seqs - n
        tokens = seqs = pairs = 0
        for r in self._waiting.values():
            if budget <= 0 or seats <= 0:
                break
            if not r.left or r.arrival > start + self._same_step_s:
                continue
            piece = min(r.left, budget)
            tokens += piece
            seqs += 1
            pairs += piece * (r.prompt - r.left) + piece * (piece + 1) // 2
            r.left -= piece
            budget -= piece
            seats -= 1
        return tokens, seqs, pairs

    def _finish(self, finishing: list[_Request]) -> tuple[int, int, int]:
        """What the account missed of the prompts that finished in this step (their first token says
        they did): (tokens, seqs, pairs)."""
        tokens = seqs = pairs = 0
        for r in finishing:
            if r.left:
                piece = r.left
                tokens += piece
                seqs += 1
                pairs += piece * (r.prompt - r.left) + piece * (piece + 1) // 2
                r.left = 0
        return tokens, seqs, pairs


class Calibrations(RequestListener):
    """The fleet's calibrations as one listener (the simulator's): each event goes to its instance's."""

    def __init__(self, by_instance: Mapping[str, InstanceCalibration]) -> None:
        self.by_instance = dict(by_instance)

    def routed(self, instance: str, routed: Routed) -> None:
        c = self.by_instance.get(instance)
        if c is not None:
            c.routed(instance, routed)

    def tokens(self, instance: str, request_id: str, count: int, at: float) -> None:
        c = self.by_instance.get(instance)
        if c is not None:
            c.tokens(instance, request_id, count, at)

    def finished(self, instance: str, request_id: str, at: float) -> None:
        c = self.by_instance.get(instance)
        if c is not None:
            c.finished(instance, request_id, at)
