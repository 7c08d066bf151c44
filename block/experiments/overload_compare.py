"""Live against the simulator for `block experiment overload`: the same runs at the same scale, side by side.

A live run (4 emulated engines) is followed by the simulator on exactly its arguments (instances,
requests, max_model_len, seed, loads, variants), written under `sim/`; `compare.md` and `compare.json`
then put the two summaries side by side. Each mode measures its own capacity first, so a row compares
the same load relative to each mode's own capacity: goodput ratio (relative difference, live over sim)
and the share of high priority on target (difference in points). The done-when asks for the same shape
within 10% (TOLERANCE). A live run that did not keep real time (block/live_validity.py) is shown but
not counted: it measures the machine, not the router.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from block.experiments.analysis import fmt, md_table

TOLERANCE = 0.10  # live within 10% of the simulator


def pair(sim: dict[str, Any], live: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (workload, load, variant) present in both summaries."""
    key = ("workload", "load", "variant")
    by_key = {tuple(r[k] for k in key): r for r in sim["rows"]}
    rows = []
    for lr in live["rows"]:
        sr = by_key.get(tuple(lr[k] for k in key))
        if sr is None:
            continue
        s_ratio, l_ratio = sr["goodput_ratio"], lr["goodput_ratio"]
        rel = l_ratio / s_ratio - 1 if s_ratio and l_ratio is not None else None
        rows.append(
            {
                **{k: lr[k] for k in key},
                "sim_goodput_ratio": s_ratio,
                "live_goodput_ratio": l_ratio,
                "goodput_ratio_rel_diff": rel,
                "sim_high_on_target": sr["high_on_target"],
                "live_high_on_target": lr["high_on_target"],
                "high_on_target_diff": lr["high_on_target"] - sr["high_on_target"],
                "sim_goodput": sr["goodput"],
                "live_goodput": lr["goodput"],
                "live_valid": lr.get("valid"),
            }
        )
    return rows


def within(row: dict[str, Any], tolerance: float = TOLERANCE) -> bool:
    rel = row["goodput_ratio_rel_diff"]
    return rel is not None and abs(rel) <= tolerance and abs(row["high_on_target_diff"]) <= tolerance


def report(rows: list[dict[str, Any]], sim: dict[str, Any], live: dict[str, Any]) -> str:
    caps = ", ".join(
        f"{w}: sim {c['bound']}{fmt(c['qps'], 1)}, live {live['capacity'].get(w, {}).get('bound', '')}"
        f"{fmt(live['capacity'].get(w, {}).get('qps'), 1)} req/s"
        for w, c in sim["capacity"].items()
    )
    table = [
        [
            r["workload"],
            f"{r['load']:g}",
            r["variant"],
            fmt(r["sim_goodput_ratio"]),
            fmt(r["live_goodput_ratio"]),
            "-" if r["goodput_ratio_rel_diff"] is None else f"{r['goodput_ratio_rel_diff']:+.1%}",
            f"{r['sim_high_on_target']:.1%}",
            f"{r['live_high_on_target']:.1%}",
            "yes" if within(r) else "NO",
            {True: "yes", False: "INVALID"}.get(r["live_valid"], "-"),
        ]
        for r in rows
    ]
    headers = [
        "workload",
        "load",
        "variant",
        "sim goodput ratio",
        "live goodput ratio",
        "live vs sim",
        "sim high on target",
        "live high on target",
        f"within {TOLERANCE:.0%}",
        "live kept real time",
    ]
    counted = [r for r in rows if r["live_valid"] is not False]
    ok = sum(within(r) for r in counted)
    return "\n".join(
        [
            "# Overload: live against the simulator at the same scale",
            "",
            f"Capacities (block without admission, P99 TTFT <= 3 s): {caps}. "
            f"{ok} of {len(counted)} rows whose live run kept real time are within {TOLERANCE:.0%} "
            f"(goodput ratio and high on target); not counted (live did not keep real time): "
            f"{len(rows) - len(counted)}.",
            "",
            md_table(headers, table),
            "",
        ]
    )


def write(out: Path, sim: dict[str, Any], live: dict[str, Any]) -> str:
    rows = pair(sim, live)
    (out / "compare.json").write_text(json.dumps({"rows": rows, "tolerance": TOLERANCE}, indent=2) + "\n")
    text = report(rows, sim, live)
    (out / "compare.md").write_text(text)
    return text
