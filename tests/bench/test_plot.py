"""The Figure 6 plot from synthetic results files."""

from __future__ import annotations

import json
from pathlib import Path

from block.bench.plot import collect, draw, sweep_capacity
from block.bench.record import RequestRecord
from block.bench.results import build_results


def write_synthetic_sweep(folder: Path, label: str, knee: float) -> None:
    """Results whose latency blows up near `knee` req/s, like a real sweep."""
    for qps in range(20, 38, 2):
        load = qps / knee
        ttft = 0.2 + 0.1 / max(1.05 - load, 0.02)
        e2e = 8 + 10 * load**4
        records = [
            RequestRecord(
                i,
                200,
                300,
                i / qps,
                i / qps,
                ttft * (1 + i / 50),
                e2e * (1 + i / 100),
                [0.02] * 299,
                300,
                200,
            )
            for i in range(100)
        ]
        doc = build_results({"qps": qps, "label": label}, records, 100 / qps + e2e, {})
        (folder / f"qps-{qps}.json").write_text(json.dumps(doc))


def test_collect_and_draw(tmp_path: Path) -> None:
    for label, knee in [("block", 31.0), ("llumnix", 30.0), ("round-robin", 27.0)]:
        (tmp_path / label).mkdir()
        write_synthetic_sweep(tmp_path / label, label, knee)
    (tmp_path / "cap.json").write_text(json.dumps({"capacity_qps": 29.5, "label": "min-qpm"}))
    series, caps = collect(
        [tmp_path / "block", tmp_path / "llumnix", tmp_path / "round-robin", tmp_path / "cap.json"]
    )
    assert set(series) == {"block", "llumnix", "round-robin"}
    assert [q for q, _ in series["block"]] == list(range(20, 38, 2))
    assert caps["min-qpm"] == 29.5
    assert caps["block"] > caps["round-robin"]
    out = tmp_path / "fig.png"
    draw(series, caps, out, title="synthetic")
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_sweep_capacity_stops_at_first_miss() -> None:
    def s(p99: float) -> dict:
        return {"ttft_s": {"p99": p99}, "failed": 0}

    assert sweep_capacity([(20, s(1)), (22, s(2.9)), (24, s(3.1)), (26, s(1))], 3.0) == 22
    assert sweep_capacity([(20, s(4))], 3.0) is None
