"""Sweeps run as Ray tasks write the same results as on local processes (block/sim/executor.py).

One local Ray runtime (2 CPUs, no dashboard) serves the module: it takes 10-20 s to start on a small
machine. `make test` installs the `ray` extra; without it these tests are skipped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from block.cli import app
from block.experiments.model_error import Cell, ModelErrorArgs, run_cells
from block.sim.executor import RAY, ExecutorSpec, ExecutorUnavailable

RAY_START_TIMEOUT_S = 120
# What the simulator reports about its own speed, not what it simulated: differs between any two runs.
TIMINGS = ("wall_s", "cpu_s", "loop_s", "forecast_cpu_s")
SWEEP = [
    *("--policies", "block,round-robin", "--qps", "10,30", "--num-requests", "150", "--instances", "3"),
    *("--seed", "3", "--keep-itl"),
]

runner = CliRunner()


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="the ray extra (pip install 'block-llm[ray]'; make test does)")
    saved = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no reporting home from a test

    # Bounded by an alarm, in the main thread: Ray's processes die with the thread that started them.
    def too_slow(signum: int, frame: object) -> None:
        raise TimeoutError(f"a local Ray runtime did not start within {RAY_START_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(RAY_START_TIMEOUT_S)
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    except TimeoutError:
        ray.shutdown()
        raise
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    try:
        yield ray
    finally:
        ray.shutdown()  # stops the processes this ray.init started
        if saved is None:
            os.environ.pop("RAY_USAGE_STATS_ENABLED", None)
        else:
            os.environ["RAY_USAGE_STATS_ENABLED"] = saved


def simulated(path: Path) -> dict[str, Any]:
    """A results file without the simulator's timings."""
    doc = json.loads(path.read_text())
    stats = doc["config"]["sim"]["stats"]
    for key in TIMINGS:
        assert key in stats
        stats.pop(key)
    return doc


def test_block_simulate_on_ray_writes_what_local_processes_write(local_ray: Any, tmp_path: Path) -> None:
    for executor in ("local", "ray"):
        out = tmp_path / executor
        result = runner.invoke(app, ["simulate", *SWEEP, "--executor", executor, "--out", str(out)])
        assert result.exit_code == 0, result.output
    local = sorted(p.name for p in (tmp_path / "local").glob("*.json"))
    assert local == sorted(p.name for p in (tmp_path / "ray").glob("*.json"))
    runs = [n for n in local if not n.startswith("capacity_")]
    assert runs == [f"{p}_qps{q}.json" for p in ("block", "round-robin") for q in (10, 30)]
    for name in local:
        on_ray = tmp_path / "ray" / name
        if name.startswith("capacity_"):
            assert on_ray.read_text() == (tmp_path / "local" / name).read_text()
        else:
            doc = simulated(on_ray)
            assert doc == simulated(tmp_path / "local" / name)
            assert len(doc["requests"]) == 150 and doc["requests"][0]["itl_s"]  # a full run, tokens included


def test_capacity_searches_on_ray_find_what_local_processes_find(local_ray: Any, tmp_path: Path) -> None:
    args = ModelErrorArgs(
        policies=["round-robin"], errors=[0.2], kinds=["static"], num_requests=100, instances=2, max_probes=3
    )

    def searched(executor: ExecutorSpec) -> dict[Cell, tuple]:
        found = run_cells(args, tmp_path / str(executor), lambda _: None, executor)
        return {
            cell: (
                r.capacity_qps,
                r.bound,
                [{k: v for k, v in p.items() if k not in ("wall_s", "cpu_s")} for p in r.probes],
            )
            for cell, r in found.items()
        }

    local = searched(ExecutorSpec())
    assert len(local) == 2 and all(len(probes) == 3 for _, _, probes in local.values())
    assert searched(ExecutorSpec(RAY)) == local


def _without_timings(probe: dict) -> dict:
    return {k: v for k, v in probe.items() if k not in ("wall_s", "cpu_s")}


def test_the_executor_flag_names_a_local_runtime_or_a_cluster() -> None:
    assert ExecutorSpec.parse("local") == ExecutorSpec()
    assert ExecutorSpec.parse("ray") == ExecutorSpec(RAY)
    assert ExecutorSpec.parse("ray:ray://head:10001") == ExecutorSpec(RAY, "ray://head:10001")
    assert str(ExecutorSpec.parse("ray:auto")) == "ray:auto"
    result = runner.invoke(app, ["simulate", "--executor", "spark"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "local, ray or ray:ADDRESS" in result.output


def test_without_ray_the_flag_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as where the extra is missing
    for command in (["simulate"], ["experiment", "main"]):
        result = runner.invoke(app, [*command, "--executor", "ray", "--out", str(tmp_path)])
        assert result.exit_code == 2
        assert "pip install 'block-llm[ray]'" in result.output and len(result.output.splitlines()) == 1
    assert not any(tmp_path.iterdir())  # it failed before any run


def test_a_cluster_address_where_nothing_listens_fails_in_seconds() -> None:
    pytest.importorskip("ray", reason="the ray extra (pip install 'block-llm[ray]'; make test does)")
    with socket.socket() as probe:  # a port just freed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ExecutorUnavailable, match="nothing answers there"):
            ExecutorSpec(RAY, address).connect()
