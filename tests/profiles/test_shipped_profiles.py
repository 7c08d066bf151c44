"""Every shipped profile loads, behaves monotonically, and quotes plausible numbers."""

from __future__ import annotations

import pytest

from block.profiles import BatchShape, available_profiles, load_profile
from block.profiles.summary import summarize
from block.replica import ReplicaConfig

SHIPPED = available_profiles()
EXPECTED = {
    "llama-2-7b-a100",
    "llama-2-7b-h100",
    "llama-2-7b-a40",
    "llama-2-7b-a30",
    "llama-3-8b-a100",
    "llama-2-70b-a100-tp4",
    "tiny-fast",
}


def test_expected_profiles_are_shipped() -> None:
    assert set(SHIPPED) >= EXPECTED


@pytest.mark.parametrize("name", SHIPPED)
def test_profile_loads_and_names_its_assumptions(name: str) -> None:
    p = load_profile(name)
    assert p.name == name
    assert p.assumptions, "every profile states its assumptions"
    if name != "tiny-fast":
        assert any("mlp.csv" in s and "MIT" in s for s in p.sources)
    ReplicaConfig.from_dict(p.engine_defaults)  # the engine settings are usable as they are
    for key in ("max_num_seqs", "max_num_batched_tokens", "block_size", "num_gpu_blocks", "max_model_len"):
        assert p.engine_defaults[key] >= 1


@pytest.mark.parametrize("name", SHIPPED)
def test_step_time_is_monotone(name: str) -> None:
    p = load_profile(name)
    assert list(p.linear_knots_s) == sorted(p.linear_knots_s)
    base = BatchShape(
        num_tokens=64, num_seqs=8, num_decode_seqs=8, kv_tokens_read=8000, prefill_attention_pairs=0
    )
    t0 = p.step_time(base)
    assert t0 > 0
    grow = [
        BatchShape(65, 8, 8, 8000, 0),
        BatchShape(64, 9, 8, 8000, 0),
        BatchShape(64, 8, 8, 8001, 0),
        BatchShape(64, 8, 8, 8000, 1000),
    ]
    for shape in grow:
        assert p.step_time(shape) >= t0
    times = [p.linear_time(n) for n in range(1, 8193, 7)]
    assert all(b >= a for a, b in zip(times, times[1:], strict=False))
    decode = [p.decode_step_time(b, b * 1024) for b in range(1, 257)]
    assert all(b > a for a, b in zip(decode, decode[1:], strict=False))


def test_a30_is_slower_than_a100_everywhere() -> None:
    a30, a100 = load_profile("llama-2-7b-a30"), load_profile("llama-2-7b-a100")
    for n in (1, 16, 64, 128, 256, 512, 1024, 2048, 4096):
        assert a30.linear_time(n) > a100.linear_time(n)
    assert a30.decode_kv_token_s > a100.decode_kv_token_s
    assert a30.prefill_pair_s > a100.prefill_pair_s
    # between the FLOP ratio (312/165) and the bandwidth ratio (2039/933), up to rounding and monotone repair
    for n, s in zip(a30.linear_knots_tokens, a30.linear_knots_s, strict=True):
        assert 1.85 <= s / a100.linear_time(n) <= 2.25


def test_gpu_ordering_for_llama_2_7b() -> None:
    step = {
        g: load_profile(f"llama-2-7b-{g}").decode_step_time(32, 32 * 1024)
        for g in ("h100", "a100", "a30", "a40")
    }
    assert step["h100"] < step["a100"] < step["a30"] < step["a40"]


def test_a30_uses_the_papers_engine() -> None:
    e = load_profile("llama-2-7b-a30").engine_defaults
    assert e["max_num_batched_tokens"] == 512
    assert e["max_num_seqs"] == 48
    assert e["max_model_len"] == 4096
    assert e["num_gpu_blocks"] == 1052
    assert e["block_size"] == 16


def test_a100_numbers_match_public_vllm_figures() -> None:
    """Llama-2-7B fp16, A100, vLLM: about 12-15 ms per token at batch 1, 100-150 ms for 2,048 tokens."""
    s = summarize(load_profile("llama-2-7b-a100"))
    decode = {r.batch: r.step_s for r in s.decode}
    prefill = {r.prompt_tokens: r.seconds for r in s.prefill}
    assert 0.011 <= decode[1] <= 0.016
    assert 0.100 <= prefill[2048] <= 0.160


def test_tiny_fast_steps_are_one_to_three_ms() -> None:
    p = load_profile("tiny-fast")
    assert "synthetic" in p.description.lower()
    assert 0.001 <= p.decode_step_time(1, 1024) <= 0.003
    assert 0.001 <= p.decode_step_time(48, 48 * 1024) <= 0.003
    assert 0.001 <= p.prefill_time(512, 512) <= 0.003
