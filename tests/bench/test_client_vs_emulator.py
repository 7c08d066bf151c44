"""The load generator's own accuracy: against the emulator at --noise 0 and low load it must measure the
TTFT and TPOT that the profile implies, within 2%.

The expected values come from replaying the same requests through a `Replica` in virtual time, not from
a hand formula. Long prompts on the A30 profile keep the fixed HTTP round trip (~1 ms) far below 2% of
the TTFT (~0.45 s)."""

from __future__ import annotations

import asyncio

import pytest

from block.bench.client import run_benchmark
from block.launch import block_command
from block.profiles import load_profile
from block.replica import Replica, ReplicaConfig, Request
from block.workload import load_workload

PROFILE = "llama-2-7b-a30"
PROMPT, OUTPUT, REQUESTS, GAP_S = 3000, 24, 3, 1.5


def expected_ttft_and_tpot() -> tuple[float, float]:
    profile = load_profile(PROFILE)
    replica = Replica(ReplicaConfig.from_dict(profile.engine_defaults), profile)
    # +1: the engine counts the BOS token of a text prompt, as vLLM does
    request = Request("r", PROMPT + 1, OUTPUT)
    replica.add(request)
    while replica.step() is not None:
        pass
    assert request.first_token_time is not None and request.finish_time is not None
    tpot = (request.finish_time - request.first_token_time) / (OUTPUT - 1)
    return request.first_token_time, tpot


@pytest.mark.slow
def test_client_reproduces_the_profile_at_low_load(tmp_path) -> None:  # noqa: ANN001
    samples = load_workload(f"fixed:{PROMPT}:{OUTPUT}", REQUESTS, seed=0)
    arrivals = [i * GAP_S for i in range(REQUESTS)]  # one at a time: each finishes before the next
    engine = block_command("engine", ["engine", "--profile", PROFILE, "--noise", "0"], log_dir=tmp_path)
    with engine:
        result = asyncio.run(run_benchmark(engine.url, samples, arrivals))

    ttft, tpot = expected_ttft_and_tpot()
    assert len(result.records) == REQUESTS
    for record in result.records:
        assert record.ok and record.output_tokens == OUTPUT
        assert record.ttft_s == pytest.approx(ttft, rel=0.02)
        assert record.tpot_s == pytest.approx(tpot, rel=0.02)
