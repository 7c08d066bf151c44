"""`block realengine accuracy`'s replay, against emulated engines read as stock vLLM (/metrics plus what
was sent and streamed back): the calibrated trackers, fed the same events as the nominal ones, forecast
the E2E latency of engines with model error much better."""

from __future__ import annotations

import asyncio

from block.engine.server import BackgroundEngine
from block.engine.settings import EngineSettings, replica_config
from block.profiles import load_profile
from block.profiles.model_error import ModelError
from block.realengine import launcher
from block.realengine.accuracy import replay, summarize


def test_calibration_cuts_the_forecast_error_on_stock_vllm_state() -> None:
    profile = load_profile("llama-2-7b-a30")
    error = ModelError("static", 0.5)  # instances 0 and 2: 0.73x and 1.65x the profile's step time
    engines = [
        BackgroundEngine(
            EngineSettings(
                profile, replica_config(profile), noise=0.0, seed=seed, model=launcher.SERVED_MODEL_NAME,
                model_error=error,
            )
        ).start()
        for seed in (0, 2)
    ]  # fmt: skip
    try:
        requests = [(0.12 * k, 40 + 30 * (k % 5), 24) for k in range(24)]
        outcomes, tracked = asyncio.run(replay([e.url for e in engines], profile, requests, seed=0))
    finally:
        for e in engines:
            e.stop()
    report = summarize(outcomes, tracked)
    assert report["completed"] == 24
    nominal, calibrated = report["nominal"]["e2e_error"], report["calibrated"]["e2e_error"]
    assert nominal["n"] == calibrated["n"] == 24
    assert calibrated["mean_abs"] < 0.6 * nominal["mean_abs"]
    fast, slow = (c["decode"] for c in report["calibration"])
    assert slow > 1.5 * fast
