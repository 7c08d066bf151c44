"""Provisioning in the simulator at tiny scale: the A30 profile, one instance to start, a burst then calm."""

from __future__ import annotations

import numpy as np
import pytest

from block.provision.controller import ProvisionSettings
from block.provision.sim import ProvisionedOutcome, SimProvisionPlan, simulate_provisioned
from block.sim.config import SimConfig
from block.sim.requests import SimRequests

SLO = 10.0


def workload() -> SimRequests:
    rng = np.random.default_rng(0)
    burst = np.sort(rng.uniform(0.0, 15.0, 120))  # 8 QPS: about three times one A30's capacity
    calm = np.linspace(16.0, 60.0, 12)  # then a trickle
    n = len(burst) + len(calm)
    return SimRequests(rng.integers(50, 500, n), rng.integers(50, 400, n), np.concatenate([burst, calm]))


def run(mode: str | None, horizon_s: float | None = None, **kw: float) -> ProvisionedOutcome:
    config = SimConfig(instances=3, profile="llama-2-7b-a30", policy="block", record_itl=False)
    settings = None
    if mode is not None:
        opts = {"cooldown_s": 2.0, "scale_down_hold_s": 5.0, "signal_window_s": 5.0, **kw}
        settings = ProvisionSettings(mode, SLO, 1, 3, **opts)  # type: ignore[arg-type]
    plan = SimProvisionPlan(1, 3 if mode else 1, settings, startup_delay_s=3.0, forecast_horizon_s=horizon_s)
    return simulate_provisioned(config, workload(), plan)


def e2e(out: ProvisionedOutcome) -> np.ndarray:
    return np.array([r.e2e_s for r in out.outcome.records if r.e2e_s is not None])


def test_preemptive_acts_before_reactive_and_both_beat_static() -> None:
    static, reactive, preemptive = run(None), run("reactive"), run("preemptive")
    for out in (static, reactive, preemptive):
        assert len(e2e(out)) == 132  # every request completes: nothing lost to scale-down
    assert static.decisions == [] and static.timeline == [(0.0, 1, 0, 0)]
    first = {
        name: next(d for d in o.decisions if d["action"] == "scale_up")
        for name, o in (("reactive", reactive), ("preemptive", preemptive))
    }
    assert first["preemptive"]["reason"] == "forecast_over_slo"
    assert first["reactive"]["reason"] == "finished_over_slo"
    assert first["preemptive"]["time"] < first["reactive"]["time"]  # forecasts see the miss coming
    over = {
        name: int((e2e(o) > SLO).sum())
        for name, o in (("static", static), ("reactive", reactive), ("preemptive", preemptive))
    }
    assert over["preemptive"] < over["reactive"] <= over["static"]
    for out in (reactive, preemptive):
        # Bounds and the start-up delay: never more than 3 held, a start serves 3 s after its decision.
        assert max(a + s + d for _, a, s, d in out.timeline) <= 3
        ups = [d["time"] for d in out.decisions if d["action"] == "scale_up"]
        assert all(b - a >= 2.0 for a, b in zip(ups, ups[1:], strict=False))  # cooldown
        assert any(row[1] == 2 and abs(row[0] - ups[0] - 3.0) < 1e-9 for row in out.timeline)


def test_scale_down_in_the_calm_and_instance_seconds() -> None:
    out = run("preemptive")
    downs = [d for d in out.decisions if d["action"] == "scale_down"]
    assert downs and all(d["reason"] == "forecasts_under_slo" for d in downs)
    assert out.timeline[-1][1] >= 1  # never below min
    # Held time: the run's duration for the first instance plus each later one from its decision.
    end = out.outcome.duration_s
    assert out.instance_seconds < 3 * end
    assert out.instance_seconds > end
    without = run("preemptive", scale_down=False)  # type: ignore[arg-type]
    assert [d for d in without.decisions if d["action"] == "scale_down"] == []
    assert without.instance_seconds > out.instance_seconds


def test_forecast_horizon_caps_deep_queues_and_still_scales_up() -> None:
    full, capped = run("preemptive"), run("preemptive", horizon_s=1.05 * SLO)
    assert capped.stats["capped_forecasts"] > 0 and full.stats["capped_forecasts"] == 0
    assert len(e2e(capped)) == 132
    first = next(d for d in capped.decisions if d["action"] == "scale_up")
    assert first["reason"] == "forecast_over_slo" and first["value_s"] == 1.05 * SLO  # capped, yet a miss
    # The first miss is seen at the same arrival: forecasts under the horizon are exact.
    assert first["time"] == next(d for d in full.decisions if d["action"] == "scale_up")["time"]


def test_plan_validation() -> None:
    with pytest.raises(ValueError):
        SimProvisionPlan(0, 3)
    with pytest.raises(ValueError):
        SimProvisionPlan(2, 3, ProvisionSettings("preemptive", 1.0, 1, 4))
    with pytest.raises(ValueError):
        SimProvisionPlan(1, 3, forecast_horizon_s=0.0)


def test_experiment_writes_report_and_plot(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from block.experiments.provision import ProvisionArgs, run_sim

    args = ProvisionArgs(
        num_requests=120,
        qps=8.0,
        slo_s=SLO,
        initial_instances=1,
        max_instances=3,
        static_instances=2,
        startup_delay_s=3.0,
        cooldown_s=2.0,
        scale_down_hold_s=5.0,
    )
    result = run_sim(args, tmp_path, echo=lambda _: None)
    assert [s["variant"] for s in result["summaries"]] == ["static", "reactive", "preemptive"]
    for s in result["summaries"]:
        assert s["completed"] == s["requests"] == 120 and s["instance_seconds"] > 0
    assert (tmp_path / "provision.png").stat().st_size > 10_000
    report = (tmp_path / "report.md").read_text()
    assert "| preemptive |" in report and "start with 1 of 3" in report


def test_startup_delay_default_is_one_number() -> None:
    from block.experiments import provision as experiment
    from block.provision import sim

    assert experiment.DEFAULT_STARTUP_DELAY_S == sim.DEFAULT_STARTUP_DELAY_S
