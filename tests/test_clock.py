"""`sleep_until` never returns before its deadline, on either event loop."""

from __future__ import annotations

import asyncio
import time

import pytest
import uvloop

from block.clock import sleep_until


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run])
def test_sleep_until_never_returns_early(run) -> None:  # noqa: ANN001
    async def main() -> list[float]:
        early = []
        for k in range(20):  # deadlines off the millisecond grid, where uvloop's timers round
            deadline = time.monotonic() + 0.0013 + k * 0.00017
            await sleep_until(deadline)
            early.append(deadline - time.monotonic())
        return early

    assert max(run(main())) <= 0


def test_sleep_until_reads_the_given_clock_until_the_deadline() -> None:
    readings = [0.0, 0.001, 0.002, 0.003, 0.004]
    clock = iter(readings)
    asyncio.run(sleep_until(0.003, lambda: next(clock)))
    assert next(clock) == 0.004  # returned at the first reading at the deadline, not before
