"""The order in which simulated requests arrive: fixed up front, or released turn by turn for sessions.

Open-loop workloads know every arrival before the run (`InOrder`). A session workload does not: a later
turn arrives when the turn before it has finished plus its think time (block.workload.sessions), so the
simulator asks `SessionTurns` for the next arrival and tells it of every finish. The event loop is
unchanged otherwise: it routes the earliest pending arrival once every step ending before it completed.
"""

from __future__ import annotations

import heapq

from block.workload.sessions import SessionPlan


class InOrder:
    """Requests 0..n-1 at their precomputed (sorted) arrival times."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pos = 0

    def peek(self) -> int:
        """The index of the next request to arrive, -1 when none is left."""
        return self.pos if self.pos < self.n else -1

    def pop(self) -> None:
        self.pos += 1


class SessionTurns:
    """First turns at their session's start; each later turn once released by its predecessor's end.

    `arrivals` (the run's list of arrival times, one per request) is filled in as turns are released.
    Equal times arrive in index order.
    """

    def __init__(self, plan: SessionPlan, arrivals: list[float]) -> None:
        self.next_turn = plan.next_turn.tolist()
        self.think_s = plan.think_s.tolist()
        self.arrivals = arrivals
        self.pending = [(arrivals[i], i) for i in plan.first_turns().tolist()]
        heapq.heapify(self.pending)

    def peek(self) -> int:
        return self.pending[0][1] if self.pending else -1

    def pop(self) -> None:
        heapq.heappop(self.pending)

    def release_after(self, i: int, at: float) -> float | None:
        """Request i ended (finished, or was rejected) at `at`: its session's next turn arrives after the
        think time. Returns that arrival time, None when i was its session's last turn."""
        j = self.next_turn[i]
        if j < 0:
            return None
        t = at + self.think_s[j]
        self.arrivals[j] = t
        heapq.heappush(self.pending, (t, j))
        return t
