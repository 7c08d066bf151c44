"""The accuracy benchmark's arithmetic, on hand-made outcomes."""

from __future__ import annotations

import pytest

from block.sidecar.accuracy import Outcome, runner_up_gap, summarize


def sampled(group: int, rows: list[tuple[float, float]]) -> list[Outcome]:
    """One sampled request: (forecast E2E, actual E2E) per instance."""
    return [Outcome(i, True, group, f / 10, f, ttft=a / 10, e2e=a) for i, (f, a) in enumerate(rows)]


def test_best_instance_accuracy_and_regret() -> None:
    outcomes = [
        *sampled(0, [(1.0, 1.1), (2.0, 2.2)]),  # forecast-best is the fastest
        *sampled(1, [(1.0, 1.5), (1.1, 1.2)]),  # it is not: 1.5 / 1.2 - 1 = 25% regret
        Outcome(0, False, 2, 0.1, 1.0, ttft=0.1, e2e=2.0),  # a routed request: 50% error
    ]
    r = summarize(outcomes)
    assert r["sampled"] == 2 and r["requests"] == 3
    assert r["best_instance_accuracy"] == 0.5
    assert r["mean_regret_e2e"] == pytest.approx(0.125)
    assert r["max_regret_e2e"] == pytest.approx(0.25)
    assert r["e2e_error_routed"] == pytest.approx(0.5)
    assert r["runner_up_gap_median"] == pytest.approx((1.0 + 0.25) / 2)  # 2.2 / 1.1 - 1 and 1.5 / 1.2 - 1


def test_runner_up_gap() -> None:
    assert runner_up_gap([3.0, 1.0, 1.02]) == pytest.approx(0.02)
    assert runner_up_gap([2.0]) != runner_up_gap([2.0])  # one instance: no runner-up (nan)


def test_session_workload_sends_history_as_a_shared_prefix() -> None:
    """`--dataset sharegpt-chat`: a later turn links from the one before it, waits its think time and
    resends that turn's prompt, so its block hashes start with the earlier turn's."""
    from block.prefix import chain_hashes
    from block.sidecar.accuracy import workload

    jobs = workload(40, 2.0, 0, 256, "sharegpt-chat", 5.0)
    assert len(jobs) == 40 and all(j.ids and len(j.ids) == j.prompt for j in jobs)
    links = [(k, j.next_turn) for k, j in enumerate(jobs) if j.next_turn >= 0]
    assert links  # some sessions have more than one turn
    for k, n in links:
        before, after = chain_hashes(jobs[k].ids), chain_hashes(jobs[n].ids)
        assert jobs[n].think_s > 0 and jobs[n].at_s == jobs[k].at_s  # same session start
        assert len(before) >= 1 and after[: len(before) - 1] == before[:-1]  # history: a cached prefix
