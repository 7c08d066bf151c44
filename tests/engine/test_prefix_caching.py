"""The emulator's prefix cache: hashes from the prompt's token ids, vLLM's counters and usage details,
and /state carrying what a forecast needs (each request's prompt hashes, the free cached blocks)."""

from __future__ import annotations

import dataclasses

import httpx
from prometheus_client.parser import text_string_to_metric_families

from block.engine.server import background_engine
from block.engine.settings import EngineSettings, replica_config
from block.prefix import chain_hashes
from block.replica import Replica, Snapshot
from tests.conftest import make_test_profile
from tests.engine.helpers import idle, wait_for

PROMPT = list(range(100, 260))  # 160 tokens: 10 full blocks of 16


def _settings(**overrides: bool) -> EngineSettings:
    profile = make_test_profile()
    return EngineSettings(
        profile, replica_config(profile, **overrides), noise=0.0, seed=3, model="test-model"
    )


def _counters(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("vllm:prefix_cache"):
                out[s.name.removesuffix("_total")] = s.value
    return out


async def test_a_repeated_prompt_hits_and_is_reported() -> None:
    settings = dataclasses.replace(_settings(), prompt_tokens_details=True)
    body = {"prompt": PROMPT, "max_tokens": 3, "ignore_eos": True}
    with background_engine(settings) as engine:
        async with httpx.AsyncClient(base_url=engine.url, timeout=10.0) as client:
            first = (await client.post("/v1/completions", json=body)).json()
            state = await wait_for(client, idle)
            second = (await client.post("/v1/completions", json=body)).json()
            metrics = (await client.get("/metrics")).text
    assert first["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    # 10 full blocks cached; at least the last token is computed, so 9 blocks hit
    assert second["usage"]["prompt_tokens_details"] == {"cached_tokens": 144}
    assert _counters(metrics) == {"vllm:prefix_cache_queries": 320.0, "vllm:prefix_cache_hits": 144.0}
    # the first prompt's blocks are cached and free, last block first in eviction order
    hashes = chain_hashes(PROMPT, 16)
    assert isinstance(state["free_cached"], str)  # packed: see block/replica/snapshot.py
    snapshot = Snapshot.from_dict(state)
    assert [h for _, h in snapshot.free_cached] == list(hashes[::-1])
    assert Replica.from_snapshot(snapshot, make_test_profile()).kv.prefix.num_cached(hashes) == 10


async def test_caching_off_reports_no_hits_and_no_cache_state() -> None:
    settings = dataclasses.replace(_settings(enable_prefix_caching=False), prompt_tokens_details=True)
    body = {"prompt": PROMPT, "max_tokens": 2, "ignore_eos": True}
    with background_engine(settings) as engine:
        async with httpx.AsyncClient(base_url=engine.url, timeout=10.0) as client:
            for _ in range(2):
                r = (await client.post("/v1/completions", json=body)).json()
                assert r["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
            state = await wait_for(client, idle)
            metrics = (await client.get("/metrics")).text
    assert "free_cached" not in state
    assert _counters(metrics) == {"vllm:prefix_cache_queries": 0.0, "vllm:prefix_cache_hits": 0.0}
