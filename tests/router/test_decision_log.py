"""The decision log: every request's decision (forecast and state per instance) against its outcome."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from block.cli import app as cli_app
from block.engine.server import BackgroundEngine
from block.engine.settings import EngineSettings, replica_config
from block.profiles import load_profile
from block.router.decision_report import read_log, report
from tests.router.servers import router


async def test_each_request_gets_a_line_with_every_candidate_and_its_outcome(tmp_path: Path) -> None:
    log_path = tmp_path / "decisions.jsonl"
    profile = load_profile("tiny-fast")
    engines = [
        BackgroundEngine(EngineSettings(profile, replica_config(profile), noise=0.0, seed=i)).start()
        for i in range(2)
    ]
    try:
        urls = [e.url for e in engines]
        async with (
            router(urls, policy="block", deadline_ms=500, decision_log=str(log_path)) as (app, url),
            httpx.AsyncClient(timeout=30) as c,
        ):
            ids = set(app.pool.instances)

            async def one(i: int) -> None:
                body = {"prompt": "hi " * (4 + i), "max_tokens": 5, "ignore_eos": True, "stream": i % 2 == 0}
                r = await c.post(url + "/v1/completions", json=body)
                assert r.status_code == 200, r.text

            await asyncio.gather(*(one(i) for i in range(6)))
    finally:
        for e in engines:
            e.stop()
    entries = read_log(log_path)  # the router closed (flushed) the log on shutdown
    assert len(entries) == 6
    assert len({e["id"] for e in entries}) == 6
    for e in entries:
        assert e["policy"] == "block" and e["chosen"] in ids
        assert {c["instance"] for c in e["candidates"]} == ids
        chosen = next(c for c in e["candidates"] if c["instance"] == e["chosen"])
        assert chosen["e2e_s"] > 0 and chosen["snapshot_age_s"] is not None
        assert e["actual"]["e2e_s"] > 0
    streamed = [e for e in entries if e["actual"]["ttft_s"] is not None]
    assert len(streamed) == 3
    assert all(e["actual"]["ttft_s"] <= e["actual"]["e2e_s"] for e in streamed)
    assert all(e["actual"]["output_tokens"] >= 1 for e in streamed)

    summary = report(entries)
    assert summary["requests"] == 6 and summary["without_forecast_share"] == 0
    assert sum(r["routed"] for r in summary["instances"].values()) == 6
    assert all(r["e2e_actual_over_forecast_p50"] > 0 for r in summary["instances"].values())

    out = CliRunner().invoke(cli_app, ["router", "decisions", str(log_path), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["requests"] == 6


def test_a_bad_line_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"chosen": "a", "candidates": []}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_log(path)
    out = CliRunner().invoke(cli_app, ["router", "decisions", str(path)])
    assert out.exit_code != 0 and "bad.jsonl:2" in out.output and "Traceback" not in out.output


def test_a_bias_correction_that_reorders_instances_is_reported() -> None:
    # instance a is forecast faster but runs 3x slower than forecast; b is unbiased
    def entry(i: int, chosen: str) -> dict:
        fc = {"a": 1.0, "b": 1.5}
        actual = {"a": 3.0, "b": 1.5}[chosen]
        return {
            "id": str(i),
            "chosen": chosen,
            "candidates": [{"instance": k, "ttft_s": 0.1, "e2e_s": v} for k, v in fc.items()],
            "actual": {"ttft_s": 0.1, "e2e_s": actual, "output_tokens": 10},
        }

    summary = report([entry(0, "a"), entry(1, "a"), entry(2, "b")])
    assert summary["instances"]["a"]["e2e_actual_over_forecast_p50"] == 3.0
    assert summary["instances"]["b"]["e2e_actual_over_forecast_p50"] == 1.0
    assert summary["choice_changed_by_bias_correction"] == pytest.approx(2 / 3, abs=1e-3)
