"""Qwen2-7B profiles: carried from Llama-2-7B's measured A100 table by architecture, then to the A30."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from block.cli import app
from block.profiles import load_profile
from block.profiles.architectures import MODELS
from block.profiles.gpus import GPUS
from block.profiles.roofline import scale_linear_to_arch

runner = CliRunner()


def test_qwen2_profiles_are_listed_and_name_their_sources_and_assumptions() -> None:
    listed = json.loads(runner.invoke(app, ["profile", "list", "--json"]).output)
    assert {"qwen2-7b-a30", "qwen2-7b-a100"} <= {p["name"] for p in listed}
    shown = runner.invoke(app, ["profile", "show", "qwen2-7b-a30"], env={"COLUMNS": "300"}).output
    assert "Qwen/Qwen2-7B" in shown and "derived from the qwen2-7b-a100 profile" in shown
    profile = load_profile("qwen2-7b-a30")
    assert any("Qwen/Qwen2-7B config.json" in s for s in profile.sources)
    assert any("mlp.csv" in s for s in profile.sources)  # the measured Llama-2-7B table
    text = " ".join(profile.assumptions)
    assert "derived from another model" in text and "28 query / 4 KV heads" in text
    assert "2 x 28 layers x 4 KV heads x 128 x 2 bytes = 57344 bytes/token" in text


def test_linear_layers_scale_by_the_architectures_and_attention_by_their_own_shapes() -> None:
    llama, qwen = MODELS["llama-2-7b"], MODELS["qwen2-7b"]
    assert qwen.linear_params() == 28 * (2 * 3584**2 + 2 * 3584 * 512 + 3 * 3584 * 18944)
    ratio = scale_linear_to_arch(1.0, 1, llama, qwen, GPUS["a100"])
    assert ratio == pytest.approx(qwen.linear_params() / llama.linear_params(), rel=0.01)
    q100, q30 = load_profile("qwen2-7b-a100"), load_profile("qwen2-7b-a30")
    l100, l30 = load_profile("llama-2-7b-a100"), load_profile("llama-2-7b-a30")
    for n in (1, 512, 4096):  # linear layers: within 1% of Llama-2-7B's on the same GPU
        assert q100.linear_time(n) == pytest.approx(l100.linear_time(n), rel=0.02)
    # GQA: a ninth of Llama-2-7B's KV bytes per token, so decode reads far less and the cache holds more
    assert q30.decode_kv_token_s == pytest.approx(l30.decode_kv_token_s * 57344 / 524288, rel=0.01)
    assert q30.engine_defaults["num_gpu_blocks"] > 7 * l30.engine_defaults["num_gpu_blocks"]
    assert (q30.engine_defaults["max_num_seqs"], q30.engine_defaults["max_num_batched_tokens"]) == (48, 512)
    step = {p.name: p.decode_step_time(48, 48 * 1024) for p in (q30, q100, l30)}
    assert step["qwen2-7b-a30"] < step["llama-2-7b-a30"]
    assert step["qwen2-7b-a30"] > step["qwen2-7b-a100"]  # the A30 is the slower GPU
