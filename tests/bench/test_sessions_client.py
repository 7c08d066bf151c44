"""The benchmark client keeps sessions in order: a turn is sent after the previous answer ended plus its
think time, over real HTTP against the engine emulator."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np

from block.bench.client import run_benchmark
from block.launch import block_command
from block.workload import load_workload
from block.workload.sessions import session_plan

from .sse_server import SseServer

SESSIONS, TURNS, THINK_S = 3, 3, 0.15


def test_turns_follow_their_predecessors_answers(tmp_path) -> None:  # noqa: ANN001
    base = load_workload("fixed:40:6", SESSIONS * TURNS, seed=0)
    samples = [dataclasses.replace(s, session=k // TURNS, turn=k % TURNS) for k, s in enumerate(base)]
    plan = session_plan(samples, qps=20.0, process="constant", seed=0, think_time_s=THINK_S)
    engine = block_command("engine", ["engine", "--profile", "tiny-fast", "--log-level", "warning"], tmp_path)
    with engine:
        result = asyncio.run(
            asyncio.wait_for(
                run_benchmark(engine.url, samples, plan.not_before_s, sessions=plan, timeout_s=30), 60
            )
        )
    records = result.records
    assert [r.index for r in records] == list(range(len(samples)))  # workload order
    assert all(r.ok for r in records), [r.error for r in records]
    for i, j in enumerate(plan.next_turn.tolist()):
        if j < 0:
            continue
        answered = records[i].sent_s + records[i].e2e_s
        # Due when the answer ended plus the think time (the client's clock), and sent then, not before.
        assert records[j].scheduled_s >= answered + plan.think_s[j] - 1e-3
        assert records[j].scheduled_s <= answered + plan.think_s[j] + 0.05
        assert records[j].sent_s >= records[j].scheduled_s - 1e-6
    starts = [records[i].scheduled_s for i in plan.first_turns().tolist()]
    assert np.allclose(starts, [0.05, 0.10, 0.15])  # sessions start at the rate, not their turns


def test_a_sessions_turns_stay_on_one_of_several_servers() -> None:
    """With several servers (routers in front of one fleet) sessions go to them in turn, each session's
    turns to the same one: the router that saw its history."""
    base = load_workload("fixed:40:6", SESSIONS * TURNS, seed=0)
    samples = [
        dataclasses.replace(s, prompt=f"session {k // TURNS} turn {t}", session=k // TURNS, turn=t)
        for k, s in enumerate(base)
        for t in [k % TURNS]
    ]
    plan = session_plan(samples, qps=20.0, process="constant", seed=0, think_time_s=0.01)
    with SseServer(first_delay_s=0.01, gap_s=0.001) as a, SseServer(first_delay_s=0.01, gap_s=0.001) as b:
        urls = f"{a.url},{b.url}"
        run = run_benchmark(urls, samples, plan.not_before_s, sessions=plan, model="m", timeout_s=30)
        result = asyncio.run(asyncio.wait_for(run, 60))
        seen = [{body["prompt"].split(" turn")[0] for body in server.bodies} for server in (a, b)]
    assert all(r.ok for r in result.records)
    assert seen == [{"session 0", "session 2"}, {"session 1"}]
