"""An engine that cannot keep real time says so through the metric live runs read
(block:engine_step_lag_seconds)."""

from __future__ import annotations

import dataclasses
import json
import urllib.request

from block import live_validity
from block.engine.server import background_engine
from block.engine.settings import EngineSettings, replica_config
from tests.conftest import make_test_profile


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url + "/v1/completions", json.dumps(body).encode(), {"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def test_an_engine_whose_steps_are_shorter_than_its_own_loop_reports_lag_and_an_invalid_run() -> None:
    # Steps of about 2 microseconds: no Python loop completes a step that fast, so every step ends late
    # by more than the one before, on any machine, loaded or not.
    profile = dataclasses.replace(
        make_test_profile(),
        step_overhead_s=1e-6,
        per_seq_s=0.0,
        decode_kv_token_s=0.0,
        prefill_pair_s=0.0,
        linear_knots_s=(1e-6, 1e-6, 1e-6, 1e-6),
    )
    settings = EngineSettings(
        profile, replica_config(profile, num_gpu_blocks=512), noise=0.0, seed=1, model="m"
    )
    with background_engine(settings) as engine:
        before = live_validity.scrape(engine.url)
        assert before is not None and before.steps == 0
        out = _post(engine.url, {"prompt": [1, 2, 3], "max_tokens": 4000, "ignore_eos": True})
        assert out["usage"]["completion_tokens"] == 4000
        lag = live_validity.scrape(engine.url)
    assert lag is not None
    during = lag.minus(before)
    assert during.steps >= 4000
    assert during.step_seconds < 0.02  # 4,000 modelled steps of ~2 us
    assert during.lag_seconds > during.step_seconds  # ... that took far longer in real time
    verdict = live_validity.judge(during)
    assert verdict.valid is False and verdict.message.startswith("INVALID"), (during, verdict)
    assert verdict.mean_lag_s is not None and verdict.mean_lag_s > live_validity.MAX_MEAN_LAG_S
