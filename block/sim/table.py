"""The printed comparison: latency per policy at each rate, and each policy's capacity."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from rich.table import Table

from block.sim.batch import RunResult
from block.sim.capacity import PAPER_SLO_S, Capacity, capacity


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def comparison_table(results: Sequence[RunResult], title: str = "Simulated latency") -> Table:
    table = Table(title=title)
    for col in ("QPS", "policy", "TTFT mean ms", "TTFT P99 s", "E2E mean s", "E2E P99 s", "req/s", "done"):
        if col == "policy":
            table.add_column(col, no_wrap=True)
        else:
            table.add_column(col, justify="right")
    by_rate: dict[float, list[RunResult]] = defaultdict(list)
    for r in results:
        by_rate[r.run.qps].append(r)
    for qps in sorted(by_rate):
        for i, r in enumerate(by_rate[qps]):
            s = r.summary
            table.add_row(
                f"{qps:g}" if i == 0 else "",
                r.run.label or r.run.config.policy,
                _ms(s["ttft_s"]["mean"]),
                _s(s["ttft_s"]["p99"]),
                _s(s["e2e_s"]["mean"]),
                _s(s["e2e_s"]["p99"]),
                f"{s['request_throughput']:.2f}",
                f"{s['completed']}/{s['completed'] + s['failed']}",
                end_section=i == len(by_rate[qps]) - 1,
            )
    return table


def capacities(results: Sequence[RunResult], slo_s: float = PAPER_SLO_S) -> dict[str, Capacity]:
    """Capacity per label (policy or variant), in first-seen order."""
    points: dict[str, list[tuple[float, float | None]]] = {}
    for r in results:
        points.setdefault(r.run.label or r.run.config.policy, []).append(
            (r.run.qps, r.summary["ttft_s"]["p99"])
        )
    return {label: capacity(pts, slo_s) for label, pts in points.items()}


def capacity_table(
    caps: dict[str, Capacity], slo_s: float = PAPER_SLO_S, reference: str | None = None
) -> Table:
    table = Table(
        title=f"Capacity: highest QPS with P99 TTFT <= {slo_s:g} s (log-interpolated between rates)"
    )
    table.add_column("policy", no_wrap=True)
    table.add_column("capacity QPS", justify="right", no_wrap=True)
    ref = caps.get(reference) if reference else None
    if ref is not None:
        table.add_column(f"{reference} / policy", justify="right")
    for label, cap in caps.items():
        row = [label, str(cap)]
        if ref is not None:
            row.append(_ratio(ref, cap))
        table.add_row(*row)
    return table


def _ratio(a: Capacity, b: Capacity) -> str:
    if a.qps is None or b.qps is None or b.qps == 0:
        return "-"
    approx = "~" if a.bound or b.bound else ""
    return f"{approx}{a.qps / b.qps:.3f}"
