"""A mixed fleet in the simulator: every replica and tracker runs with its own profile and settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from block.experiments.hetero import HeteroArgs, run_sim
from block.experiments.sim_runner import SimRunner
from block.fleet.engine_spec import EngineSpec
from block.fleet.fleet_file import parse_short
from block.sim import simulate
from block.sim.simulator import Cluster
from tests.sim.helpers import signature, small_config, small_workload

A100, A30 = EngineSpec("llama-2-7b-a100"), EngineSpec("llama-2-7b-a30")


def test_each_replica_and_tracker_has_its_own_profile_and_settings() -> None:
    fleet = tuple(parse_short("1:llama-2-7b-a100,1:llama-2-7b-a30:max_num_seqs=24").engines())
    cluster = Cluster(small_config(instances=2, fleet=fleet, max_num_seqs=48))
    assert [p.name for p in cluster.profiles] == ["llama-2-7b-a100", "llama-2-7b-a30"]
    assert [t.profile.name for t in cluster.trackers if t.profile] == ["llama-2-7b-a100", "llama-2-7b-a30"]
    # the entry's settings win over the fleet-wide ones, which win over the profile's defaults
    assert [c.max_num_seqs for c in cluster.replica_configs] == [48, 24]
    assert [c.num_gpu_blocks for c in cluster.replica_configs] == [7503, 1052]
    with pytest.raises(ValueError, match="lists 2 instances"):
        small_config(instances=3, fleet=fleet)


def test_the_slow_kind_serves_slower_and_a_uniform_fleet_is_the_plain_cluster() -> None:
    requests = small_workload(n=60, qps=2.0)
    out = simulate(small_config(instances=2, fleet=(A100, A30), noise=0.0), requests)
    e2e = {i: [r.e2e_s for r in out.records if r.instance == f"sim-{i}"] for i in (0, 1)}
    assert len(e2e[0]) == len(e2e[1]) == 30  # round robin
    ratio = float(np.mean(e2e[1])) / float(np.mean(e2e[0]))
    assert 1.6 < ratio < 2.6  # the A30 steps about twice as long at light load
    plain = simulate(small_config(instances=2), requests)
    same = simulate(small_config(instances=2, fleet=(A30, A30)), requests)
    assert signature(same) == signature(plain)


def test_hetero_experiment_writes_capacity_per_fleet_and_policy(tmp_path: Path) -> None:
    args = HeteroArgs(
        fleets=["mixed-a100-a30"],
        policies=["block", "round-robin"],
        num_requests=150,
        per_kind=1,
        max_probes=3,
    )
    summary = run_sim(args, SimRunner(workers=1), tmp_path)
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["fleets"] == json.loads(json.dumps(summary["fleets"]))
    for policy in ("block", "round-robin"):
        cell = doc["fleets"]["mixed-a100-a30"][policy]
        assert isinstance(cell["capacity_qps"], float) and cell["capacity_qps"] > 0
        assert 1 <= len(cell["probes"]) <= 3
    kinds = doc["load"]["mixed-a100-a30"]["policies"]["round-robin"]["kinds"]
    assert kinds["fast"]["requests"] == kinds["slow"]["requests"] == 75  # round robin: half each
    assert (tmp_path / "hetero.png").stat().st_size > 0 and "mixed-a100-a30" in (
        tmp_path / "report.md"
    ).read_text()
