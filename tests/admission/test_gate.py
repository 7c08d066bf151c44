"""The admission rule: which forecasts meet a target, the lower priorities' smaller share, Retry-After,
and admitting without forecasts."""

from __future__ import annotations

from block.admission import Gate, Target
from block.admission.gate import LOWER_PRIORITY_SHARE
from block.request import Forecast


def forecast(ttft_s: float, e2e_s: float | None = None) -> Forecast:
    return Forecast(ttft_s, e2e_s if e2e_s is not None else ttft_s + 5.0, 0.0, 0.0)


def test_meeting_instances_and_waiting_time_counts() -> None:
    gate = Gate()
    target = Target(arrived=10.0, ttft_s=3.0, e2e_s=None)
    v = gate.verdict(target, [forecast(4.0), forecast(2.0), None], now=10.0)
    assert v.admit and v.meeting == [1]
    late = gate.verdict(target, [forecast(4.0), forecast(2.0)], now=11.5)  # waited 1.5 s already
    assert not late.admit and late.retry_after_s == 1  # overshoots by 0.5 s: come back in 1 s


def test_e2e_target_and_retry_after_from_the_smallest_overshoot() -> None:
    v = Gate().verdict(Target(0.0, None, 10.0), [forecast(1.0, 17.2), forecast(1.0, 14.1)], now=0.0)
    assert not v.admit and v.retry_after_s == 5  # ceil(14.1 - 10)


def test_lower_priorities_get_a_smaller_share_of_their_target() -> None:
    gate = Gate()
    gate.saw(1)
    f = [forecast(3.0 * LOWER_PRIORITY_SHARE + 0.1)]
    assert gate.verdict(Target(0.0, 3.0, None, priority=1), f, 0.0).admit
    assert not gate.verdict(Target(0.0, 3.0, None, priority=0), f, 0.0).admit


def test_without_forecasts_or_targets_everyone_is_admitted() -> None:
    gate = Gate()
    v = gate.verdict(Target(0.0, 0.001, None), [None, None], 5.0)
    assert v.admit and v.fallback and v.meeting == [0, 1]
    assert gate.verdict(Target(0.0, None, None), [forecast(100.0)], 0.0).admit
