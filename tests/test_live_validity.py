"""The validity judgement of live runs (lag numbers in, verdict out) and the demo's choice of load."""

from __future__ import annotations

import json

import pytest

from block.demo_load import SHAPES, MachineLoad, pick_shape
from block.live_validity import MAX_MEAN_LAG_S, EngineLag, judge

INF = float("inf")


def lag(steps: int, step_s: float, lag_s: float, buckets: dict[float, int], **kw: float) -> EngineLag:
    """Counters as an engine would report them; `buckets` non-cumulative, made cumulative here."""
    running, cumulative = 0, []
    for le in sorted(buckets):
        running += buckets[le]
        cumulative.append((le, float(running)))
    assert running == steps
    return EngineLag(steps, step_s, lag_s, buckets=tuple(cumulative), **kw)


def test_engines_that_kept_time_and_a_punctual_client_make_a_valid_run() -> None:
    v = judge(lag(1000, 30.0, 0.4, {0.001: 995, 0.005: 5, INF: 0}), [0.001] * 500)
    assert v.valid is True and v.message.startswith("valid")
    assert v.late_share == pytest.approx(0.4 / 30.0)
    assert v.p99_lag_s is not None and v.p99_lag_s <= 0.001
    assert v.late_steps_share == 0.0


def test_engines_late_on_average_make_an_invalid_run_with_the_numbers() -> None:
    # 1000 steps of 30 ms that each ended 15 ms late: 50% late
    v = judge(lag(1000, 30.0, 15.0, {0.01: 100, 0.02: 900, INF: 0}))
    assert v.valid is False
    assert v.message.startswith("INVALID: engines ran 50% late on average (mean step lag 15.0 ms")
    assert "do not compare policies" in v.message
    assert v.late_share == pytest.approx(0.5) and v.mean_lag_s == pytest.approx(0.015)


def test_a_steady_sub_millisecond_lag_on_short_steps_is_valid() -> None:
    # 1 ms steps each 0.4 ms late: a large share of a step, but tokens only 0.4 ms late, no time lost
    v = judge(lag(1000, 1.0, 0.4, {0.0005: 900, 0.005: 100, INF: 0}))
    assert v.valid is True and v.late_share == pytest.approx(0.4)


def test_a_late_tail_alone_makes_an_invalid_run() -> None:
    # on average fine (6 ms), but 2% of steps more than 200 ms late: p99 far above the limit
    v = judge(lag(1000, 30.0, 6.0, {0.001: 980, 0.5: 20, INF: 0}))
    assert v.mean_lag_s is not None and v.mean_lag_s < MAX_MEAN_LAG_S
    assert v.valid is False and v.p99_lag_s is not None and v.p99_lag_s > 0.2
    assert v.late_steps_share == pytest.approx(0.02)


def test_time_dropped_by_lag_resets_counts_as_late() -> None:
    v = judge(lag(1000, 30.0, 0.3, {0.001: 1000, INF: 0}, dropped_seconds=3.0, resets=3.0))
    assert v.valid is False and v.lag_resets == 3
    assert "3 timeline resets dropping 10.0% of the modelled time" in v.message


def test_a_starved_load_generator_makes_an_invalid_run_even_when_engines_keep_time() -> None:
    # what a busy 2-core machine did to `make demo`: engines 2 ms late per step, client up to 4 s late
    send_late = [0.002] * 950 + [3.7] * 50
    v = judge(lag(1000, 31.0, 2.0, {0.005: 990, 0.02: 10, INF: 0}), send_late)
    assert v.valid is False
    assert "load generator sent requests up to 3.70 s late" in v.message
    assert "engines kept real time" in v.message
    assert v.send_late_max_s == 3.7


def test_nothing_measured_is_unknown_not_valid() -> None:
    assert judge(None).valid is None
    assert judge(EngineLag()).valid is None


def test_parse_and_difference_of_two_scrapes_and_the_verdict_is_json() -> None:
    def page(count: int, lag_sum: float, le_1ms: int, steps_s: float) -> str:
        return (
            "# TYPE block:engine_step_lag_seconds histogram\n"
            f'block:engine_step_lag_seconds_bucket{{le="0.001",model_name="m"}} {le_1ms}\n'
            f'block:engine_step_lag_seconds_bucket{{le="0.1",model_name="m"}} {count}\n'
            f'block:engine_step_lag_seconds_bucket{{le="+Inf",model_name="m"}} {count}\n'
            f'block:engine_step_lag_seconds_count{{model_name="m"}} {count}\n'
            f'block:engine_step_lag_seconds_sum{{model_name="m"}} {lag_sum}\n'
            "# TYPE block:engine_step_seconds counter\n"
            f'block:engine_step_seconds_total{{model_name="m"}} {steps_s}\n'
        )

    before = EngineLag.parse(page(100, 0.05, 100, 3.0))
    after = EngineLag.parse(page(300, 8.05, 150, 9.0))
    assert before is not None and after is not None
    during = after.minus(before)
    assert during.steps == 200 and during.lag_seconds == pytest.approx(8.0)
    assert dict(during.buckets)[0.001] == 50  # 150 of the run's 200 steps were more than 1 ms late
    assert during.quantile(0.25) == pytest.approx(0.001)
    assert during.quantile(0.5) == pytest.approx(0.001 + 0.099 * 50 / 150)  # as histogram_quantile
    v = judge(during)
    assert v.valid is False
    json.dumps(v.to_dict(), allow_nan=False)  # a results file holds it as strict JSON
    assert EngineLag.parse("# TYPE other counter\nother_total 1\n") is None


def test_the_demo_runs_whole_on_an_idle_machine_and_scales_down_on_a_busy_one() -> None:
    full, why = pick_shape(MachineLoad(cpus=2, load1=0.05, busy_share=0.02), policies=3)
    assert full == SHAPES[0] and "full demo" in why
    smaller, why = pick_shape(MachineLoad(cpus=2, load1=0.9, busy_share=0.3), policies=3)
    assert smaller.instances < 4 and not smaller.sequential and "scaled down" in why
    # per-engine load is kept, so each cluster stays as close to its capacity
    assert smaller.qps_per_instance == full.qps_per_instance
    last, why = pick_shape(MachineLoad(cpus=2, load1=6.0, busy_share=1.0), policies=3)
    assert last == SHAPES[-1] and last.sequential and "may not keep real time" in why
    # a busy sample counts even when the load average has not caught up yet
    _, why = pick_shape(MachineLoad(cpus=2, load1=0.0, busy_share=0.9), policies=3)
    assert "scaled down" in why or "may not keep" in why
