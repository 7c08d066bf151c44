"""`block engine --model-error`: the engine runs at a true speed while reporting its nominal profile."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx
import pytest
import typer
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from block.engine.cli import register
from block.engine.engine_loop import EngineClock, EngineLoop
from block.engine.server import background_engine
from block.profiles import StepNoise
from block.profiles.model_error import ModelError
from block.replica import Replica, Request
from tests.engine.conftest import engine_settings


async def test_steps_take_the_factor_at_their_start_on_the_wall_clock() -> None:
    s = engine_settings()
    asked: list[float] = []

    def factor(t: float) -> float:
        asked.append(t)
        return 1.5

    engine = EngineLoop(
        Replica(s.config, s.profile),
        StepNoise.exact(),
        EngineClock(),
        max_lag_s=float("inf"),
        model_error=factor,
    )
    task = asyncio.create_task(engine.run())
    try:
        live = [Request(f"r{i}", 70 + 10 * i, 5) for i in range(2)]
        handles = [engine.submit(r, stream=True, stopped_by_cap=True) for r in live]
        await asyncio.wait_for(asyncio.gather(*(h.done for h in handles)), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    virtual = Replica(s.config, s.profile)
    twins = [Request(r.id, r.prompt_tokens, r.output_tokens) for r in live]
    for t in twins:
        virtual.add(t)
    while virtual.step(lambda d: d * 1.5) is not None:
        pass
    start = live[0].first_scheduled_time
    assert start is not None
    for r, t in zip(live, twins, strict=True):
        assert r.finish_time - start == pytest.approx(t.finish_time, abs=1e-9)
    # asked once per step, at wall-clock times (shared by every engine of the host), in order
    assert len(asked) == engine.num_steps and asked == sorted(asked)
    assert all(abs(t - time.time()) < 120 for t in asked)


def step_seconds(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "block:engine_step_seconds":
            return family.samples[0].value
    raise AssertionError("no block:engine_step_seconds in /metrics")


def test_an_engine_with_model_error_runs_slower_and_reports_its_nominal_profile() -> None:
    error = ModelError("static", 0.5)
    nominal = dataclasses.replace(engine_settings(), seed=2)  # the seed is the instance index in a fleet
    factor = error.factor(nominal.seed)(0.0)
    assert error.speed(nominal.seed)(0.0) < 0.9  # this instance draws a slow engine
    skewed = dataclasses.replace(nominal, model_error=error)
    body = {"prompt": list(range(200)), "max_tokens": 12, "ignore_eos": True}
    spent, states = [], []
    for settings in (nominal, skewed):
        with background_engine(settings) as engine:
            r = httpx.post(engine.url + "/v1/completions", json=body, timeout=30)
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 12
            spent.append(step_seconds(engine.url))
            states.append(httpx.get(engine.url + "/state", timeout=10).json())
    # the same steps, each the factor longer: the emulated GPU time says so exactly
    assert spent[1] / spent[0] == pytest.approx(factor, rel=1e-9)
    # ...while /state, what Block's predictors read, is the nominal engine's
    assert states[1]["profile"] == states[0]["profile"] == nominal.profile.name
    assert set(states[1]) == set(states[0]) and states[1]["config"] == states[0]["config"]


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_the_flag_is_listed_and_bad_input_is_one_line() -> None:
    assert "--model-error" in CliRunner().invoke(_app(), ["engine", "--help"]).output
    for bad, says in (("static:2", "write 0.2 for 20%"), ("slow:0.2", "unknown model error kind")):
        result = CliRunner().invoke(_app(), ["engine", "--model-error", bad])
        assert result.exit_code == 2 and says in result.output, result.output
        assert "Traceback" not in result.output
