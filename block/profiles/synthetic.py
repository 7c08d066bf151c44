"""The synthetic `tiny-fast` profile: steps of about 1-3 ms, for router benchmarks and tests.

It measures nothing; it only keeps the shape of a real profile (flat then linear in tokens, linear in
KV read and prefill pairs) at a tenth of the A30's step times, with the paper's engine settings, so
that benchmarks of the routing machinery finish quickly.
"""

from __future__ import annotations

from block.profiles.profile import Profile

PAPER_ENGINE: dict[str, int] = {
    "max_num_seqs": 48,
    "max_num_batched_tokens": 512,
    "block_size": 16,
    "num_gpu_blocks": 1052,
    "max_model_len": 4096,
}


def tiny_fast_profile() -> Profile:
    return Profile(
        name="tiny-fast",
        model="synthetic",
        gpu="none",
        description="SYNTHETIC profile with 1-3 ms steps for router benchmarks and tests; not a measurement.",
        sources=(),
        assumptions=(
            "synthetic: numbers chosen by hand, not measured or derived from any GPU",
            "steps: decode batch 1 about 1.2 ms, batch 48 at 1,024 context about 2 ms, "
            "a 512-token chunk about 2 ms",
            "engine settings are the Block paper's "
            "(max_num_batched_tokens 512, max_num_seqs 48, 1,052 blocks of 16)",
        ),
        engine_defaults=dict(PAPER_ENGINE),
        step_overhead_s=0.0008,
        per_seq_s=5e-6,
        decode_kv_token_s=1e-8,
        prefill_pair_s=2e-10,
        linear_knots_tokens=(1, 64, 512, 4096),
        linear_knots_s=(0.0004, 0.0005, 0.0012, 0.006),
    )
