"""Reading a decision log back (`block router decisions FILE`): where forecasts and outcomes part.

Per instance: how many requests it got, the median ratio of actual to forecast TTFT and E2E (1.0 is an
unbiased forecast; 1.5 means the instance is half again slower than forecast), the median absolute error,
and the age of the snapshots its decisions started from. Over the run: the share of decisions made
without forecasts, and the share whose choice would change if each instance's forecasts were scaled by
its own median bias (what a perfectly calibrated static correction would have done differently).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class InstanceReport:
    instance: str
    routed: int = 0
    ttft_ratio: list[float] = field(default_factory=list)  # actual / forecast
    e2e_ratio: list[float] = field(default_factory=list)
    e2e_abs_error: list[float] = field(default_factory=list)  # |actual - forecast| / actual
    snapshot_age_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "routed": self.routed,
            "ttft_actual_over_forecast_p50": _median(self.ttft_ratio),
            "e2e_actual_over_forecast_p50": _median(self.e2e_ratio),
            "e2e_abs_error_p50": _median(self.e2e_abs_error),
            "snapshot_age_s_p50": _median(self.snapshot_age_s),
            "snapshot_age_s_p99": _quantile(self.snapshot_age_s, 0.99),
        }


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 4) if xs else None


def _quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    ordered = sorted(xs)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The log's entries; a line that is not a JSON object is an error naming the line."""
    entries = []
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
            if not isinstance(entry, dict) or "chosen" not in entry or "candidates" not in entry:
                raise ValueError(f"{path}:{n}: not a decision log entry")
            entries.append(entry)
    return entries


def report(entries: list[dict[str, Any]]) -> dict[str, Any]:
    per: dict[str, InstanceReport] = {}
    without_forecasts = 0
    for e in entries:
        chosen = e["chosen"]
        rep = per.setdefault(chosen, InstanceReport(chosen))
        rep.routed += 1
        row = next((c for c in e["candidates"] if c["instance"] == chosen), None)
        actual = e.get("actual") or {}
        if row is None or row.get("e2e_s") is None:
            without_forecasts += 1
            continue
        if row.get("snapshot_age_s") is not None:
            rep.snapshot_age_s.append(row["snapshot_age_s"])
        for key, ratios in (("ttft_s", rep.ttft_ratio), ("e2e_s", rep.e2e_ratio)):
            if actual.get(key) and row.get(key):
                ratios.append(actual[key] / row[key])
        if actual.get("e2e_s"):
            rep.e2e_abs_error.append(abs(actual["e2e_s"] - row["e2e_s"]) / actual["e2e_s"])
    bias = {i: (statistics.median(r.e2e_ratio) if r.e2e_ratio else 1.0) for i, r in per.items()}
    changed = compared = 0
    for e in entries:
        rows = [c for c in e["candidates"] if c.get("e2e_s") is not None]
        if len(rows) < 2 or len(rows) != len(e["candidates"]):
            continue
        compared += 1
        corrected = min(rows, key=lambda c: c["e2e_s"] * bias.get(c["instance"], 1.0))
        changed += corrected["instance"] != e["chosen"]
    n = len(entries)
    return {
        "requests": n,
        "policy": entries[0].get("policy") if entries else None,
        "without_forecast_share": round(without_forecasts / n, 4) if n else None,
        "choice_changed_by_bias_correction": round(changed / compared, 4) if compared else None,
        "instances": {i: per[i].summary() for i in sorted(per)},
    }
