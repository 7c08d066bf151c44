"""`block predictor bench` prints the numbers the issue asks for."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from block.cli import app


def test_bench_json() -> None:
    result = CliRunner().invoke(
        app, ["predictor", "bench", "--running", "16", "--waiting", "4", "--iterations", "20", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"p50_ms", "p99_ms", "rss_mb", "stepwise_p50_ms"} <= set(report)
    assert report["p50_ms"] > 0 and report["stepwise_p50_ms"] > 0


def test_serve_needs_an_engine() -> None:
    result = CliRunner().invoke(app, ["predictor"])
    assert result.exit_code == 2
