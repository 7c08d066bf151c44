"""Shared analysis of an experiment's runs: capacity per variant, capacity files, plots, tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from block.experiments.plan import RunOutput
from block.sim.capacity import PAPER_SLO_S, Capacity, capacity


def capacities(
    outputs: Sequence[RunOutput],
    slo_s: float = PAPER_SLO_S,
    key: Callable[[RunOutput], str] = lambda o: o.spec.display,
) -> dict[str, Capacity]:
    """Capacity per variant (first-seen order), from each run's P99 TTFT (see block.sim.capacity)."""
    points: dict[str, list[tuple[float, float | None]]] = {}
    for o in outputs:
        p99 = o.summary["ttft_s"]["p99"] if o.summary.get("failed", 0) == 0 else None
        points.setdefault(key(o), []).append((o.spec.qps, p99))
    return {k: capacity(v, slo_s) for k, v in points.items()}


def ratio(a: Capacity, b: Capacity) -> float | None:
    if a.qps is None or b.qps is None or b.qps <= 0:
        return None
    return a.qps / b.qps


def plot_sweep(runs_dir: Path, png: Path, title: str, slo_s: float = PAPER_SLO_S) -> Path:
    """Figure 6 style panels with `block plot`'s own drawing code."""
    from block.bench.plot import collect, draw

    series, caps = collect([runs_dir], slo_s)
    draw(series, caps, png, title=title, slo_ttft_p99=slo_s)
    return png


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"
