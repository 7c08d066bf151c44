"""Admission in the simulator: nothing changes while every forecast meets the target; under overload
`reject` and `queue` refuse (429 records) the requests no instance can serve in time, keep the
admitted ones within it, shed lower priorities first and never hold more than the bound."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from block.sim import simulate
from block.sim.requests import SimRequests
from tests.sim.helpers import signature, small_config, small_workload

TARGET_S = 3.0


def with_priorities(w: SimRequests, share: float = 0.3) -> SimRequests:
    classes = (np.random.default_rng(7).random(len(w)) < share).astype(np.int64)
    return replace(w, priorities=classes)


def good(records: list, priority: int | None = None) -> float:
    mine = [r for r in records if priority is None or r.priority == priority]
    return sum(r.ok and r.ttft_s <= TARGET_S for r in mine) / len(mine)


def test_admission_changes_nothing_while_targets_are_met() -> None:
    w = with_priorities(small_workload(150, qps=4.0))
    off = simulate(small_config(policy="block"), w)
    for mode in ("queue", "reject"):
        on = simulate(small_config(policy="block", admission=mode), w)
        assert signature(on) == signature(off)
        assert on.stats["admission"]["rejected"] == {}


def test_overload_rejects_instead_of_missing_and_sheds_low_priority_first() -> None:
    w = with_priorities(small_workload(250, qps=40.0, max_prompt=1500, max_output=300))
    off = simulate(small_config(policy="block"), w)
    reject = simulate(small_config(policy="block", admission="reject"), w)
    rejected = [r for r in reject.records if r.status == 429]
    assert rejected and all(r.error.startswith("rejected: ") for r in rejected)
    admitted = [r for r in reject.records if r.ok]
    assert len(rejected) + len(admitted) == len(w)
    # Without admission every queue grows and most requests miss; with it the admitted ones make it.
    assert good(reject.records) > good(off.records)
    assert good(admitted) >= 0.95
    assert good(reject.records, 1) > good(reject.records, 0)  # the high class is shed last
    counts = reject.stats["admission"]
    assert sum(counts["admitted"].values()) == len(admitted)
    assert sum(counts["rejected"].values()) == len(rejected)


def test_queue_holds_at_most_the_bound_and_every_request_ends() -> None:
    w = with_priorities(small_workload(250, qps=40.0, max_prompt=1500, max_output=300))
    queue = simulate(small_config(policy="round-robin", admission="queue", max_held=5), w)
    stats = queue.stats["admission"]
    assert sum(stats["held"].values()) > 0
    reasons = {r.error for r in queue.records if r.status == 429}
    assert any("shed" in e for e in reasons)  # beyond the bound
    assert all(r.ok or r.status == 429 for r in queue.records)  # each placed or refused, none lost
    assert sum(stats["admitted"].values()) + sum(stats["rejected"].values()) == len(w)


def test_lower_priority_is_placed_only_where_it_leaves_room_for_the_higher_ones_prompts() -> None:
    w = with_priorities(small_workload(250, qps=40.0, max_prompt=1500, max_output=300))
    priorities = w.priorities.tolist()
    placed: dict[int, int] = {}  # priority -> requests placed
    short: list[int] = []  # low-priority placements that left less than the reserve

    def check(cluster, i, now, candidates, choice) -> None:  # noqa: ANN001 - simulator.DecisionHook
        placed[priorities[i]] = placed.get(priorities[i], 0) + 1
        if priorities[i] == 0:
            reserve = cluster.admission.gate.reserve
            view, prompt = choice.instance, int(w.prompt_tokens[i])
            if not reserve.leaves_room(view, prompt, reserve.tokens_above(0)):
                short.append(i)

    out = simulate(small_config(policy="block", admission="queue"), w, on_decision=check)
    assert placed[0] > 0 and placed[1] > 0 and not short
    assert out.stats["admission"]["rejected"].get("0", 0) > out.stats["admission"]["rejected"].get("1", 0)
