"""Live against the simulator for the overload experiment: rows paired by workload, load and variant,
goodput ratio compared relatively and high priority on target in points, 10% either way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from block.experiments.overload_compare import pair, within, write


def summary(rows: list[tuple[str, float, float, float]], qps: float) -> dict[str, Any]:
    return {
        "capacity": {"sharegpt": {"qps": qps, "bound": ""}},
        "rows": [
            {
                "workload": "sharegpt",
                "variant": v,
                "load": load,
                "goodput_ratio": ratio,
                "high_on_target": high,
                "goodput": ratio * qps,
            }
            for v, load, ratio, high in rows
        ],
    }


def test_rows_are_paired_and_judged_within_ten_percent(tmp_path: Path) -> None:
    sim = summary([("block+off", 1.0, 1.0, 0.99), ("block+queue", 2.0, 1.20, 1.0)], 18.9)
    live = summary(
        [("block+off", 1.0, 1.0, 0.97), ("block+queue", 2.0, 1.05, 0.995), ("llumnix", 2.0, 0.5, 0.5)], 17.0
    )
    rows = pair(sim, live)
    assert [(r["variant"], r["load"]) for r in rows] == [("block+off", 1.0), ("block+queue", 2.0)]
    assert within(rows[0])
    assert abs(rows[1]["goodput_ratio_rel_diff"] - (1.05 / 1.20 - 1)) < 1e-12 and not within(rows[1])
    text = write(tmp_path, sim, live)
    assert "1 of 2 rows whose live run kept real time are within 10%" in text and "live 17.0 req/s" in text
    assert json.loads((tmp_path / "compare.json").read_text())["rows"] == rows
    live["rows"][0]["valid"] = False  # a live run that did not keep real time is not counted
    assert "0 of 1 rows" in write(tmp_path, sim, live)
