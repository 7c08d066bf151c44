"""How much of the demo this machine can carry, decided before any server starts.

Every streamed token costs CPU in an engine, a router and the client, so the demo's CPU need grows with
the request rate it sends. At its full size (three clusters of four engines at 17 req/s each, side by
side) it keeps about FULL_DEMO_CORES cores busy; on a machine already busy with other work the engines
then fall behind real time and every policy looks the same. So the demo measures how busy the machine is
now (the 1-minute load average and a one-second sample of /proc/stat, whichever says busier) and picks
the largest of a few shapes whose need fits in what is left. The shapes keep the load per engine (and so
how close to capacity each cluster runs, where the policies differ): fewer engines get a proportionally
lower rate.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from block.machine_load import cpu_busy, cpu_times, load_average

# Cores the full demo keeps busy (engines, routers and client together). Measured on the 2-core
# development machine (the demo prints its own use): the smallest shape, a sixth of the full token rate,
# used 0.24 cores; the full demo on a busy machine got 1.0 and fell behind.
FULL_DEMO_CORES = 1.4
HEADROOM = 0.8  # use at most this share of the cores left: the lag a busy scheduler adds comes first


@dataclass(frozen=True)
class Shape:
    instances: int  # engines per cluster
    qps_per_instance: float
    sequential: bool  # one cluster at a time instead of all together
    duration_share: float  # of the demo's sending time, per cluster

    def cores(self, policies: int, full_instances: int = 4) -> float:
        """The shape's CPU need, scaled from the full demo's by the token rate it runs at once."""
        at_once = 1 if self.sequential else policies
        return FULL_DEMO_CORES * (self.instances * at_once) / (full_instances * 3)

    def describe(self) -> str:
        how = "one cluster after another" if self.sequential else "all clusters at once"
        qps = self.instances * self.qps_per_instance
        return f"{self.instances} engines per cluster at {qps:g} req/s, {how}"


# Largest first. 17 req/s into 4 engines is near the clusters' capacity (found with `block simulate`).
SHAPES = (
    Shape(4, 4.25, False, 1.0),
    Shape(3, 4.25, False, 1.0),
    Shape(2, 4.25, False, 1.0),
    Shape(2, 4.25, True, 0.36),  # three short runs (20 s of sending each): about 1.5x the usual time
)


@dataclass(frozen=True)
class MachineLoad:
    cpus: int
    load1: float  # 1-minute load average
    busy_share: float | None  # share of all CPU time busy over the last sample, None without /proc

    @property
    def busy_cores(self) -> float:
        sampled = 0.0 if self.busy_share is None else self.busy_share * self.cpus
        return max(self.load1, sampled)

    @property
    def free_cores(self) -> float:
        return max(0.0, self.cpus - self.busy_cores)


def measure_load(sample_s: float = 1.0) -> MachineLoad:
    """How busy the machine is now, before the demo starts anything."""
    before = cpu_times()
    time.sleep(sample_s)
    return MachineLoad(os.cpu_count() or 1, load_average(), cpu_busy(before, cpu_times()))


def pick_shape(load: MachineLoad, policies: int) -> tuple[Shape, str]:
    """The largest shape whose CPU need fits what is free, and a sentence that explains the choice."""
    budget = load.free_cores * HEADROOM
    seen = (
        f"machine: {load.cpus} cores, load average {load.load1:.2f}"
        + ("" if load.busy_share is None else f", {load.busy_share:.0%} busy just now")
        + f"; about {load.free_cores:.1f} cores free"
    )
    for shape in SHAPES:
        if shape.cores(policies) <= budget:
            if shape == SHAPES[0]:
                return shape, f"{seen}: running the full demo ({shape.describe()})"
            return shape, (
                f"{seen}; the full demo needs about {SHAPES[0].cores(policies):.1f}, so it is scaled down "
                f"to {shape.describe()} (the same load per engine)"
            )
    shape = SHAPES[-1]
    return shape, (
        f"{seen}; even the smallest demo ({shape.describe()}, about {shape.cores(policies):.1f} cores) "
        "may not keep real time here: the lag check after the run will say"
    )
