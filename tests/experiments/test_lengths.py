"""The lengths experiment at a tiny scale: every variant runs, the report and JSON are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from block.experiments import lengths
from block.experiments.sim_runner import SimRunner


def test_lengths_experiment_reports_each_variant(tmp_path: Path) -> None:
    args = lengths.LengthsArgs(
        lengths=["known", "estimated", "quantile:0.9"], rates=[3.0], num_requests=60, instances=2
    )
    doc = lengths.run(args, SimRunner(workers=1), tmp_path)
    assert set(doc["variants"]) == {"known", "median", "q0.9"}
    assert len(list((tmp_path / "runs").glob("block-*_qps*.json"))) == 3
    report = (tmp_path / "report.md").read_text()
    assert "Capacity" in report and "TTFT P99 s" in report and "| q0.9 |" in report
    quality = json.loads((tmp_path / "lengths.json").read_text())["plan_quality"]
    assert set(quality) == {"median", "q0.9"}
    assert quality["q0.9"]["share_past_plan"] < quality["median"]["share_past_plan"]


def test_lengths_args_are_checked() -> None:
    with pytest.raises(ValueError):
        lengths.LengthsArgs(lengths=["known", "known"])
    with pytest.raises(ValueError):
        lengths.LengthsArgs(lengths=["quantile:2"])
    with pytest.raises(ValueError):
        lengths.LengthsArgs(split="train")
    assert [lengths.variant_label(x) for x in ("known", "estimated", "quantile:0.7")] == [
        "known",
        "median",
        "q0.7",
    ]


def test_length_models_compare_side_by_side(tmp_path: Path) -> None:
    from block.length import load_default_estimator

    other = load_default_estimator().save(tmp_path / "copy.npz")  # a second model file (same model)
    args = lengths.LengthsArgs(
        lengths=["known", "estimated"],
        rates=[3.0],
        num_requests=40,
        instances=2,
        models={"tfidf": "default", "copy": str(other)},
    )
    doc = lengths.run(args, SimRunner(workers=1), tmp_path / "out")
    assert set(doc["variants"]) == {"known", "tfidf-median", "copy-median"}
    quality = doc["plan_quality"]
    assert quality["tfidf-median"] == quality["copy-median"]  # the same model plans the same
    assert "| copy-median |" in (tmp_path / "out" / "report.md").read_text()
