"""What an experiment asks for: a list of runs (policy x rate x cluster config), independent of mode.

An experiment builds `RunSpec`s and hands them to a `Runner`. The simulator runner (sim_runner.py)
executes them in virtual time; a live runner (emulated engines + router + `block bench`) implements the
same protocol, writing the same results files, so every experiment works in both modes unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from block.fleet.engine_spec import EngineSpec
from block.sim.batch import run_name
from block.sim.capacity import PAPER_SLO_S
from block.sim.workload import WorkloadSpec


@dataclass(frozen=True)
class RunSpec:
    policy: str
    qps: float
    label: str = ""  # the variant's name in tables and plots (default: the policy)
    group: str = ""  # a grouping key (a Table 2 row); runs of one group are compared together
    instances: int = 12
    profile: str = "llama-2-7b-a30"
    # engine knobs; None: the profile's engine_defaults
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    num_gpu_blocks: int | None = None
    # vLLM V1's prefix caching; off: the paper's setting (vLLM 0.7.2 had it off), for every paper experiment
    prefix_caching: bool = False
    # the ceiling of prefix caching instead (block/replica/ceiling_cache.py; sim only)
    prefix_ceiling: bool = False
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    noise: float = 0.03  # relative std of step times (the emulator's default)
    stall_probability: float = 0.001
    seed: int = 0
    slos: dict[str, float] = field(default_factory=lambda: {"ttft_p99": PAPER_SLO_S})
    # A mixed fleet: one engine (profile and settings over the knobs above) per instance; () is
    # `instances` copies of `profile`.
    fleet: tuple[EngineSpec, ...] = ()
    # SLO-aware admission in front of the policy (block/admission): off | queue | reject; the target is
    # slos["ttft"] (and slos["e2e"]) when given, else 3 s.
    admission: str = "off"

    @property
    def name(self) -> str:
        """The results file's stem, unique within an experiment."""
        return run_name(self.group, self.display, self.qps)

    @property
    def display(self) -> str:
        return self.label or self.policy


@dataclass(frozen=True)
class RunOutput:
    spec: RunSpec
    path: Path  # its results file (block bench schema)
    summary: dict[str, Any]  # the file's summary section
    extra: dict[str, Any] = field(default_factory=dict)  # runner-specific (simulator work counters, ...)


class Runner(Protocol):
    mode: str  # "sim" or "live"

    def run(
        self, specs: Sequence[RunSpec], out_dir: Path, on_done: Callable[[RunOutput], None] | None = None
    ) -> list[RunOutput]:
        """Execute every spec, writing `out_dir/{spec.name}.json`; outputs in the order of `specs`."""
        ...
