"""The benchmark client, latency metrics, sweeps, capacity search and plots."""

from block.bench.client import BenchResult, run_benchmark
from block.bench.metrics import parse_slos, stats, summarize
from block.bench.record import RequestRecord
from block.bench.results import build_results

__all__ = [
    "BenchResult",
    "RequestRecord",
    "build_results",
    "parse_slos",
    "run_benchmark",
    "stats",
    "summarize",
]
