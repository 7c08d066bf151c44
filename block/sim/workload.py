"""Which requests a simulated run replays: the same workload and arrivals `block bench` would send."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from block.sim.requests import SimRequests
from block.workload import Sample, load_workload
from block.workload.arrivals import arrival_times, scale_trace


@dataclass(frozen=True)
class WorkloadSpec:
    dataset: str = "sharegpt"  # any load_workload spec
    num_requests: int = 10_000
    process: str = "poisson"  # poisson | gamma | constant | trace (the dataset's own timestamps)
    burstiness: float = 1.0  # CV of gamma inter-arrival times
    seed: int = 0
    tokenizer: str = "llama3"
    max_model_len: int = 4096

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=4)
def _samples(dataset: str, n: int, seed: int, tokenizer: str, max_model_len: int) -> tuple[Sample, ...]:
    return tuple(load_workload(dataset, n, seed=seed, tokenizer=tokenizer, max_model_len=max_model_len))


def requests_for(spec: WorkloadSpec, qps: float) -> SimRequests:
    """The samples and arrivals `block bench` makes from the same settings (block.bench.runner)."""
    samples = _samples(spec.dataset, spec.num_requests, spec.seed, spec.tokenizer, spec.max_model_len)
    prompts = np.fromiter((s.prompt_tokens for s in samples), dtype=np.int64, count=len(samples))
    outputs = np.fromiter((s.output_tokens for s in samples), dtype=np.int64, count=len(samples))
    if spec.process == "trace":
        stamps = [s.arrival_s for s in samples]
        if any(t is None for t in stamps):
            raise ValueError(f"process 'trace' needs a dataset with timestamps; {spec.dataset!r} has none")
        arrivals = scale_trace(stamps, None if np.isinf(qps) else qps)
    else:
        arrivals = arrival_times(len(samples), qps, spec.process, spec.burstiness, spec.seed)
    order = np.argsort(arrivals, kind="stable")  # trace stamps may be unsorted; Poisson ones are sorted
    return SimRequests(prompts[order], outputs[order], np.asarray(arrivals, dtype=np.float64)[order])
