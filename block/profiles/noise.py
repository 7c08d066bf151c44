"""Step-time noise: real GPUs do not take exactly the mean time, and now and then they stall."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class StepNoise:
    """Multiplies a mean step time by a random factor.

    The factor is 1 + relative_std * N(0, 1), kept within [0.5, 2], and with probability
    `stall_probability` a step is additionally stretched by `stall_factor` (a GC pause, a slow
    all-reduce, a CPU hiccup). `relative_std=0` and `stall_probability=0` make steps exact.
    """

    relative_std: float = 0.03
    stall_probability: float = 0.001
    stall_factor: float = 3.0
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.relative_std < 0 or not 0 <= self.stall_probability <= 1 or self.stall_factor < 1:
            raise ValueError("noise: need relative_std >= 0, 0 <= stall_probability <= 1, stall_factor >= 1")
        self._rng = random.Random(self.seed)

    @classmethod
    def exact(cls) -> StepNoise:
        return cls(relative_std=0.0, stall_probability=0.0)

    @property
    def is_exact(self) -> bool:
        return self.relative_std == 0 and self.stall_probability == 0

    def apply(self, mean_s: float) -> float:
        if self.is_exact:
            return mean_s
        factor = 1.0 + self.relative_std * self._rng.gauss(0.0, 1.0)
        factor = min(2.0, max(0.5, factor))
        if self.stall_probability and self._rng.random() < self.stall_probability:
            factor *= self.stall_factor
        return mean_s * factor
