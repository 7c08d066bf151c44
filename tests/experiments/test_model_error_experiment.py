"""`block experiment model-error`: the summary's exact shape, resuming, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from block.experiments import cli as experiments_cli
from block.experiments import model_error
from block.experiments.model_error import ModelErrorArgs
from block.sim import batch


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
    assert set(summary) == {"rows", "fleet_speed"}
    speeds = {(r["kind"], r["error"]): r["mean_speed"] for r in summary["fleet_speed"]}
    assert set(speeds) == {("static", 0.4), ("correlated", 0.4)}
    assert 0.6 <= speeds[("correlated", 0.4)] < 1.0  # shared slowdowns only slow the fleet
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

    assert all(p["wall_s"] >= 0 for c in details["cells"] for p in c["probes"])
    assert list((tmp_path / "runs").glob("static-0.4_po2_qps*.json"))  # every probe's records

    def no_more_runs(*_a: object) -> None:
        raise AssertionError("a probe was simulated again")

    monkeypatch.setattr(batch, "execute", no_more_runs)
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
