"""Online calibration: each instance's real step times, measured from the tokens that stream back, as
per-phase correction factors of its profile.

The router sees every token of every request come back (the simulator emits the same events from its
replicas' token times). Tokens that come back together (within a fraction of a step) end the same engine
step, so the stream of one instance is a sequence of step ends, and between two of them one step ran:

- decode: a request that already had tokens gets its next `count` tokens after `count` steps; with no
  prefill in between, that gap over the profile's time of `count` decode steps of the batch (the requests
  decoding there, their KV tokens) is one decode sample, one per step;
- prefill: a request's first token ends the step that finished its prompt. That step started at the end of
  the step before, or when the request reached an idle engine (routed + the profile's request overhead):
  its duration over the profile's time of that step (the decodes plus the prompts that finished in it) is
  one prefill sample. A prompt longer than a chunk counts its last chunk only.

Each phase keeps the last `window` samples of log(observed / predicted), each clipped to the factor
bounds, and its factor is the median of them, clamped to [0.25, 4]: a stall is one sample of the window
(clipped), not a poisoned estimate; the window is a second or two of decode steps and a few seconds of
prefills, so a slowdown is followed within seconds. A phase's factor stays 1 until it has `min_samples`.
Forecasts use the factors rounded to QUANTUM in log space (Profile.scaled): one formula for a step's
cost, and a forecaster is only rebuilt when a factor moved by a step of that size.

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

    @property
    def quantised(self) -> float:
        """The factor forecasts use: rounded to QUANTUM in log space (exactly 1.0 near 1)."""
        q = round(self._log / QUANTUM)
        return 1.0 if q == 0 else math.exp(q * QUANTUM)


LOG_BOUNDS = (math.log(FACTOR_BOUNDS[0]), math.log(FACTOR_BOUNDS[1]))


@dataclass(slots=True)
class _Request:
    prompt: int  # uncached prompt tokens: what its prefill computes
    arrival: float  # when it reached the engine: routed + the profile's request overhead
    generated: int = 0
    last_at: float = 0.0  # its last token


class InstanceCalibration(RequestListener):
    """One instance's factors, from the routed / tokens / finished events of its requests (a listener of
    that instance only: the `instance` argument is not read)."""

    def __init__(
        self,
        profile: Profile,
        max_num_batched_tokens: int,
        cached_tokens: Callable[[RoutingRequest], int] | None = None,
        *,
        decode_window: int = DECODE_WINDOW,
        prefill_window: int = PREFILL_WINDOW,
        min_samples: int = MIN_SAMPLES,
    ) -> None:
        """`cached_tokens(request)`: the prompt tokens this instance will not compute (prefix cache hits);
        None: all are computed."""
        self.profile = profile
        self.cost = profile.cost
        self.chunk = max(1, max_num_batched_tokens)
        self.cached_tokens = cached_tokens
        self.decode = PhaseFactor(decode_window, min_samples)
        self.prefill = PhaseFactor(prefill_window, min_samples)
        self._requests: dict[str, _Request] = {}
        self._decoding = 0  # requests that had their first token and have not finished
        self._kv = 0  # their KV tokens (uncached prompt + generated: what their decodes read)
        self._step_end = -math.inf  # the step whose tokens are coming back
        self._prev_end = -math.inf  # the step before it
        self._same_step_s = MIN_SAME_STEP_S
        # the current step's samples, kept until the step ends (a token may still show it prefilled)
        self._decode_sample: tuple[float, float] | None = None  # observed, predicted
        self._prefill_start = -math.inf
        self._prefill_tokens = self._prefill_seqs = self._prefill_pairs = 0
        self._step_decoding = self._step_kv = 0  # the batch's decodes as the step began

    # -- what forecasts use ----------------------------------------------------------------------

    def scales(self) -> tuple[float, float]:
        """(decode, prefill) factors as forecasts use them (quantised)."""
        return self.decode.quantised, self.prefill.quantised

    def factors(self) -> dict[str, float]:
        return {"decode": self.decode.factor, "prefill": self.prefill.factor}

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
        self._requests[request.id] = _Request(prompt, arrival)

    def tokens(self, instance: str, request_id: str, count: int, at: float) -> None:
        r = self._requests.get(request_id)
        if r is None or count <= 0:
            return  # routed before this listener was told, or a malformed count
        if at - self._step_end > self._same_step_s:
            self._end_step()
            self._prev_end, self._step_end = self._step_end, at
            self._step_decoding, self._step_kv = self._decoding, self._kv
        if r.generated == 0:
            self._prefilled(r)
            self._decoding += 1
            self._kv += r.prompt + count
        else:
            if self._decode_sample is None and r.last_at >= self._prev_end - self._same_step_s:
                # its previous token ended the step before: the gap is `count` steps of this batch
                n, kv = self._step_decoding, self._step_kv
                if n > 0:
                    mid_kv = kv + n * (count - 1) // 2
                    predicted = count * self.cost.seconds(n, n, mid_kv)
                    self._decode_sample = (at - r.last_at, predicted)
            self._kv += count
        r.generated += count
        r.last_at = at

    def finished(self, instance: str, request_id: str, at: float) -> None:
        r = self._requests.pop(request_id, None)
        if r is not None and r.generated > 0:
            self._decoding -= 1
            self._kv -= r.prompt + r.generated

    # -- steps -----------------------------------------------------------------------------------

    def _prefilled(self, r: _Request) -> None:
        """r's first token: its prompt's last chunk ran in this step."""
        last = r.prompt - self.chunk * ((r.prompt - 1) // self.chunk)
        done = r.prompt - last
        self._prefill_start = max(self._prefill_start, self._prev_end, r.arrival)
        self._prefill_tokens += last
        self._prefill_seqs += 1
        self._prefill_pairs += last * done + last * (last + 1) // 2

    def _end_step(self) -> None:
        """The step whose tokens came back is over: its sample goes to its phase."""
        if self._prefill_seqs:
            n, kv = self._step_decoding, self._step_kv
            predicted = self.cost.seconds(
                n + self._prefill_tokens, n + self._prefill_seqs, kv, self._prefill_pairs
            )
            self.prefill.add(self._step_end - self._prefill_start, predicted)
            self._prefill_start = -math.inf
            self._prefill_tokens = self._prefill_seqs = self._prefill_pairs = 0
        elif self._decode_sample is not None:  # a pure decode step (no prompt finished in it)
            observed, predicted = self._decode_sample
            self.decode.add(observed, predicted)
            step = predicted * self.decode.factor
            self._same_step_s = max(MIN_SAME_STEP_S, SAME_STEP * step)
        self._decode_sample = None


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
