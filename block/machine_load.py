"""How busy the whole machine is (all processes, other users included), from /proc/stat and the load
average. Live runs record it beside their timings: near 1.0 the timings are suspect; the demo reads it
before it starts to pick a size that fits."""

from __future__ import annotations

import os
from pathlib import Path

CpuTimes = tuple[float, float]  # (busy, total) jiffies since boot


def cpu_times() -> CpuTimes:
    """(busy, total) jiffies of the whole machine from /proc/stat; (0, 0) where there is none."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cpu_busy(before: CpuTimes, after: CpuTimes) -> float | None:
    """Share of the machine's CPU time that was busy between two cpu_times() readings (3 decimals);
    None when no time passed or there is no /proc/stat."""
    total = after[1] - before[1]
    return None if total <= 0 else round((after[0] - before[0]) / total, 3)


def load_average() -> float:
    """The 1-minute load average; 0.0 where the system has none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0
