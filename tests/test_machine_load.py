"""The one place that measures how busy the machine is."""

from __future__ import annotations

import time

from block.machine_load import cpu_busy, cpu_times, load_average


def test_cpu_busy_is_the_busy_share_of_the_time_between_two_readings() -> None:
    assert cpu_busy((100.0, 400.0), (130.0, 500.0)) == 0.3
    assert cpu_busy((100.0, 400.0), (100.0, 400.0)) is None  # no time passed: no share
    assert cpu_busy((0.0, 0.0), (0.0, 0.0)) is None  # no /proc/stat


def test_readings_of_this_machine_are_consistent() -> None:
    a = cpu_times()
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:  # keep one core busy a moment so the counters move
        pass
    b = cpu_times()
    assert 0.0 <= a[0] <= a[1] and b[1] >= a[1]
    share = cpu_busy(a, b)
    assert share is None or 0.0 <= share <= 1.0
    assert load_average() >= 0.0
