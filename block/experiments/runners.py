"""Choosing the runner for `--mode`."""

from __future__ import annotations

import importlib
from typing import Any

from block.experiments.plan import Runner
from block.experiments.sim_runner import SimRunner
from block.sim.executor import ExecutorSpec

# The live runner (emulated engines + router + block bench) implements plan.Runner in this module.
LIVE_RUNNER = "block.experiments.live_runner"


def get_runner(mode: str, workers: int = 2, executor: ExecutorSpec = ExecutorSpec(), **live: Any) -> Runner:
    """`executor`: where --mode sim runs execute; `live`: LiveSettings fields for --mode live
    (max_parallel, workload_overrides, ...)."""
    if mode == "sim":
        return SimRunner(workers, executor=executor)
    if mode == "live":
        try:
            module = importlib.import_module(LIVE_RUNNER)
        except ImportError as e:
            raise ValueError(f"--mode live is not available ({LIVE_RUNNER}: {e})") from None
        return module.LiveRunner(module.LiveSettings(**live))
    raise ValueError(f"unknown mode {mode!r}: choose sim or live")
