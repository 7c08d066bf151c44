"""Multi-turn sessions: when each turn of a session workload may be sent.

A session workload lists its Samples session by session, turns in order (`Sample.session`, `Sample.turn`).
Sessions start at the arrival process's times (`--qps` is then the rate at which new sessions start); turn
k + 1 is sent when turn k's answer has finished plus a think time, exponential with mean `--think-time`.
The start of a session is known up front, a later turn's send time only once the turn before it ends, so
the benchmark client and the simulator both release turns from the same `SessionPlan` (closed loop).
Think times are drawn up front, seeded, so the simulator and a live run wait the same after each answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from block.workload.arrivals import arrival_times
from block.workload.sample import Sample

DEFAULT_THINK_TIME_S = 5.0
_THINK_SEED = 0x5E55  # think times draw from their own stream: arrivals stay those of `seed`


@dataclass(frozen=True)
class SessionPlan:
    """Per request: the earliest it may be sent, the think time before it and the turn that follows it."""

    not_before_s: np.ndarray  # float64: its session's start (a later turn also waits for the one before)
    think_s: np.ndarray  # float64: wait after the previous turn's answer; 0 for first turns
    next_turn: np.ndarray  # int64: index of the session's next turn, -1 after the last

    def __len__(self) -> int:
        return len(self.next_turn)

    def first_turns(self) -> np.ndarray:
        """Indices of the requests no other request precedes (each session's first turn)."""
        return np.flatnonzero(_is_first(self.next_turn))

    def chain(self, first: int) -> list[int]:
        """The indices of a session's turns in order, from its first turn."""
        out = [first]
        while (j := int(self.next_turn[out[-1]])) >= 0:
            out.append(j)
        return out

    def head(self, n: int) -> SessionPlan:
        """The plan of the first n requests (turns after them are cut off)."""
        nxt = self.next_turn[:n]
        return SessionPlan(self.not_before_s[:n], self.think_s[:n], np.where(nxt < n, nxt, -1))

    def reordered(self, order: np.ndarray) -> SessionPlan:
        """The plan for the requests taken in `order` (request k of the result is request order[k])."""
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        nxt = self.next_turn[order]
        return SessionPlan(
            self.not_before_s[order], self.think_s[order], np.where(nxt >= 0, position[nxt], -1)
        )


def is_session_workload(samples: Sequence[Sample]) -> bool:
    return any(s.session is not None for s in samples)


def session_plan(
    samples: Sequence[Sample],
    qps: float,
    process: str = "poisson",
    burstiness: float = 1.0,
    seed: int = 0,
    think_time_s: float = DEFAULT_THINK_TIME_S,
) -> SessionPlan:
    """Sessions starting at `qps` per second; each turn after the first waits for its predecessor."""
    if process == "trace":
        raise ValueError("--process trace needs a dataset with timestamps; a session workload has none")
    if not think_time_s >= 0:
        raise ValueError(f"think time must be >= 0 s, got {think_time_s}")
    n = len(samples)
    session_of = np.empty(n, dtype=np.int64)  # 0, 1, ... in order of first appearance
    next_turn = np.full(n, -1, dtype=np.int64)
    last_of: dict[object, int] = {}
    for i, s in enumerate(samples):
        key = ("single", i) if s.session is None else s.session
        prev = last_of.get(key)
        if prev is None:
            session_of[i] = len(last_of)
        else:
            if s.turn <= samples[prev].turn:
                raise ValueError(f"session {s.session}: turn {s.turn} listed after turn {samples[prev].turn}")
            session_of[i] = session_of[prev]
            next_turn[prev] = i
        last_of[key] = i
    starts = arrival_times(len(last_of), qps, process, burstiness, seed)
    rng = np.random.default_rng([seed, _THINK_SEED])
    think = rng.exponential(think_time_s, size=n) if think_time_s > 0 else np.zeros(n)
    think[_is_first(next_turn)] = 0.0
    return SessionPlan(starts[session_of], think, next_turn)


def _is_first(next_turn: np.ndarray) -> np.ndarray:
    later = np.zeros(len(next_turn), dtype=bool)
    later[next_turn[next_turn >= 0]] = True
    return ~later
