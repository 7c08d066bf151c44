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
