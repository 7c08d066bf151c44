"""The simulated workload: columns of prompt length, output length and arrival time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from block.workload import Sample
from block.workload.arrivals import arrival_times
from block.workload.sessions import SessionPlan


@dataclass(frozen=True)
class SimRequests:
    """Requests sorted by arrival. `output_tokens` is what each replica generates; the router plans with
    `planned_tokens` when given (estimated lengths), else with the true lengths (the paper's ignore_eos)."""

    prompt_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64
    arrival_s: np.ndarray  # float64, non-decreasing
    planned_tokens: np.ndarray | None = None  # int64, >= 1; None: plan with output_tokens
    # each prompt's block hashes (Sample.prefix_hashes, at block.prefix.PREFIX_BLOCK_SIZE tokens per
    # block); None: no prompt has a prefix identity
    prefix_hashes: list[tuple[int, ...]] | None = None
    # Multi-turn sessions: a later turn arrives when the one before it finished plus its think time
    # (block.sim.sessions); its `arrival_s` is then only its session's start, the earliest it may come.
    sessions: SessionPlan | None = None

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if len(self.prompt_tokens) != n or len(self.output_tokens) != n:
            raise ValueError("prompt_tokens, output_tokens and arrival_s must have the same length")
        if self.planned_tokens is not None and len(self.planned_tokens) != n:
            raise ValueError("planned_tokens must have one entry per request")
        if self.prefix_hashes is not None and len(self.prefix_hashes) != n:
            raise ValueError("prefix_hashes must have one entry per request")
        if n and np.any(np.diff(self.arrival_s) < 0):
            raise ValueError("arrival_s must be sorted")
        if self.sessions is not None and len(self.sessions) != n:
            raise ValueError("sessions must have one entry per request")

    def __len__(self) -> int:
        return len(self.arrival_s)

    def head(self, n: int) -> SimRequests:
        """The first n requests (by arrival)."""
        planned = None if self.planned_tokens is None else self.planned_tokens[:n]
        hashes = None if self.prefix_hashes is None else self.prefix_hashes[:n]
        sessions = None if self.sessions is None else self.sessions.head(n)
        return SimRequests(
            self.prompt_tokens[:n], self.output_tokens[:n], self.arrival_s[:n], planned, hashes, sessions
        )

    @classmethod
    def from_samples(
        cls,
        samples: list[Sample],
        qps: float,
        process: str = "poisson",
        burstiness: float = 1.0,
        seed: int = 0,
    ) -> SimRequests:
        prompts = np.fromiter((s.prompt_tokens for s in samples), dtype=np.int64, count=len(samples))
        outputs = np.fromiter((s.output_tokens for s in samples), dtype=np.int64, count=len(samples))
        arrivals = arrival_times(len(samples), qps, process, burstiness, seed)
        return cls(prompts, outputs, arrivals, prefix_hashes=hashes_of(samples))

    @classmethod
    def resampled(
        cls,
        samples: list[Sample],
        n: int,
        qps: float,
        process: str = "poisson",
        burstiness: float = 1.0,
        seed: int = 0,
    ) -> SimRequests:
        """n requests whose (prompt, output) pairs are drawn with replacement from `samples`:
        the dataset's joint length distribution at any scale, without loading n samples."""
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(samples), size=n)
        prompts = np.fromiter((s.prompt_tokens for s in samples), dtype=np.int64, count=len(samples))[idx]
        outputs = np.fromiter((s.output_tokens for s in samples), dtype=np.int64, count=len(samples))[idx]
        return cls(prompts, outputs, arrival_times(n, qps, process, burstiness, seed))


def hashes_of(samples: list[Sample]) -> list[tuple[int, ...]] | None:
    """The samples' prefix hashes, or None when none has any."""
    hashes = [s.prefix_hashes for s in samples]
    return hashes if any(hashes) else None
