"""`block experiment overload` end to end at a tiny scale in the simulator: the capacity is measured
first, every variant runs at every load, and summary.json has the rows the interface names."""

from __future__ import annotations

import json
from pathlib import Path

from block.experiments.overload import OverloadArgs, run, split_variant
from block.experiments.sim_runner import SimRunner


def test_split_variant() -> None:
    assert split_variant("block+queue") == ("block", "queue")
    assert split_variant("round-robin") == ("round-robin", "off")


def test_overload_writes_rows_for_every_variant_and_load(tmp_path: Path) -> None:
    args = OverloadArgs(
        workloads=["sharegpt"],
        variants=["block+off", "block+reject"],
        loads=[1.0, 2.0],
        num_requests=60,
        instances=1,
        search=[0.6, 1.0],
        guess_scale=4 / 30,
    )
    summary = run(args, SimRunner(workers=1), tmp_path)
    assert (tmp_path / "goodput.png").exists() and (tmp_path / "report.md").exists()
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert rows == summary["rows"]
    assert {(r["variant"], r["load"]) for r in rows} == {
        (v, load) for v in ("block+off", "block+reject") for load in (1.0, 2.0)
    }
    for r in rows:
        assert {"workload", "variant", "load", "goodput_ratio", "high_on_target"} <= set(r)
        assert r["workload"] == "sharegpt" and 0.0 <= r["high_on_target"] <= 1.0
    ref = next(r for r in rows if r["variant"] == "block+off" and r["load"] == 1.0)
    assert ref["goodput_ratio"] == 1.0
    overloaded = {r["variant"]: r for r in rows if r["load"] == 2.0}
    assert overloaded["block+reject"]["low_rejected"] > 0  # it sheds instead of queueing everything
