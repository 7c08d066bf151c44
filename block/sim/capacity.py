"""Capacity: the highest request rate whose P99 TTFT stays within the SLO (the paper uses 3 s).

Rates are measured at discrete points, so the crossing is interpolated between the last rate that meets
the SLO and the first one above it that does not, linearly in log(P99 TTFT): near saturation latency
grows roughly exponentially with load, so a straight line in log space follows the curve better than one
in seconds. Rates beyond the first failure are ignored (a lucky pass after a failure is noise). When every
rate meets the SLO the capacity is at least the highest rate tried; when none does, below the lowest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PAPER_SLO_S = 3.0


@dataclass(frozen=True)
class Capacity:
    qps: float | None  # the estimate (the bound when censored); None when no rate was measured
    bound: str = ""  # "" (interpolated), ">=" (every rate met the SLO) or "<" (none did)

    def __str__(self) -> str:
        if self.qps is None:
            return "n/a"
        return f"{self.bound}{self.qps:.1f}" if self.bound else f"{self.qps:.1f}"


def capacity(points: Iterable[tuple[float, float | None]], slo_s: float = PAPER_SLO_S) -> Capacity:
    """`points`: (rate, P99 TTFT) pairs; a None latency (nothing completed) counts as a failure."""
    pts = sorted((q, math.inf if y is None else y) for q, y in points)
    if not pts:
        return Capacity(None)
    if pts[0][1] > slo_s:
        return Capacity(pts[0][0], "<")
    for (q0, y0), (q1, y1) in zip(pts, pts[1:], strict=False):
        if y1 > slo_s:
            if math.isinf(y1) or y0 <= 0:
                return Capacity(q0)
            frac = (math.log(slo_s) - math.log(y0)) / (math.log(y1) - math.log(y0))
            return Capacity(q0 + frac * (q1 - q0))
    return Capacity(pts[-1][0], ">=")


def write_capacity_files(caps: dict[str, Capacity], runs_dir: Path, slo_s: float = PAPER_SLO_S) -> None:
    """One `capacity_{label}.json` per variant, in the form `block plot` reads next to results files."""
    for label, cap in caps.items():
        doc = {
            "label": label,
            "capacity_qps": cap.qps,
            "bound": cap.bound,
            "slo": {"ttft_p99": slo_s},
            "method": "highest rate with P99 TTFT within the SLO, log-interpolated between measured rates",
        }
        safe = "".join(c if c.isalnum() or c in ".+-" else "-" for c in label)
        (runs_dir / f"capacity_{safe}.json").write_text(json.dumps(doc, indent=2) + "\n")
