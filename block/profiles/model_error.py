"""Model error: engines that run at a "true" speed the predictor does not know.

Every forecast uses the nominal profile. An engine with model error runs at a speed relative to that
profile that only it knows: each step takes the nominal time divided by the speed at the step's start
(`factor` = 1 / speed), and step noise (noise.py) applies on top. `KIND:E` names the error, E a fraction
(0.2 = 20%):

- `static`: each instance runs at its own fixed speed, uniform in [1-E, 1+E] (a GPU a bit faster or
  slower than the one the profile was fitted on, a profile fitted on another engine). The draws are
  stratified: instance i takes the golden-ratio sequence's i-th point from a seeded start, so
  consecutive instances spread over the band instead of clumping. Each speed is still uniform over the
  seeds, but a fleet's mean speed, and so its total throughput, stays near the profile's (4 plain draws
  can all come out slow): what the error changes is how the engines differ from the profile and from
  each other, not how much the fleet can serve.
- `drift`: each instance's speed wanders within [1-E, 1+E] over minutes (thermal throttling, a
  neighbour's load coming and going): a normalised sum of three slow sinusoids, periods 60-300 s.
- `correlated`: the whole fleet slows down together, to a speed 1 - E at worst, for stretches of
  seconds, as under CPU contention on a shared host: time is cut into 15 s epochs, two in three hold one
  slowdown of 2-10 s at a depth of 0.5-1 x E. The speed is 1 outside the stretches: this kind only slows.

Speeds, not step-time factors, are uniform in the band, so that E=0.4 static does not make the fleet
faster on average (1/speed averages above 1; a step-time factor uniform in [0.6, 1.4] would give the
fleet 6% more throughput). Every speed is a pure function of (seed, instance, time): the same run draws
the same speeds whatever asks first, and the simulator and the emulator can be compared. The instance
index is ignored by `correlated`, which is what makes it shared.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

KINDS = ("static", "drift", "correlated")

GOLDEN = (5**0.5 - 1) / 2  # static: successive instances' points of the golden-ratio sequence

DRIFT_COMPONENTS = 3
DRIFT_PERIODS_S = (60.0, 300.0)  # log-uniform
CORRELATED_EPOCH_S = 15.0
CORRELATED_CHANCE = 2 / 3  # share of epochs with a slowdown
CORRELATED_STRETCH_S = (2.0, 10.0)
CORRELATED_DEPTH = (0.5, 1.0)  # x E

Factor = Callable[[float], float]  # time (s) -> a speed, or a multiplier of the nominal step time


@dataclass(frozen=True, slots=True)
class ModelError:
    kind: str
    error: float  # E, a fraction
    seed: int = 0  # the fleet's: per-instance draws mix in the instance index

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown model error kind {self.kind!r} (known: {', '.join(KINDS)})")
        if not 0 <= self.error < 1:
            raise ValueError(f"model error {self.error:g} is not a fraction in [0, 1): write 0.2 for 20%")

    def __str__(self) -> str:
        return f"{self.kind}:{self.error:g}"

    def speed(self, instance: int) -> Factor:
        """Instance `instance`'s speed relative to its profile, as a function of time."""
        e = self.error
        if self.kind == "static":
            u = (_rng("static", self.seed, 0).random() + instance * GOLDEN) % 1.0
            value = 1.0 + e * (2.0 * u - 1.0)
            return lambda _t: value
        if self.kind == "drift":
            return _drift(e, _rng("drift", self.seed, instance))
        return _Correlated(e, self.seed)

    def mean_speed(self, instances: int, duration_s: float, resolution_s: float = 0.05) -> float:
        """The fleet's mean speed over [0, duration_s): the share of the profile's throughput its engines
        have. Under `correlated` error every engine slows at once, so this bounds what any routing can
        keep of the fleet's throughput; under `static` it is about 1 by construction."""
        times = [k * resolution_s for k in range(max(1, int(duration_s / resolution_s)))]
        total = 0.0
        for i in range(instances):
            speed = self.speed(i)
            total += sum(speed(t) for t in times) / len(times)
        return total / instances

    def factor(self, instance: int) -> Factor:
        """Instance `instance`'s step-time factor (1 / speed) as a function of time."""
        speed = self.speed(instance)
        return lambda t: 1.0 / speed(t)


def parse_model_error(text: str | None, seed: int = 0) -> ModelError | None:
    """`KIND:E` (e.g. `static:0.2`); `none`, '' or None: no model error. Raises a one-line ValueError."""
    if text is None or text.strip().lower() in ("", "none"):
        return None
    kind, sep, value = text.strip().partition(":")
    try:
        error = float(value)
    except ValueError:
        error = math.nan
    if not sep or math.isnan(error):
        raise ValueError(f"bad model error {text!r}: write KIND:E with KIND one of {', '.join(KINDS)}")
    return ModelError(kind.strip().lower(), error, seed)


def _rng(kind: str, seed: int, index: int) -> random.Random:
    return random.Random(f"{kind}:{seed}:{index}")  # a str seed is hashed with SHA-512: stable everywhere


def _drift(e: float, rng: random.Random) -> Factor:
    lo, hi = (math.log(p) for p in DRIFT_PERIODS_S)
    waves = []
    for _ in range(DRIFT_COMPONENTS):
        period = math.exp(rng.uniform(lo, hi))
        waves.append((rng.uniform(0.5, 1.0), 2 * math.pi / period, rng.uniform(0, 2 * math.pi)))
    total = sum(a for a, _, _ in waves)
    waves = [(e * a / total, w, phase) for a, w, phase in waves]  # amplitudes sum to E: within the band
    sin = math.sin

    def speed(t: float) -> float:
        return 1.0 + sum(a * sin(w * t + phase) for a, w, phase in waves)

    return speed


class _Correlated:
    """The fleet's shared speed; remembers the last epoch looked at (steps come in time order)."""

    __slots__ = ("e", "seed", "_epoch", "_start", "_end", "_speed")

    def __init__(self, e: float, seed: int) -> None:
        self.e = e
        self.seed = seed
        self._epoch = -1
        self._start = self._end = 0.0
        self._speed = 1.0

    def __call__(self, t: float) -> float:
        epoch = math.floor(t / CORRELATED_EPOCH_S)
        if epoch != self._epoch:
            self._load(epoch)
        return self._speed if self._start <= t < self._end else 1.0

    def stretch(self, epoch: int) -> tuple[float, float, float] | None:
        """(start, end, speed) of the slowdown in `epoch`, or None when it has none."""
        rng = _rng("correlated", self.seed, epoch)
        if rng.random() >= CORRELATED_CHANCE:
            return None
        length = rng.uniform(*CORRELATED_STRETCH_S)
        start = epoch * CORRELATED_EPOCH_S + rng.uniform(0, CORRELATED_EPOCH_S - length)
        return start, start + length, 1.0 - self.e * rng.uniform(*CORRELATED_DEPTH)

    def _load(self, epoch: int) -> None:
        self._epoch = epoch
        found = self.stretch(epoch)
        self._start, self._end, self._speed = found if found is not None else (0.0, 0.0, 1.0)


class TrueStepTime:
    """One replica's step-time callable (what Replica.step and run_decodes take as `noise`) with model
    error: nominal time x the factor at the step's start, then the step noise.

    Replica.run_decodes draws the durations of a whole decode stretch before it moves the replica's
    clock, so the replica's `now` alone would give every step of a stretch the factor at its start. This
    keeps its own cursor instead: the end of the last step it timed, which is where the next step starts
    as long as the replica's clock has not moved since (it moves after every step that is run one at a
    time, after each stretch, and when the replica idles). Every step then gets the factor at its own
    start, stretch or not: skipping a stretch in one go changes nothing. The replica model guarantees
    that every duration drawn is run, in order (the same contract the seeded step noise relies on).
    """

    __slots__ = ("factor", "now", "noise", "_seen", "_cursor")

    def __init__(self, factor: Factor, now: Callable[[], float], noise: Factor | None = None) -> None:
        self.factor = factor
        self.now = now  # the replica's clock
        self.noise = noise
        self._seen = math.nan
        self._cursor = 0.0

    def __call__(self, mean_s: float) -> float:
        now = self.now()
        if now != self._seen:
            self._seen = self._cursor = now
        d = mean_s * self.factor(self._cursor)
        if self.noise is not None:
            d = self.noise(d)
        self._cursor += d
        return d
