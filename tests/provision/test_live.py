"""`block experiment provision --mode live` at toy scale: a real router process that starts its own engines.

Fast synthetic engines batching 2 sequences, one to start, a burst that overloads it: the preemptive
provisioner must ask for a second engine; every request completes and every engine is gone afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from block.experiments.provision import ProvisionArgs, run_live_experiment

pytestmark = pytest.mark.slow


def test_live_preemptive_toy(tmp_path: Path) -> None:
    args = ProvisionArgs(
        num_requests=60,
        qps=40.0,
        slo_s=0.3,
        initial_instances=1,
        max_instances=2,
        static_instances=1,
        cooldown_s=0.5,
        scale_down=False,
        max_model_len=128,
        max_num_seqs=2,
        start_timeout_s=30.0,
        profile="tiny-fast",
        variants=("preemptive",),
    )
    result = run_live_experiment(args, tmp_path / "out", echo=lambda _: None, log_dir=tmp_path / "logs")
    (summary,) = result["summaries"]
    assert summary["completed"] == 60 and summary["failed"] == 0
    run = result["runs"]["preemptive"]
    reasons = [d["reason"] for d in run["decisions"]]
    assert "forecast_over_slo" in reasons, reasons
    assert summary["peak_instances"] <= 2 and summary["instance_seconds"] > 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["mode"] == "live"
    assert (tmp_path / "out" / "provision.png").stat().st_size > 0
    assert summary["leftover_engines"] == 0  # the router's shutdown stopped every engine it started


def test_instance_seconds_integrates_the_held_count() -> None:
    from block.experiments.provision_live import instance_seconds

    held = [(0.0, 2), (10.0, 3), (20.0, 1)]
    assert instance_seconds(held, 5.0, 25.0) == 2 * 5 + 3 * 10 + 1 * 5
    assert instance_seconds([], 0.0, 10.0) == 0.0


def test_static_variant_is_a_bounds_only_router() -> None:
    from block.experiments.provision_live import router_args

    args = router_args("static", ProvisionArgs(static_instances=3), "tiny-fast", 60.0)
    at = {flag: args[i + 1] for i, flag in enumerate(args[:-1]) if flag.startswith("--")}
    assert (at["--min-instances"], at["--max-instances"]) == ("3", "3") and "--no-scale-down" in args
    assert at["--provider"] == "local-emulator" and at["--start-timeout-s"] == "60.0"
    pre = router_args("preemptive", ProvisionArgs(initial_instances=2, max_instances=4), "tiny-fast", 60.0)
    assert "preemptive" in pre and "--no-scale-down" not in pre
