"""Figure 6 of the Block paper from results files: latency and throughput against rate, and capacity.

Panels: mean E2E, P99 E2E, output throughput (top); mean TTFT, P99 TTFT, capacity bars (bottom).
One line per label (config "label", else "policy", else the folder name). Capacity comes from
capacity.json files when given, else from the sweep: the highest rate whose P99 TTFT meets the SLO.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

Series = dict[str, list[tuple[float, dict]]]  # label -> [(qps, summary)] sorted by qps


def _label(config: dict, path: Path) -> str:
    return str(config.get("label") or config.get("policy") or path.parent.name or path.stem)


def _files(paths: Sequence[Path]) -> list[Path]:
    files = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(p.glob("*.json")))
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"no such file or folder: {p}")
    if not files:
        raise ValueError("no results files found")
    return files


def collect(paths: Sequence[Path], slo_ttft_p99: float = 3.0) -> tuple[Series, dict[str, float | None]]:
    series: Series = {}
    capacities: dict[str, float | None] = {}
    for f in _files(paths):
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read {f}: {e}") from None
        if isinstance(data, dict) and "capacity_qps" in data:
            capacities[str(data.get("label") or data.get("policy") or f.parent.name)] = data["capacity_qps"]
            continue
        if not isinstance(data, dict) or "summary" not in data or "config" not in data:
            raise ValueError(f"{f} is not a Block results file")
        qps = data["config"].get("qps")
        if qps is None:
            continue  # an all-at-once run has no rate to plot against
        series.setdefault(_label(data["config"], f), []).append((float(qps), data["summary"]))
    for label, points in series.items():
        points.sort(key=lambda p: p[0])
        if label not in capacities:
            capacities[label] = sweep_capacity(points, slo_ttft_p99)
    return series, capacities


def sweep_capacity(points: list[tuple[float, dict]], slo_ttft_p99: float) -> float | None:
    """Highest rate below which every measured rate met P99 TTFT <= SLO."""
    best = None
    for qps, s in points:
        p99 = s["ttft_s"]["p99"]
        if p99 is None or p99 > slo_ttft_p99 or s.get("failed", 0) > 0:
            break
        best = qps
    return best


def draw(
    series: Series,
    capacities: dict[str, float | None],
    out: Path,
    title: str | None = None,
    slo_ttft_p99: float = 3.0,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    panels = [
        (axes[0, 0], "e2e_s", "mean", "Mean E2E latency (s)"),
        (axes[0, 1], "e2e_s", "p99", "P99 E2E latency (s)"),
        (axes[1, 0], "ttft_s", "mean", "Mean TTFT (s)"),
        (axes[1, 1], "ttft_s", "p99", "P99 TTFT (s)"),
    ]
    labels = sorted(set(series) | set(capacities))
    colors = {label: plt.cm.tab10(i % 10) for i, label in enumerate(labels)}
    markers = "osD^v<>ph*"
    for i, label in enumerate(labels):
        points = series.get(label, [])
        if not points:
            continue
        rates = [q for q, _ in points]
        style = {"color": colors[label], "marker": markers[i % len(markers)], "label": label, "ms": 5}
        for ax, metric, stat, _ in panels:
            ax.plot(
                rates,
                [s[metric][stat] if s[metric][stat] is not None else float("nan") for _, s in points],
                **style,
            )
        axes[0, 2].plot(rates, [s["output_token_throughput"] for _, s in points], **style)
    axes[1, 1].axhline(slo_ttft_p99, color="grey", ls="--", lw=1, label=f"SLO {slo_ttft_p99:g} s")
    for ax, _, _, ylabel in panels:
        ax.set(xlabel="Request rate (req/s)", ylabel=ylabel)
    axes[0, 2].set(xlabel="Request rate (req/s)", ylabel="Output throughput (tok/s)")
    for ax in (*[p[0] for p in panels], axes[0, 2]):
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    axes[1, 1].legend(fontsize=8)
    _capacity_bars(axes[1, 2], labels, capacities, colors, slo_ttft_p99)
    if title:
        fig.suptitle(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def _capacity_bars(ax, labels: list[str], capacities: dict, colors: dict, slo: float) -> None:
    values = [capacities.get(label) or 0.0 for label in labels]
    bars = ax.bar(range(len(labels)), values, color=[colors[label] for label in labels])
    for bar, label in zip(bars, labels, strict=True):
        cap = capacities.get(label)
        ax.annotate(
            "n/a" if cap is None else f"{cap:.1f}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set(ylabel="Capacity (req/s)", title=f"Capacity (P99 TTFT <= {slo:g} s)")
    ax.grid(alpha=0.3, axis="y")
