"""`block experiment prefix`: the summary's exact shape and hit rates on a tiny cluster."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from block.experiments.prefix import PrefixArgs, run
from block.experiments.sim_runner import SimRunner


def test_tiny_experiment_writes_the_summary_exactly(tmp_path: Path) -> None:
    """Two instances, two groups behind shared system prompts and first-turn ShareGPT: the summary has
    exactly the issue's shape, shared prompts hit the cache and first turns never do."""
    a = PrefixArgs(
        workloads=["shared-prefix:2:512", "sharegpt"],
        policies=["block", "cache-aware", "round-robin"],
        num_requests=40,
        instances=2,
        max_probes=1,
    )
    summary = run(a, SimRunner(workers=1, resume=False), tmp_path, Console(record=True, width=120))
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert set(summary) == {"workloads"}
    assert set(summary["workloads"]) == {"shared-prefix:2:512", "sharegpt"}
    for per_policy in summary["workloads"].values():
        assert set(per_policy) == {"block", "cache-aware", "round-robin"}
        for cell in per_policy.values():
            assert set(cell) == {"capacity_qps", "hit_rate"}
            assert isinstance(cell["capacity_qps"], float) and cell["capacity_qps"] > 0
            assert 0.0 <= cell["hit_rate"] <= 1.0
    shared = summary["workloads"]["shared-prefix:2:512"]
    # a 512-token system prompt is most of each prompt: every policy finds it cached after the first
    assert all(c["hit_rate"] > 0.3 for c in shared.values())
    assert all(c["hit_rate"] == 0.0 for c in summary["workloads"]["sharegpt"].values())
    details = json.loads((tmp_path / "details.json").read_text())
    assert len(details["cells"]) == 6 and all(c["probes"] for c in details["cells"])
    assert all(c["fixed_rate"]["hit_rate"] is not None for c in details["cells"])
    assert (tmp_path / "report.md").read_text().startswith("# Prefix caching (sim)")
    assert (tmp_path / "figure6_prefix.png").stat().st_size > 0
    assert list((tmp_path / "runs").glob("shared-prefix-2-512_block_qps*.json"))


def test_the_ceiling_hits_at_least_what_any_policy_hits(tmp_path: Path) -> None:
    """`ceiling` (llumnix where a block computed anywhere is cached everywhere) serves at least the share
    of prompt tokens from cache that any real policy does, on the same requests."""
    a = PrefixArgs(
        workloads=["shared-prefix:4:256"],
        policies=["block", "cache-aware", "llumnix", "ceiling"],
        num_requests=60,
        instances=3,
        max_probes=1,
    )
    summary = run(a, SimRunner(workers=1, resume=False), tmp_path, Console(record=True, width=120))
    cells = summary["workloads"]["shared-prefix:4:256"]
    assert set(cells) == {"block", "cache-aware", "llumnix", "ceiling"}
    assert all(cells["ceiling"]["hit_rate"] >= c["hit_rate"] for c in cells.values())
    assert cells["ceiling"]["hit_rate"] > cells["llumnix"]["hit_rate"]


def test_the_ceiling_is_refused_live() -> None:
    from typer.testing import CliRunner

    from block.cli import app

    result = CliRunner().invoke(
        app, ["experiment", "prefix", "--mode", "live", "--policies", "block,ceiling"]
    )
    assert result.exit_code == 2
    assert "ceiling is a simulated bound" in result.output


def test_the_ceiling_needs_caching_on() -> None:
    from typer.testing import CliRunner

    from block.cli import app

    args = ["simulate", "--prefix-ceiling", "--no-prefix-caching", "--num-requests", "10", "--qps", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "needs it on" in result.output


def test_a_bad_workload_is_one_line_before_any_run(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from block.cli import app

    for spec, says in (("nope", "bad workload spec 'nope'"), ("shared-prefix:a:b", "'shared-prefix:a:b'")):
        out = tmp_path / spec.replace(":", "_")
        result = CliRunner().invoke(app, ["experiment", "prefix", "--workloads", spec, "--out", str(out)])
        assert result.exit_code == 2
        assert says in result.output and "Traceback" not in result.output
        assert not (out / "runs").exists()
