"""Where an instance's queue state comes from: the interface every state source implements.

A source is made per instance once it is detected there. `read()` fetches the instance's current state
(for its tracker's first snapshot, then at every refresh); a source that needs to hear about the
requests sent to the instance (the stock-vLLM one rebuilds the queue from them) overrides the
`RequestListener` methods and is registered with the instance's listeners.

A read may cost the instance: vLLM renders `/metrics` in the API server process that also streams every
response, and polling it every 20 ms measurably slows a small engine (`block realengine poll-cost`). A
source whose state is mostly the router's own record sets `read_period_s`: it is read that often, and at
the refreshes in between `recount()` rebuilds the state from what it heard, asking nothing.

A read also costs the router: on a large fleet, reading every instance every 20 ms is most of its event
loop (100 Block engines: 5,000 HTTP reads a second). The caller may therefore ask for a longer gap
between reads (`min_gap_s`, from the fleet's read budget). Between reads a source that can `recount`
does; one whose tracker needs nothing rebuilt (`tracker_keeps_up`: a Block engine's tracker folds in
the requests routed there since its snapshot and drops those that finished) is simply read less often.
"""

from __future__ import annotations

import time
from typing import ClassVar, NamedTuple

import aiohttp

from block.fleet.listeners import RequestListener
from block.replica import ReplicaConfig, Snapshot


class Reading(NamedTuple):
    snapshot: Snapshot
    step_end: float | None = None  # end of the step in flight, on the engine's clock (when it says)


class StateSource(RequestListener):
    name: ClassVar[str] = ""  # GET /instances "kind"
    reads: ClassVar[str] = ""  # GET /instances "state_source": what it reads
    accepts_expected_field: ClassVar[bool] = False  # the request body may carry expected_output_tokens
    # between reads, the tracker's own record (snapshot + routed since - finished) is the state: the
    # poller wakes only to read
    tracker_keeps_up: ClassVar[bool] = False

    def __init__(self, url: str, base_config: ReplicaConfig, read_period_s: float | None = None) -> None:
        """`base_config`: the engine settings to assume where the instance does not report them;
        `read_period_s`: seconds between reads of the instance (None: every refresh), for a source whose
        `recount` can fill in between."""
        self.url = url
        self.base_config = base_config
        self.read_period_s = read_period_s

    @classmethod
    async def detect(cls, session: aiohttp.ClientSession, url: str, timeout: float) -> bool | None:
        """Is the instance at `url` one of this kind? None: it could not tell now (try again later)."""
        raise NotImplementedError

    async def read(self, session: aiohttp.ClientSession, timeout: float) -> Reading:
        """The instance's state now. Raises aiohttp.ClientError, TimeoutError, OSError or ValueError."""
        raise NotImplementedError

    def close(self) -> None:
        """The instance is gone: let go of what reading it holds open (nothing by default)."""

    def recount(self, now: float) -> Reading | None:
        """The state rebuilt at `now` from the last read and what this source heard since, without
        asking the instance; None when it cannot (then every refresh reads)."""
        return None

    async def refresh(
        self, session: aiohttp.ClientSession, timeout: float, last_read_at: float, min_gap_s: float = 0.0
    ) -> tuple[Reading, bool]:
        """The state now, and whether the instance was asked for it: rebuilt from what this source heard
        (`recount`) while its last read, at `last_read_at` (monotonic), is younger than `read_period_s`
        or `min_gap_s` (whichever is longer); read otherwise. Raises as `read` does."""
        period = max(self.read_period_s or 0.0, min_gap_s)
        if period > 0.0 and time.monotonic() - last_read_at < period:  # not time to ask it yet
            reading = self.recount(time.monotonic())
            if reading is not None:
                return reading, False
        return await self.read(session, timeout), True
