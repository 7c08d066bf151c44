"""Runs experiment specs in the cluster simulator (`--mode sim`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from block.experiments.plan import RunOutput, RunSpec
from block.sim.batch import RunResult, SimRun, run_many
from block.sim.capacity import PAPER_SLO_S
from block.sim.config import SimConfig
from block.sim.executor import ExecutorSpec


def to_sim_run(spec: RunSpec) -> SimRun:
    config = SimConfig(
        instances=spec.instances,
        profile=spec.profile,
        policy=spec.policy,
        max_num_seqs=spec.max_num_seqs,
        max_num_batched_tokens=spec.max_num_batched_tokens,
        num_gpu_blocks=spec.num_gpu_blocks,
        max_model_len=spec.workload.max_model_len,
        prefix_caching=spec.prefix_caching,
        prefix_ceiling=spec.prefix_ceiling,
        noise=spec.noise,
        stall_probability=spec.stall_probability,
        seed=spec.seed,
        record_itl=spec.workload.num_requests <= 100_000,
        fleet=spec.fleet,
        admission=spec.admission,
        admission_ttft_s=spec.slos.get("ttft", PAPER_SLO_S),
        admission_e2e_s=spec.slos.get("e2e"),
    )
    return SimRun(config, spec.workload, spec.qps, label=spec.display, group=spec.group, slos=dict(spec.slos))


class SimRunner:
    mode = "sim"

    def __init__(
        self, workers: int = 2, resume: bool = True, executor: ExecutorSpec = ExecutorSpec()
    ) -> None:
        self.workers = workers
        self.executor = executor  # local processes (`workers` of them) or Ray tasks
        self.resume = resume  # reuse results files written by identical runs (an interrupted sweep goes on)

    def run(
        self, specs: Sequence[RunSpec], out_dir: Path, on_done: Callable[[RunOutput], None] | None = None
    ) -> list[RunOutput]:
        by_run: dict[str, RunSpec] = {}
        runs = []
        for spec in specs:
            run = to_sim_run(spec)
            by_run[run.name] = spec
            runs.append(run)

        def output(r: RunResult) -> RunOutput:
            return RunOutput(by_run[r.run.name], r.path, r.summary, {"sim": r.stats})

        hook = None if on_done is None else lambda r: on_done(output(r))
        results = run_many(runs, out_dir, self.workers, hook, resume=self.resume, executor=self.executor)
        return [output(r) for r in results]
