"""Every experiment produces its files at a tiny scale, in sim mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from block.experiments import config_search, main, prediction, sim_vs_live
from block.experiments.config_search import ConfigSearchArgs, Row
from block.experiments.plan import RunSpec
from block.experiments.runners import get_runner
from block.experiments.sim_runner import SimRunner, to_sim_run
from block.sim.config import SimConfig
from block.sim.simulator import simulate
from block.sim.workload import WorkloadSpec, requests_for


def test_main_writes_results_plot_and_report(tmp_path: Path) -> None:
    args = main.MainArgs(policies=["block", "round-robin"], rates=[10.0, 40.0], num_requests=150, instances=3)
    data = main.run(args, SimRunner(workers=2), tmp_path)
    runs = tmp_path / "runs"
    assert {p.name for p in runs.glob("*_qps*.json")} == {
        "block_qps10.json",
        "block_qps40.json",
        "round-robin_qps10.json",
        "round-robin_qps40.json",
    }
    assert (runs / "capacity_block.json").is_file()
    assert (tmp_path / "figure6.png").stat().st_size > 10_000
    report = (tmp_path / "report.md").read_text()
    assert "Capacity" in report and "block / policy" in report and "paper QPS" in report
    assert set(data["capacity"]) == {"block", "round-robin"}


def test_config_search_with_pilots(tmp_path: Path) -> None:
    rows = [
        Row("48x512", max_num_seqs=48, max_num_batched_tokens=512),
        Row("24x512", max_num_seqs=24, max_num_batched_tokens=512),
    ]
    args = ConfigSearchArgs(
        policies=["block", "round-robin"], rows=rows, num_requests=120, instances=2, fractions=(0.5, 1.2)
    )
    data = config_search.run(args, SimRunner(workers=2), tmp_path)
    assert set(data) == {"48x512", "24x512"}
    assert len(list((tmp_path / "pilots").glob("*.json"))) == 2
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2 * 2 * 2
    assert "block / round-robin" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "table2_48x512.png").is_file()


def test_prediction_reports_errors_and_best_instance_accuracy(tmp_path: Path) -> None:
    args = prediction.PredictionArgs(qps=8.0, num_requests=150, instances=3, sample_rate=0.1)
    result = prediction.run_sim(args, tmp_path)
    assert result["routed"]["requests"] == 150
    assert 0 <= result["routed"]["e2e"]["mean_abs_rel"] < 0.5
    assert result["sampled"]["decisions"] > 0
    assert 0 <= result["sampled"]["best_instance_accuracy"] <= 1
    assert 0 <= result["sampled"]["best_instance_accuracy_exact"] <= 1
    assert result["sampled"]["mean_regret_e2e"] >= 0
    assert (tmp_path / "figure5.png").is_file() and (tmp_path / "report.md").is_file()
    samples = json.loads((tmp_path / "prediction.json").read_text())["samples"]
    assert samples and all(r["exact_replay_e2e"] > 0 for s in samples for r in s["instances"])


def test_prediction_judged_by_whole_cluster_forks(tmp_path: Path) -> None:
    args = prediction.PredictionArgs(qps=8.0, num_requests=100, instances=2, sample_rate=0.05, fork=True)
    fork = prediction.run_sim(args, tmp_path)["sampled"]["fork"]
    assert 0 <= fork["best_instance_accuracy"] <= 1 and 0 <= fork["present_oracle_accuracy"] <= 1
    assert fork["mean_regret_e2e"] >= 0
    samples = json.loads((tmp_path / "prediction.json").read_text())["samples"]
    assert samples and all(r["fork_e2e"] > 0 for s in samples for r in s["instances"])
    assert "whole-cluster reruns" in (tmp_path / "report.md").read_text()
    assert fork["runner_up_gap_median"] >= 0


def test_shadow_round_robin_forecasts_every_instance_but_routes_round_robin(tmp_path: Path) -> None:
    reqs = requests_for(WorkloadSpec("sharegpt", 60, "poisson", 1.0, 0), 6.0)
    policies = ("round-robin", "shadow-round-robin")
    plain, shadow = (simulate(SimConfig(instances=3, policy=p, noise=0.03), reqs) for p in policies)
    assert [r.instance for r in shadow.records] == [r.instance for r in plain.records]
    assert shadow.stats["forecasts"] == 3 * len(reqs) and plain.stats["forecasts"] == 0
    args = prediction.PredictionArgs(qps=6.0, num_requests=60, instances=3, policy="shadow-round-robin")
    assert prediction.run_sim(args, tmp_path)["routed"]["requests"] == 60


def test_prediction_with_anticipated_arrivals_lowers_the_forecasts_bias(tmp_path: Path) -> None:
    bias = []
    for anticipate in (False, True):
        args = prediction.PredictionArgs(
            qps=9.0, num_requests=300, instances=3, sample_rate=0.0, anticipate_arrivals=anticipate
        )
        bias.append(prediction.run_sim(args, tmp_path / str(anticipate))["routed"]["e2e"]["mean_signed_rel"])
    assert bias[0] < 0  # later arrivals are unseen: forecasts run fast
    assert abs(bias[1]) < abs(bias[0])


def test_sim_vs_live_compares_what_both_modes_wrote(tmp_path: Path) -> None:
    args = sim_vs_live.SimVsLiveArgs(policies=["round-robin"], rates=[5.0], num_requests=60, instances=2)
    sim_vs_live.run(args, SimRunner(workers=1), tmp_path)
    # stand in for the live runner: the same file, so the comparison is exact
    live = tmp_path / "runs-live"
    live.mkdir()
    for f in (tmp_path / "runs-sim").glob("*.json"):
        (live / f.name).write_text(f.read_text())
    text, data = sim_vs_live.compare(tmp_path)
    assert data and all(e["ttft_s"]["diff"] == 0 for e in data.values())
    assert "Within 10%: 2/2" in text


def test_sim_vs_live_takes_a_session_workload() -> None:
    args = sim_vs_live.SimVsLiveArgs(dataset="sharegpt-chat", think_time_s=2.0, rates=[1.0])
    specs = sim_vs_live.plan(args)
    assert {s.workload.dataset for s in specs} == {"sharegpt-chat"}
    assert {s.workload.think_time_s for s in specs} == {2.0}


def test_specs_map_onto_the_simulator() -> None:
    spec = RunSpec("llumnix", 25.0, label="L", group="g", max_num_seqs=24)
    run = to_sim_run(spec)
    assert run.name == spec.name == "g_L_qps25"
    assert run.config.policy == "llumnix" and run.config.max_num_seqs == 24


def test_live_mode_fails_clearly_until_a_live_runner_exists() -> None:
    try:
        import block.experiments.live_runner  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="live"):
            get_runner("live")
    else:
        assert get_runner("live").mode == "live"
