"""Rate sweeps and the capacity search (highest rate whose aggregate SLOs hold, by bisection)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


def parse_rates(text: str) -> list[float]:
    """ "20:36:2" -> 20, 22, ..., 36 (stop included); "20,24,30" -> those; "25" -> [25]."""
    try:
        if ":" in text:
            parts = [float(x) for x in text.split(":")]
            if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
                raise ValueError
            start, stop, step = parts
            count = int(np.floor((stop - start) / step + 1e-9)) + 1
            rates = [round(start + k * step, 9) for k in range(count)]
        else:
            rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        rates = []
    if not rates or any(not r > 0 for r in rates):
        raise ValueError(f"bad rates {text!r}: write START:STOP:STEP (e.g. 20:36:2) or a list (20,24,28)")
    return rates


@dataclass
class CapacitySearch:
    """Bisection on rate. `passes(rate)` runs a benchmark at that rate and says if the SLOs held."""

    low: float
    high: float
    tolerance: float = 0.5
    max_probes: int = 12
    probes: list[tuple[float, bool]] = field(default_factory=list)

    def run(self, passes: Callable[[float], bool]) -> float | None:
        """The highest passing rate found (within `tolerance`), or None if even `low` fails.

        If `high` passes, the capacity is at least `high` and `high` is returned.
        """
        if not 0 < self.low < self.high:
            raise ValueError(f"need 0 < low < high, got low={self.low} high={self.high}")
        if not self._probe(passes, self.low):
            return None
        if self._probe(passes, self.high):
            return self.high
        good, bad = self.low, self.high
        while bad - good > self.tolerance and len(self.probes) < self.max_probes:
            mid = (good + bad) / 2
            if self._probe(passes, mid):
                good = mid
            else:
                bad = mid
        return good

    def _probe(self, passes: Callable[[float], bool], rate: float) -> bool:
        ok = bool(passes(rate))
        self.probes.append((rate, ok))
        return ok
