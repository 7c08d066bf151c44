"""The paper's extension experiment as rows of `block experiment config-search`: Qwen2-7B on the A30."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from block.experiments import config_search
from block.experiments.config_search import ConfigSearchArgs, default_rows
from block.experiments.sim_runner import SimRunner


def test_qwen2_rows_run_with_poisson_and_bursty_arrivals(tmp_path: Path) -> None:
    rows = {r.name: r for r in default_rows()}
    poisson, bursty = rows["qwen2-7b-a30"], rows["qwen2-7b-a30-bursty"]
    assert poisson.profile == bursty.profile == "qwen2-7b-a30" and poisson.extension
    assert bursty.process == "gamma" and 2 <= bursty.burstiness <= 4
    args = ConfigSearchArgs(
        policies=["block"], rows=[replace(bursty)], num_requests=120, instances=2, fractions=(0.5, 1.2)
    )
    data = config_search.run(args, SimRunner(workers=1), tmp_path)
    assert data["qwen2-7b-a30-bursty"]["arrivals"] == {"process": "gamma", "burstiness": 3.0}
    assert data["qwen2-7b-a30-bursty"]["capacity"]["block"] is not None
    assert "gamma CV 3" in (tmp_path / "report.md").read_text()
