"""What one request must meet: a TTFT and an E2E target (either may be absent) and a priority."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Target:
    arrived: float  # when the request arrived (the caller's clock)
    ttft_s: float | None  # first token at most this long after arrival; None: no TTFT target
    e2e_s: float | None  # last token at most this long after arrival; None: no E2E target
    priority: int = 0  # higher is more important

    @property
    def bounded(self) -> bool:
        """Does admission apply at all? A request without any target is always admitted."""
        return self.ttft_s is not None or self.e2e_s is not None

    @property
    def expires_at(self) -> float:
        """A request still held then cannot meet its target any more: it is rejected."""
        limits = [t for t in (self.ttft_s, self.e2e_s) if t is not None]
        return self.arrived + min(limits) if limits else float("inf")

    def met_by(self, ttft_s: float | None, e2e_s: float | None) -> bool:
        """Did a request with these latencies (from arrival; None: it failed) meet the target?"""
        if e2e_s is None:
            return False
        if self.ttft_s is not None and (ttft_s is None or ttft_s > self.ttft_s):
            return False
        return self.e2e_s is None or e2e_s <= self.e2e_s
