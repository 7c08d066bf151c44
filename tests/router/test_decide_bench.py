"""`block router decide-bench`: the interface the checks read, on a small fleet."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from block.cli import app
from block.sim.bench import bench_cases


def test_decide_bench_json() -> None:
    result = CliRunner().invoke(
        app, ["router", "decide-bench", "--instances", "6", "--waiting", "8", "--decisions", "4", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["same_choice"] == 1.0
    assert 0 < report["p50_ms"] <= report["p99_ms"]
    assert 1 <= report["forecasts_per_decision"] <= 6


def test_simulate_bench_has_case_c() -> None:
    c = bench_cases(quick=False)["c"]
    assert (c.policy, c.instances, c.num_requests, c.goal_s) == ("block", 1000, 1_000_000, 600.0)
