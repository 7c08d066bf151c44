"""Shared test fixtures."""

from __future__ import annotations

import pytest

from block.profiles.profile import Profile


def make_test_profile() -> Profile:
    """A hand-written profile with round numbers, independent of the shipped fitted ones."""
    return Profile(
        name="test-profile",
        model="test",
        gpu="none",
        step_overhead_s=0.002,
        per_seq_s=0.0001,
        decode_kv_token_s=1e-6,
        prefill_pair_s=1e-9,
        linear_knots_tokens=(1, 64, 512, 4096),
        linear_knots_s=(0.010, 0.011, 0.030, 0.200),
        engine_defaults={
            "max_num_seqs": 8,
            "max_num_batched_tokens": 64,
            "block_size": 16,
            "num_gpu_blocks": 64,
        },
    )


@pytest.fixture
def profile() -> Profile:
    return make_test_profile()
