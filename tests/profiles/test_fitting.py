"""The fitting pieces on synthetic data (no CSVs needed), and the full fit when the CSVs exist."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from block.profiles import load_profile
from block.profiles.architectures import MODELS
from block.profiles.gpus import GPUS
from block.profiles.knots import fit_knots, isotonic
from block.profiles.roofline import memory_bound_share, num_gpu_blocks, scale_linear_time
from block.profiles.synthetic import tiny_fast_profile

REPO = Path(__file__).resolve().parents[2]
VIDUR = Path(os.environ.get("BLOCK_VIDUR_DATA", REPO.parent / "shared" / "data" / "vidur-profiling"))


def test_knot_fit_recovers_a_piecewise_linear_function() -> None:
    xs = [1, *range(8, 4097, 8)]
    truth_k, truth_v = [1, 64, 512, 4096], [0.010, 0.011, 0.035, 0.26]
    ys = list(np.interp(xs, truth_k, truth_v))
    fit = fit_knots(xs, ys, max_knots=6)
    assert fit.max_rel_error < 1e-6
    assert list(fit.seconds) == sorted(fit.seconds)


def test_knot_fit_is_monotone_on_noisy_staircase() -> None:
    rng = np.random.default_rng(0)
    xs = np.arange(8, 4097, 8)
    ys = 0.01 + 0.00007 * (np.ceil(xs / 128) * 128) * (1 + 0.03 * rng.standard_normal(len(xs)))
    fit = fit_knots(xs.tolist(), ys.tolist(), max_knots=12)
    assert len(fit.tokens) == 12
    assert list(fit.seconds) == sorted(fit.seconds)
    assert fit.rms_rel_error < 0.1


def test_isotonic_pools_violators() -> None:
    out = isotonic(np.array([1.0, 3.0, 2.0, 4.0]), np.ones(4))
    assert out.tolist() == [1.0, 2.5, 2.5, 4.0]


def test_kv_bytes_and_blocks() -> None:
    assert MODELS["llama-2-7b"].kv_bytes_per_token() == 524288  # 2 x 32 x 32 x 128 x 2
    assert MODELS["llama-3-8b"].kv_bytes_per_token() == 131072  # GQA: 8 KV heads
    from block.profiles.fit_vidur import runtime_reserve_bytes

    reserve = runtime_reserve_bytes()
    assert 0 < reserve < 2 * 1024**3
    assert num_gpu_blocks(MODELS["llama-2-7b"], GPUS["a30"], 1, 16, reserve) == 1052
    with pytest.raises(ValueError):
        num_gpu_blocks(MODELS["llama-2-70b"], GPUS["a100"], 1, 16, reserve)  # 138 GB of weights


def test_roofline_scaling_moves_from_bandwidth_to_flops() -> None:
    a100, a30 = GPUS["a100"], GPUS["a30"]
    assert memory_bound_share(1, a100) > 0.99
    assert memory_bound_share(4096, a100) < 0.05
    small = scale_linear_time(1.0, 1, a100, a30)
    large = scale_linear_time(1.0, 4096, a100, a30)
    assert small == pytest.approx(2039 / 933, rel=0.01)
    assert large == pytest.approx(312 / 165, rel=0.02)


def test_tiny_fast_json_matches_its_code() -> None:
    assert load_profile("tiny-fast") == tiny_fast_profile()


@pytest.mark.skipif(not (VIDUR / "a100").is_dir(), reason="Vidur CSVs not present")
def test_fit_from_csvs_reproduces_the_shipped_profiles(tmp_path: Path) -> None:
    from block.profiles.fit_vidur import check_fit, fit_all

    results = fit_all(VIDUR, tmp_path)
    for r in results:
        written = json.loads((tmp_path / f"{r.profile.name}.json").read_text())
        assert written == load_profile(r.profile.name).to_dict(), (
            f"{r.profile.name} differs from the shipped JSON"
        )
        if r.fit is not None:
            assert r.fit.rms_rel_error < 0.05
            assert r.fit.max_rel_error < 0.2  # bounded by the 128-token GEMM tile steps
            assert check_fit(r.profile, r.fit) < 1e-4
