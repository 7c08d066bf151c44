"""Runs that stop once their P99 TTFT is certainly over a bound (block/sim/early_stop.py)."""

from __future__ import annotations

import numpy as np

from block.bench.results import build_results
from block.sim import simulate
from tests.sim.helpers import signature, small_config, small_workload


def p99_ttft(outcome: object) -> float:
    return build_results({}, outcome.records, outcome.duration_s, {})["summary"]["ttft_s"]["p99"]  # type: ignore[attr-defined]


def test_an_overloaded_run_gives_up_early_and_its_full_run_is_over_the_bound() -> None:
    reqs = small_workload(400, qps=60)  # far past three instances' capacity
    config = small_config(policy="llumnix")
    full = simulate(config, reqs)
    stopped = simulate(config, reqs, give_up_ttft_s=2.0)
    assert p99_ttft(full) > 2.0
    at = stopped.stats["gave_up_at_s"]
    assert at < float(reqs.arrival_s[-1])  # before the last arrival, and no drain after it
    assert stopped.stats["steps"] < full.stats["steps"]
    ttfts = np.array([r.ttft_s for r in full.records if r.ttft_s is not None])
    late = np.array([r.scheduled_s + 2.0 < at - 0.04 and r.ttft_s > 2.0 for r in full.records if r.ttft_s])
    assert late.sum() >= int(0.01 * len(ttfts)) + 2  # the full run had the lateness the watch saw


def test_a_run_within_the_bound_is_the_plain_run_bit_for_bit() -> None:
    reqs = small_workload(200, qps=8)
    for policy in ("block", "llumnix"):
        plain = simulate(small_config(policy=policy), reqs)
        watched = simulate(small_config(policy=policy), reqs, give_up_ttft_s=2.0)
        assert p99_ttft(plain) < 2.0 and "gave_up_at_s" not in watched.stats
        assert signature(watched) == signature(plain)
