"""The live runner at a tiny scale: real engine and router processes, a few seconds of load."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from block.experiments import sim_vs_live
from block.experiments.live_runner import LiveRunner, LiveSettings, check_spec, requests_for
from block.experiments.plan import RunOutput, RunSpec
from block.experiments.runners import get_runner
from block.sim.workload import WorkloadSpec

TINY = WorkloadSpec("sharegpt", 20, "poisson", 1.0, 0, max_model_len=512)


def _spec(policy: str, qps: float = 10.0, **kw: object) -> RunSpec:
    return RunSpec(policy, qps, instances=2, profile="tiny-fast", workload=TINY, **kw)  # type: ignore[arg-type]


def test_two_policies_side_by_side_write_bench_schema_results(tmp_path: Path) -> None:
    specs = [_spec("round-robin"), _spec("block")]
    seen: list[RunOutput] = []
    runner = LiveRunner(LiveSettings(log_dir=tmp_path / "logs", start_timeout_s=60, request_timeout_s=60))
    outputs = runner.run(specs, tmp_path / "runs", seen.append)

    assert [o.spec for o in outputs] == specs and len(seen) == 2
    for o in outputs:
        data = json.loads(o.path.read_text())
        assert o.path.name == f"{o.spec.name}.json"
        assert {"schema_version", "config", "summary", "requests"} <= set(data)
        assert data["config"]["mode"] == "live" and data["config"]["policy"] == o.spec.policy
        assert data["summary"]["completed"] == 20 and data["summary"]["failed"] == 0
        # requests spread over both engines; the same arrivals went to both routers
        assert len(data["summary"]["instances"]) == 2
        live = o.extra["live"]
        assert live["parallel_clusters"] == 2 and live["engine_steps"] > 0
        # judged from the engines' lag during the batch and the client's send times (one verdict)
        validity = data["config"]["validity"]
        assert validity["valid"] in (True, False) and validity["steps"] > 0
        assert validity == o.extra["validity"] == outputs[0].extra["validity"]
    a, b = (json.loads(o.path.read_text())["requests"] for o in outputs)
    assert [r["scheduled_s"] for r in a] == [r["scheduled_s"] for r in b]
    assert runner._engines == {}  # every server stopped

    # An identical second call reads the files back instead of starting servers.
    valid = [json.loads(o.path.read_text())["config"]["validity"]["valid"] for o in outputs]
    again = LiveRunner(LiveSettings(log_dir=tmp_path / "logs")).run(specs, tmp_path / "runs")
    if all(valid):  # a run marked invalid is measured again instead (below)
        assert all(o.extra.get("reused") for o in again)
    # A run that did not keep real time is not reused: it is measured again.
    data = json.loads(outputs[0].path.read_text())
    data["config"]["validity"]["valid"] = False
    outputs[0].path.write_text(json.dumps(data))
    fresh = LiveRunner(LiveSettings(log_dir=tmp_path / "logs"))
    assert fresh._reuse(specs[0], fresh.effective(specs[0]), tmp_path / "runs") is None


def test_saturation_pilot_runs_closed_loop(tmp_path: Path) -> None:
    runner = LiveRunner(LiveSettings(log_dir=tmp_path / "logs", start_timeout_s=60, request_timeout_s=60))
    (out,) = runner.run([_spec("round-robin", math.inf, group="pilot")], tmp_path / "pilots")
    assert out.summary["completed"] == 20 and out.summary["request_throughput"] > 0
    assert out.extra["live"]["closed_loop_concurrency"] == 2 * 48  # instances x max_num_seqs


def test_same_requests_and_instants_as_the_simulator() -> None:
    from block.sim.workload import requests_for as sim_requests

    samples, arrivals = requests_for(TINY, 10.0)
    sim = sim_requests(TINY, 10.0)
    assert [s.prompt_tokens for s in samples] == list(sim.prompt_tokens)
    assert [s.output_tokens for s in samples] == list(sim.output_tokens)
    assert list(arrivals) == list(sim.arrival_s)


def test_refuses_what_the_emulator_cannot_do() -> None:
    with pytest.raises(ValueError, match="stall"):
        check_spec(_spec("round-robin", stall_probability=0.01))
    with pytest.raises(ValueError, match="qps"):
        check_spec(_spec("round-robin", qps=0.0))
    if "lengths" in WorkloadSpec.__dataclass_fields__:  # estimated lengths: simulator-only
        spec = _spec("block")
        estimated = replace(spec, workload=replace(spec.workload, lengths="estimated"))
        with pytest.raises(ValueError, match="simulator-only"):
            check_spec(estimated)


def test_mode_live_is_wired() -> None:
    runner = get_runner("live", max_parallel=1, workload_overrides={"max_model_len": 1024})
    assert runner.mode == "live" and isinstance(runner, LiveRunner)
    assert runner.effective(_spec("block")).workload.max_model_len == 1024


def test_comparison_reports_means_and_live_conditions(tmp_path: Path) -> None:
    args = sim_vs_live.SimVsLiveArgs(policies=["round-robin"], rates=[5.0], num_requests=30, instances=2)
    from block.experiments.sim_runner import SimRunner

    sim_vs_live.run(args, [SimRunner(workers=1)], tmp_path)
    live = tmp_path / "runs-live"
    live.mkdir()
    for f in (tmp_path / "runs-sim").glob("*.json"):
        doc = json.loads(f.read_text())
        doc["config"]["live"] = {"parallel_clusters": 3, "machine_cpu_busy": 0.5}
        for stat in ("mean", "p99"):
            doc["summary"]["ttft_s"][stat] *= 1.25  # live 25% slower: sim is 20% below it
        (live / f.name).write_text(json.dumps(doc))
    text, data = sim_vs_live.compare(tmp_path)
    (entry,) = data.values()
    assert entry["ttft_s"]["mean"]["diff"] == pytest.approx(-0.2)
    assert entry["e2e_s"]["p99"]["diff"] == 0
    assert "TTFT mean sim s" in text and "Live run conditions" in text
    assert "Within 10%: 1/2" in text
