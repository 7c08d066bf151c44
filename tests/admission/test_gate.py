"""The admission rule: which forecasts meet a target, the lower priorities' smaller share and the KV
room they leave for higher ones, Retry-After, and admitting without forecasts."""

from __future__ import annotations

from dataclasses import dataclass

from block.admission import Gate, Target
from block.admission.gate import LOWER_PRIORITY_SHARE
from block.request import Forecast


@dataclass
class Room:
    """What the reserve reads of an instance (block.policies.base.InstanceView)."""

    free_blocks: int = 1000
    waiting_prompt_tokens: int = 0
    num_gpu_blocks: int = 1000
    block_size: int = 16


ROOMY = [Room(), Room(), Room()]


def forecast(ttft_s: float, e2e_s: float | None = None) -> Forecast:
    return Forecast(ttft_s, e2e_s if e2e_s is not None else ttft_s + 5.0, 0.0, 0.0)


def test_meeting_instances_and_waiting_time_counts() -> None:
    gate = Gate()
    target = Target(arrived=10.0, ttft_s=3.0, e2e_s=None)
    v = gate.verdict(target, 10, ROOMY, [forecast(4.0), forecast(2.0), None], now=10.0)
    assert v.admit and v.meeting == [1]
    late = gate.verdict(target, 10, ROOMY, [forecast(4.0), forecast(2.0)], now=11.5)  # waited 1.5 s already
    assert not late.admit and late.retry_after_s == 1  # overshoots by 0.5 s: come back in 1 s


def test_e2e_target_and_retry_after_from_the_smallest_overshoot() -> None:
    v = Gate().verdict(Target(0.0, None, 10.0), 10, ROOMY, [forecast(1.0, 17.2), forecast(1.0, 14.1)], 0.0)
    assert not v.admit and v.retry_after_s == 5  # ceil(14.1 - 10)


def test_lower_priorities_get_a_smaller_share_of_their_target() -> None:
    gate = Gate()
    gate.saw(1, 10)
    f = [forecast(3.0 * LOWER_PRIORITY_SHARE + 0.1)]
    assert gate.verdict(Target(0.0, 3.0, None, priority=1), 10, ROOMY, f, 0.0).admit
    assert not gate.verdict(Target(0.0, 3.0, None, priority=0), 10, ROOMY, f, 0.0).admit


def test_without_forecasts_or_targets_everyone_is_admitted() -> None:
    gate = Gate()
    v = gate.verdict(Target(0.0, 0.001, None), 10, ROOMY, [None, None], 5.0)
    assert v.admit and v.fallback and v.meeting == [0, 1]
    # A held request is placed on a forecast only: without one it waits for the next pass.
    still = gate.verdict(Target(0.0, 0.001, None), 10, ROOMY, [None, None], 5.0, held=True)
    assert not still.admit and still.fallback
    assert gate.verdict(Target(0.0, None, None), 10, ROOMY, [forecast(100.0)], 0.0).admit


def test_lower_priorities_leave_room_for_the_prompts_above_them() -> None:
    gate = Gate()
    for tokens in [100] * 98 + [1600, 3200]:  # high priority's 99th percentile prompt: 1,600 tokens
        gate.saw(1, tokens)
    assert gate.reserve.tokens_above(0) == 1600 and gate.reserve.tokens_above(1) == 0
    # 100 blocks of room are held back; instance 0 keeps 105 after a 1-block prompt and the 3 blocks
    # waiting there, instance 1 only 95; both forecasts meet the target.
    views = [Room(free_blocks=109, waiting_prompt_tokens=40), Room(free_blocks=99, waiting_prompt_tokens=40)]
    f = [forecast(0.1), forecast(0.1)]
    low = gate.verdict(Target(0.0, 3.0, None, priority=0), 10, views, f, 0.0)
    assert low.meeting == [0]
    assert gate.verdict(Target(0.0, 3.0, None, priority=1), 10, views, f, 0.0).meeting == [0, 1]
    full = gate.verdict(Target(0.0, 3.0, None, priority=0), 10, views[1:], f[1:], 0.0)
    assert not full.admit and full.retry_after_s == 1  # on time but no room: back at the next change
    # An instance that reports no cache is not limited.
    assert gate.verdict(Target(0.0, 3.0, None, 0), 10, [Room(0, 0, 0)], f[:1], 0.0).admit
