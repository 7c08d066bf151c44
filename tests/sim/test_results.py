"""The simulator's results files are `block bench` results files; capacity and CLI parsing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import typer

from block.bench.results import build_results, load_results
from block.sim.batch import SimRun, execute, run_many
from block.sim.capacity import capacity
from block.sim.cli import parse_rates
from block.sim.table import capacities, comparison_table
from block.sim.workload import WorkloadSpec, requests_for
from tests.sim.helpers import small_config

WORKLOAD = WorkloadSpec("sharegpt", 150, seed=3)


def test_results_file_has_the_bench_schema(tmp_path: Path) -> None:
    run = SimRun(small_config(policy="llumnix"), WORKLOAD, qps=12.0, keep_itl=True)
    res = execute(run, requests_for(WORKLOAD, 12.0), tmp_path)
    data = load_results(res.path)
    reference = build_results({}, [], 1.0, {"ttft_p99": 3.0})  # the schema's keys, from the bench itself
    assert set(data) == set(reference)
    assert set(data["summary"]) == set(reference["summary"])
    assert set(data["requests"][0]) == set(
        reference["requests"][0] if reference["requests"] else data["requests"][0]
    )
    s = data["summary"]
    for metric in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
        assert set(s[metric]) == {"mean", "p50", "p90", "p99"} and s[metric]["p99"] is not None
    assert s["completed"] == 150 and s["failed"] == 0
    assert (
        data["config"]["policy"] == "llumnix"
        and data["config"]["qps"] == 12.0
        and data["config"]["mode"] == "sim"
    )
    assert data["config"]["label"] == "llumnix" and data["config"]["num_requests"] == 150
    assert "ttft_p99" in s["slo_met"]
    r0 = data["requests"][0]
    assert r0["itl_s"] and r0["instance"].startswith("sim-") and r0["status"] == 200


def test_itl_lists_are_dropped_from_files_but_not_from_the_summary(tmp_path: Path) -> None:
    run = SimRun(small_config(), WORKLOAD, qps=12.0)
    data = load_results(execute(run, requests_for(WORKLOAD, 12.0), tmp_path).path)
    assert all(r["itl_s"] == [] for r in data["requests"])
    assert data["summary"]["itl_s"]["mean"] is not None


def test_a_scaled_down_policy_comparison_runs_in_parallel(tmp_path: Path) -> None:
    runs = [
        SimRun(small_config(policy=p), WORKLOAD, q, label=p)
        for p in ("block", "round-robin")
        for q in (8, 30)
    ]
    results = run_many(runs, tmp_path, workers=2)
    assert [r.run.name for r in results] == [
        "block_qps8",
        "block_qps30",
        "round-robin_qps8",
        "round-robin_qps30",
    ]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(f"{r.run.name}.json" for r in results)
    caps = capacities(results)
    assert set(caps) == {"block", "round-robin"}
    assert comparison_table(results).row_count == 4


def test_capacity_interpolates_in_log_latency() -> None:
    cap = capacity([(20, 0.5), (22, 1.0), (24, 9.0), (26, 30.0)], slo_s=3.0)
    expected = 22 + 2 * (math.log(3) - math.log(1)) / (math.log(9) - math.log(1))
    assert cap.qps == pytest.approx(expected) and cap.bound == ""
    assert str(capacity([(20, 0.5), (22, 1.0)])) == ">=22.0"
    assert str(capacity([(20, 5.0), (22, 9.0)])) == "<20.0"
    assert capacity([(20, 1.0), (22, 4.0), (24, 2.0)]).qps < 22  # a pass after a failure is ignored
    assert capacity([(20, 1.0), (22, None)]).qps == 20


def test_rate_parsing() -> None:
    assert parse_rates("20:36:2") == [20, 22, 24, 26, 28, 30, 32, 34, 36]
    assert parse_rates("20,28") == [20, 28] and parse_rates("7.5") == [7.5]
    with pytest.raises(typer.BadParameter):
        parse_rates("36:20:2")


def test_resume_reads_back_identical_runs_and_reruns_changed_ones(tmp_path: Path) -> None:
    runs = [SimRun(small_config(), WORKLOAD, 10.0)]
    first = run_many(runs, tmp_path, workers=1)
    stamp = first[0].path.stat().st_mtime_ns
    again = run_many(runs, tmp_path, workers=1, resume=True)
    assert again[0].summary == first[0].summary and again[0].path.stat().st_mtime_ns == stamp
    changed = [SimRun(small_config(noise=0.0), WORKLOAD, 10.0)]
    rerun = run_many(changed, tmp_path, workers=1, resume=True)
    assert rerun[0].path.stat().st_mtime_ns != stamp
