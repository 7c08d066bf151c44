"""The controller's rules: triggers per mode, cooldown, bounds, scale-down hold, back-off."""

from __future__ import annotations

import pytest

from block.provision.controller import (
    ABOVE_MAX,
    BELOW_MIN,
    FINISHED_OVER_SLO,
    FORECAST_OVER_SLO,
    PREEMPTIVE,
    SCALE_DOWN,
    SCALE_UP,
    UNDER_SLO,
    PoolCounts,
    ProvisionController,
    ProvisionSettings,
)


def settings(mode: str = "preemptive", **kw: object) -> ProvisionSettings:
    base: dict[str, object] = {
        "slo_e2e_s": 10.0,
        "min_instances": 2,
        "max_instances": 4,
        "cooldown_s": 5.0,
        "scale_down_hold_s": 20.0,
    }
    base.update(kw)
    return ProvisionSettings(mode, **base)  # type: ignore[arg-type]


def test_preemptive_scales_up_on_forecast_not_on_finished() -> None:
    c = ProvisionController(settings("preemptive"))
    c.observe_finished(1.0, 50.0)  # a measured miss: not this mode's trigger
    assert c.decide(1.0, PoolCounts(2)) is None
    c.observe_forecast(2.0, 9.9)
    assert c.decide(2.0, PoolCounts(2)) is None
    c.observe_forecast(3.0, 12.0)
    d = c.decide(3.0, PoolCounts(2))
    assert d is not None and (d.action, d.reason, d.instances_before, d.instances_after) == (
        SCALE_UP,
        FORECAST_OVER_SLO,
        2,
        3,
    )
    assert d.value_s == 12.0 and d.time == 3.0


def test_reactive_scales_up_on_finished_not_on_forecast() -> None:
    c = ProvisionController(settings("reactive"))
    c.observe_forecast(1.0, 50.0)
    assert c.decide(1.0, PoolCounts(2)) is None
    c.observe_finished(2.0, 11.0)
    d = c.decide(2.0, PoolCounts(2))
    assert d is not None and d.action == SCALE_UP and d.reason == FINISHED_OVER_SLO


def test_cooldown_and_fresh_signal() -> None:
    c = ProvisionController(settings())
    c.observe_forecast(0.0, 20.0)
    assert c.decide(0.0, PoolCounts(2)) is not None
    c.observe_forecast(1.0, 20.0)
    assert c.decide(4.9, PoolCounts(3)) is None  # cooldown
    d = c.decide(5.0, PoolCounts(3))  # the miss at 1.0 came after the action: still a reason
    assert d is not None and d.action == SCALE_UP
    assert c.decide(20.0, PoolCounts(4)) is None  # no new miss since
    c.observe_forecast(21.0, 20.0)
    assert c.decide(40.0, PoolCounts(3)) is None  # that miss is stale (outside the signal window)


def test_bounds_always_respected() -> None:
    c = ProvisionController(settings())
    c.observe_forecast(0.0, 99.0)
    assert c.decide(0.0, PoolCounts(4)) is None  # at max: no scale-up, however bad the forecast
    d = c.decide(0.5, PoolCounts(1))  # below min: at once, cooldown or not
    assert d is not None and (d.action, d.reason) == (SCALE_UP, BELOW_MIN)
    d = c.decide(0.6, PoolCounts(5))
    assert d is not None and (d.action, d.reason) == (SCALE_DOWN, ABOVE_MAX)
    # Never below min through scale-down, however calm.
    assert c.decide(1000.0, PoolCounts(2)) is None


def test_scale_down_after_hold_only_when_calm() -> None:
    c = ProvisionController(settings(), start=0.0)
    c.observe_forecast(1.0, 4.0)  # under half the SLO
    assert c.decide(19.0, PoolCounts(3)) is None  # hold not over
    d = c.decide(20.0, PoolCounts(3))
    assert d is not None and (d.action, d.reason, d.instances_after) == (SCALE_DOWN, UNDER_SLO, 2)
    c2 = ProvisionController(settings(), start=0.0)
    c2.observe_forecast(15.0, 6.0)  # above half the SLO: the hold starts again
    assert c2.decide(30.0, PoolCounts(3)) is None
    c2.observe_finished(25.0, 7.0)
    assert c2.decide(44.9, PoolCounts(3)) is None
    assert c2.decide(45.0, PoolCounts(3)) is not None
    # Not while an instance is still starting, and never with scale-down off.
    c3 = ProvisionController(settings(), start=0.0)
    assert c3.decide(100.0, PoolCounts(3, starting=1)) is None
    c4 = ProvisionController(settings(scale_down=False), start=0.0)
    assert c4.decide(100.0, PoolCounts(3)) is None


def test_failed_action_backs_off() -> None:
    c = ProvisionController(settings())
    d = c.decide(0.0, PoolCounts(0))
    assert d is not None and d.reason == BELOW_MIN
    c.failed(d, 0.0, retry_s=3.0)
    assert c.decide(2.9, PoolCounts(0)) is None
    assert c.decide(3.0, PoolCounts(0)) is not None
    assert len(c.decisions) == 2


@pytest.mark.parametrize(
    "kw",
    [
        {"mode": "sometimes"},
        {"slo_e2e_s": 0.0},
        {"min_instances": 3, "max_instances": 2},
        {"cooldown_s": -1.0},
        {"scale_down_fraction": 1.5},
    ],
)
def test_invalid_settings(kw: dict[str, object]) -> None:
    base: dict[str, object] = {
        "mode": "preemptive",
        "slo_e2e_s": 10.0,
        "min_instances": 1,
        "max_instances": 2,
    }
    base.update(kw)
    with pytest.raises(ValueError):
        ProvisionSettings(**base)  # type: ignore[arg-type]


def test_preemptive_headroom_scales_up_below_the_slo() -> None:
    settings = ProvisionSettings(PREEMPTIVE, 10.0, min_instances=1, max_instances=4, scale_up_fraction=0.6)
    c = ProvisionController(settings)
    c.observe_forecast(100.0, 5.9)
    assert c.decide(100.1, PoolCounts(2, 0, 0)) is None
    c.observe_forecast(101.0, 6.1)  # over 60% of the SLO: add capacity now
    d = c.decide(101.1, PoolCounts(2, 0, 0))
    assert d is not None and d.action == SCALE_UP
    with pytest.raises(ValueError):
        ProvisionSettings(PREEMPTIVE, 10.0, scale_up_fraction=0.4)  # not above scale_down_fraction
