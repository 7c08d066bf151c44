"""One benchmark run from CLI settings: load the workload, make arrivals, run, build the results."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np

from block.bench.client import BenchResult, run_benchmark
from block.bench.record import RequestRecord
from block.bench.results import build_results
from block.workload import Sample, arrival_times, load_workload, scale_trace
from block.workload.sessions import DEFAULT_THINK_TIME_S, SessionPlan, is_session_workload, session_plan


@dataclass
class BenchSettings:
    url: str
    dataset: str = "sharegpt"
    num_requests: int = 1000
    qps: float = float("inf")
    process: str = "poisson"  # poisson | gamma | constant | trace
    burstiness: float = 1.0
    seed: int = 0
    endpoint: str = "completions"
    model: str | None = None
    free_length: bool = False
    tokenizer: str = "llama3"
    max_model_len: int = 4096
    timeout_s: float = 3600.0
    max_concurrency: int | None = None
    label: str | None = None
    policy: str | None = None
    slos: dict[str, float] = field(default_factory=dict)
    think_time_s: float = DEFAULT_THINK_TIME_S  # session workloads: mean wait after an answer


def load_samples(s: BenchSettings) -> list[Sample]:
    return load_workload(
        s.dataset,
        num_requests=s.num_requests,
        seed=s.seed,
        tokenizer=s.tokenizer,
        max_model_len=s.max_model_len,
    )


def make_sessions(s: BenchSettings, samples: list[Sample], qps: float) -> SessionPlan | None:
    """For a session workload, when each turn is due (`qps` sessions start per second); else None."""
    if not is_session_workload(samples):
        return None
    return session_plan(samples, qps, s.process, s.burstiness, s.seed, s.think_time_s)


def make_arrivals(s: BenchSettings, samples: list[Sample], qps: float) -> np.ndarray:
    """Send times; for a session workload its sessions' starts (later turns also wait, see make_sessions)."""
    sessions = make_sessions(s, samples, qps)
    if sessions is not None:
        return sessions.not_before_s
    if s.process == "trace":
        stamps = [x.arrival_s for x in samples]
        if any(t is None for t in stamps):
            raise ValueError(f"--process trace needs a dataset with timestamps; {s.dataset!r} has none")
        return scale_trace(stamps, None if np.isinf(qps) else qps)
    return arrival_times(len(samples), qps, s.process, s.burstiness, s.seed)


def config_of(s: BenchSettings, qps: float, model: str, interrupted: bool, started_at: datetime) -> dict:
    """The run's settings as saved with its results; `started_at`: when the run began sending."""
    config = asdict(s)
    config.pop("slos")
    config.update(
        qps=qps,
        model=model,
        ignore_eos=not s.free_length,
        interrupted=interrupted,
        started_at=started_at.isoformat(timespec="seconds"),
    )
    return config


def run_once(
    s: BenchSettings,
    samples: list[Sample],
    qps: float,
    on_done: Callable[[RequestRecord], None] | None = None,
) -> tuple[dict, BenchResult]:
    """Run the benchmark at `qps`; Ctrl-C stops sending and keeps what completed."""
    arrivals = make_arrivals(s, samples, qps)
    sessions = make_sessions(s, samples, qps)

    async def main() -> BenchResult:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def interrupt() -> None:
            stop.set()
            loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C aborts at once

        loop.add_signal_handler(signal.SIGINT, interrupt)
        try:
            return await run_benchmark(
                s.url,
                samples,
                arrivals,
                endpoint=s.endpoint,
                model=s.model,
                ignore_eos=not s.free_length,
                max_model_len=s.max_model_len,
                timeout_s=s.timeout_s,
                max_concurrency=s.max_concurrency,
                on_done=on_done,
                stop=stop,
                sessions=sessions,
            )
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    started_at = datetime.now(UTC)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        result = runner.run(main())
    config = config_of(s, qps, result.model, result.interrupted, started_at)
    return build_results(config, result.records, result.duration_s, s.slos), result


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio works too
        return None
    return uvloop.new_event_loop


__all__ = [
    "BenchSettings",
    "RequestRecord",
    "config_of",
    "load_samples",
    "make_arrivals",
    "make_sessions",
    "run_once",
]
