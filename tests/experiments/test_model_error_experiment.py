"""`block experiment model-error`: the capacity search, the summary's exact shape, resuming, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from block.experiments import cli as experiments_cli
from block.experiments import model_error
from block.experiments.model_error import Cell, ModelErrorArgs


def test_the_search_finds_the_crossing_from_a_far_guess(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a P99 that grows exponentially with rate, log-interpolation recovers the crossing exactly."""
    monkeypatch.setattr(model_error, "p99_ttft", lambda a, cell, qps: math.exp((qps - 30.0) / 2.0))
    a = ModelErrorArgs()
    for guess in (12.0, 31.0, 80.0):
        res = model_error.search(a, Cell("drift", 0.2, "block"), guess)
        assert res.capacity_qps == pytest.approx(30.0 + 2.0 * math.log(3.0), rel=1e-9)
        assert res.bound == "" and len(res.probes) <= a.max_probes
        passed = [p["qps"] for p in res.probes if p["passed"]]
        failed = [p["qps"] for p in res.probes if not p["passed"]]
        assert max(passed) < min(failed)  # a bracket around the crossing...
        if len(res.probes) < a.max_probes:  # ...narrowed to the tolerance unless the probes ran out
            assert min(failed) - max(passed) <= a.tolerance * max(passed) * 1.01
    near = model_error.search(a, Cell("drift", 0.2, "block"), 31.0)
    assert len(near.probes) <= 6  # a good guess: a step to bracket it, a few bisections


def test_a_policy_that_never_fails_is_a_lower_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_error, "p99_ttft", lambda a, cell, qps: 0.5)
    res = model_error.search(ModelErrorArgs(max_probes=4), Cell("none", 0.0, "po2"), 30.0)
    assert res.bound == ">=" and res.capacity_qps == max(p["qps"] for p in res.probes) > 30.0


def test_small_grid_writes_the_summary_exactly_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ModelErrorArgs(
        policies=["po2", "round-robin"],
        errors=[0.4],
        kinds=["static", "correlated"],
        num_requests=300,
        instances=2,
        workers=2,
        max_probes=5,
    )
    model_error.run(args, tmp_path, Console(record=True, width=120))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"rows"}
    rows = summary["rows"]
    assert len(rows) == 2 * 2 * 2  # kinds x (error 0 + 0.4) x policies
    for row in rows:
        assert set(row) == {"error", "kind", "policy", "capacity_qps"}
        assert isinstance(row["error"], float) and isinstance(row["capacity_qps"], float)
        assert row["kind"] in ("static", "correlated") and row["capacity_qps"] > 0
    refs = {(r["kind"], r["policy"]): r["capacity_qps"] for r in rows if r["error"] == 0}
    for policy in args.policies:  # error 0 is measured once and listed under every kind
        assert refs[("static", policy)] == refs[("correlated", policy)]
    details = json.loads((tmp_path / "details.json").read_text())
    assert len(details["cells"]) == 6 and all(c["probes"] for c in details["cells"])
    assert "model error correlated" in (tmp_path / "report.md").read_text()

    def no_more_runs(*_a: object) -> None:
        raise AssertionError("a finished cell was measured again")

    monkeypatch.setattr(model_error, "search", no_more_runs)
    again = model_error.run(args, tmp_path, Console(record=True, width=120))
    assert again == summary


def _app() -> typer.Typer:
    app = typer.Typer()
    experiments_cli.register(app)
    return app


def test_cli_refuses_live_mode_and_bad_grids() -> None:
    assert experiments_cli.ME_POLICIES == model_error.DEFAULT_POLICIES
    for argv, says in (
        (["--mode", "live"], "simulator only"),
        (["--kinds", "static,warp"], "unknown model error kind 'warp'"),
        (["--errors", "0.2,20"], "fractions in (0, 1)"),
        (["--policies", "block,nope"], "unknown policy nope"),
    ):
        result = CliRunner().invoke(_app(), ["experiment", "model-error", *argv])
        text = " ".join(result.output.replace("│", " ").split())  # the error box wraps lines
        assert result.exit_code == 2 and says in text, result.output
