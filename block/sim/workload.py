"""Which requests a simulated run replays: the same workload and arrivals `block bench` would send.

`lengths` says which output length the router plans with (the replica always generates the true one):
- `known`: the true length, as when clients fix it with max_tokens + ignore_eos (the paper's Block*);
- `estimated`: the length estimator's median on the sample's prompt text (free-length requests, Block);
- `quantile:Q`: the estimator's Q-quantile instead (plan pessimistically, e.g. quantile:0.9).
Estimates are batch-predicted once per workload and cached. `split: held-out` draws only prompts the
shipped length model never saw in training, so an estimate is as good as it would be on new traffic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from block.sim.requests import SimRequests, hashes_of
from block.workload import Sample, load_workload
from block.workload.arrivals import arrival_times, scale_trace
from block.workload.load import choose
from block.workload.priorities import priorities
from block.workload.sessions import DEFAULT_THINK_TIME_S, is_session_workload, session_plan

SPLITS = ("all", "held-out")


def parse_lengths(text: str) -> float | None:
    """The estimator quantile a `lengths` setting plans with; None for `known` (true lengths)."""
    t = text.strip().lower()
    if t == "known":
        return None
    if t in ("estimated", "median"):
        return 0.5
    kind, _, arg = t.partition(":")
    if kind in ("quantile", "q") and arg:
        try:
            q = float(arg)
        except ValueError:
            q = -1.0
        if 0.0 < q < 1.0:
            return q
    raise ValueError(f"lengths must be known, estimated or quantile:Q with 0 < Q < 1, got {text!r}")


@dataclass(frozen=True)
class WorkloadSpec:
    dataset: str = "sharegpt"  # any load_workload spec
    num_requests: int = 10_000
    process: str = "poisson"  # poisson | gamma | constant | trace (the dataset's own timestamps)
    burstiness: float = 1.0  # CV of gamma inter-arrival times
    seed: int = 0
    tokenizer: str = "llama3"
    max_model_len: int = 4096
    lengths: str = "known"  # known | estimated | quantile:Q (see the module doc)
    split: str = "all"  # all | held-out (prompts outside the length model's training split)
    length_model: str = "default"  # length estimator file, or the shipped one
    think_time_s: float = DEFAULT_THINK_TIME_S  # session workloads: mean wait after an answer (exponential)
    priority_share: float = 0.0  # share of high-priority requests (block.workload.priorities)

    def __post_init__(self) -> None:
        parse_lengths(self.lengths)
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")

    @property
    def plan_quantile(self) -> float | None:
        return parse_lengths(self.lengths)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=4)
def _samples(
    dataset: str, n: int, seed: int, tokenizer: str, max_model_len: int, split: str = "all"
) -> tuple[Sample, ...]:
    if split == "all":
        return tuple(load_workload(dataset, n, seed=seed, tokenizer=tokenizer, max_model_len=max_model_len))
    from block.length.split import is_held_out

    pool = load_workload(dataset, None, tokenizer=tokenizer, max_model_len=max_model_len)
    held = [s for s in pool if is_held_out(s.prompt)]
    if not held:
        raise ValueError(f"dataset {dataset!r} has no held-out prompt")
    # Drawn like load_workload draws: without replacement while the held-out part is large enough.
    return tuple(held[i] for i in choose(len(held), n, np.random.default_rng(seed)))


@lru_cache(maxsize=8)
def _planned(
    dataset: str, n: int, seed: int, tokenizer: str, max_model_len: int, split: str, q: float, model: str
) -> np.ndarray:
    """Planned output tokens per sample (sample order), from one batch prediction of all prompts."""
    from block.length import LengthEstimator, load_default_estimator

    samples = _samples(dataset, n, seed, tokenizer, max_model_len, split)
    est = load_default_estimator() if model == "default" else LengthEstimator.load(model)
    prompts = [s.prompt for s in samples]
    tokens = [s.prompt_tokens for s in samples]
    if q == 0.5:
        planned = est.predict_many(prompts, tokens)  # the median alone: only its trees run
    else:
        planned = est.predict_quantiles_many(prompts, (q,), tokens)[:, 0]
    # Free-length requests: an engine stops at the context's end, so a plan never goes past it.
    room = np.maximum(1, max_model_len - np.asarray(tokens, dtype=np.int64))
    return np.minimum(np.asarray(planned, dtype=np.int64), room)


def planned_tokens(spec: WorkloadSpec) -> np.ndarray | None:
    """What the router plans with per sample (sample order); None when it knows the true lengths."""
    q = spec.plan_quantile
    if q is None:
        return None
    s = spec
    return _planned(
        s.dataset, s.num_requests, s.seed, s.tokenizer, s.max_model_len, s.split, q, s.length_model
    )


def requests_for(spec: WorkloadSpec, qps: float) -> SimRequests:
    """The samples and arrivals `block bench` makes from the same settings (block.bench.runner)."""
    samples = _samples(
        spec.dataset, spec.num_requests, spec.seed, spec.tokenizer, spec.max_model_len, spec.split
    )
    prompts = np.fromiter((s.prompt_tokens for s in samples), dtype=np.int64, count=len(samples))
    outputs = np.fromiter((s.output_tokens for s in samples), dtype=np.int64, count=len(samples))
    plan = None
    if is_session_workload(samples):  # qps: sessions started per second (block.workload.sessions)
        plan = session_plan(samples, qps, spec.process, spec.burstiness, spec.seed, spec.think_time_s)
        arrivals = plan.not_before_s
    elif spec.process == "trace":
        stamps = [s.arrival_s for s in samples]
        if any(t is None for t in stamps):
            raise ValueError(f"process 'trace' needs a dataset with timestamps; {spec.dataset!r} has none")
        arrivals = scale_trace(stamps, None if np.isinf(qps) else qps)
    else:
        arrivals = arrival_times(len(samples), qps, spec.process, spec.burstiness, spec.seed)
    order = np.argsort(arrivals, kind="stable")  # trace stamps may be unsorted; Poisson ones are sorted
    planned = planned_tokens(spec)
    hashes = hashes_of(samples)
    classes = priorities(len(samples), spec.priority_share, spec.seed) if spec.priority_share else None
    return SimRequests(
        prompts[order],
        outputs[order],
        np.asarray(arrivals, dtype=np.float64)[order],
        None if planned is None else planned[order],
        prefix_hashes=None if hashes is None else [hashes[i] for i in order.tolist()],
        sessions=None if plan is None else plan.reordered(order),
        priorities=None if classes is None else classes[order],
    )
