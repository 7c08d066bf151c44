"""`block predictor bench` and `accuracy` print the numbers the issue asks for."""

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


def test_bench_with_a_cached_prefix() -> None:
    """--cached-prefix: the candidate's forecast starts from a cache hit (the stepwise runs show it)."""
    args = ["predictor", "bench", "--running", "16", "--waiting", "4", "--iterations", "20", "--json"]
    result = CliRunner().invoke(app, [*args, "--cached-prefix", "128"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["cached_prefix"] == 128 and report["candidate_cached_tokens"] == 128
    assert report["p50_ms"] > 0
    assert CliRunner().invoke(app, [*args, "--cached-prefix", "-1"]).exit_code != 0


def test_serve_needs_an_engine() -> None:
    result = CliRunner().invoke(app, ["predictor"])
    assert result.exit_code == 2


def test_accuracy_against_live_engines() -> None:
    """The live benchmark end to end: two emulated engines, a quarter of the requests sent to both."""
    args = ["--instances", "2", "--qps", "20", "--num-requests", "40", "--sample-rate", "0.25"]
    args += ["--max-output", "16", "--profile", "tiny-fast", "--seed", "0", "--json"]
    result = CliRunner().invoke(app, ["predictor", "accuracy", *args])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["requests"] == 40 and report["sampled"] >= 1
    assert report["forecasts"] == 40 + report["sampled"]  # one more copy per sampled request
    assert 0 <= report["best_instance_accuracy"] <= 1
    assert report["e2e_error"] < 0.25  # about 4% here; a broken data path is off by far more


def test_accuracy_rejects_bad_input() -> None:
    result = CliRunner().invoke(app, ["predictor", "accuracy", "--instances", "0"])
    assert result.exit_code != 0 and "--instances" in result.output
