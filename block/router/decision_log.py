"""The decision log: per routed request, what the router believed against what happened.

`block router --decision-log FILE` writes one JSON line per request once it ends:

    {"id", "policy", "routed_at", "chosen", "fallback", "prompt_tokens", "expected_output_tokens",
     "candidates": [{"instance", "ttft_s", "e2e_s", "snapshot_age_s", "running", "waiting",
                     "pending", "in_flight"}, ...],
     "actual": {"ttft_s", "e2e_s", "output_tokens"}}

`candidates` is every instance the decision looked at, with its forecast (null where none was made) and
the state the forecast started from: the snapshot's age and the counts the data layer folded in. `actual`
is measured at the router: first streamed token and end of response, relative to `routed_at`
(`ttft_s` is null and `output_tokens` 0 for a response that was not streamed). A request retried on
another instance has a line per attempt, each with its own decision. `block router decisions FILE` reads
it back (block/router/decision_report.py).

This is how to find out why a forecast-driven policy loses on some fleet: per instance, whether the
forecasts were biased (a slower engine than the profile, a stale snapshot, requests the router did not
see) and whether the choice would have changed.

Bounded: at most `max_open` requests are remembered between routing and their end (the oldest are
dropped and counted), and lines are written through a buffered file.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any

from block.fleet.listeners import RequestListener
from block.policies import Candidates
from block.request import RoutingRequest

MAX_OPEN = 50_000


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


class DecisionLog(RequestListener):
    def __init__(self, path: str | Path, policy: str, max_open: int = MAX_OPEN) -> None:
        self.path = Path(path)
        self.policy = policy
        self.max_open = max_open
        self.dropped = 0  # requests forgotten before they ended (more than max_open open at once)
        self.written = 0
        self._open: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._file: IO[str] | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def decided(
        self,
        request: RoutingRequest,
        candidates: Candidates,
        chosen: str,
        fallback: bool,
        now: float,
    ) -> None:
        """Remember what the decision saw (called by the Decider, before the request is sent)."""
        if not request.id:
            return
        forecasts = candidates.forecasts
        rows = []
        for i, view in enumerate(candidates):
            f = None if forecasts is None else forecasts[i]
            age = getattr(view, "snapshot_age", None)
            pending = getattr(view, "pending", ())
            rows.append(
                {
                    "instance": view.id,
                    "ttft_s": None if f is None else _round(f.ttft_s),
                    "e2e_s": None if f is None else _round(f.e2e_s),
                    "snapshot_age_s": _round(age(now)) if callable(age) else None,
                    "running": view.running,
                    "waiting": view.waiting,
                    "pending": len(pending),
                    "in_flight": view.in_flight,
                }
            )
        self._open[request.id] = {
            "id": request.id,
            "policy": self.policy,
            "routed_at": round(now, 6),
            "chosen": chosen,
            "fallback": fallback,
            "prompt_tokens": request.prompt_tokens,
            "expected_output_tokens": request.expected_output_tokens,
            "candidates": rows,
            "actual": {"ttft_s": None, "e2e_s": None, "output_tokens": 0},
        }
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)
            self.dropped += 1

    # -- RequestListener -------------------------------------------------------------------------

    def tokens(self, instance: str, request_id: str, count: int, at: float) -> None:
        entry = self._open.get(request_id)
        if entry is None:
            return
        actual = entry["actual"]
        if actual["ttft_s"] is None:
            actual["ttft_s"] = _round(at - entry["routed_at"])
        actual["output_tokens"] += count

    def finished(self, instance: str, request_id: str, at: float) -> None:
        entry = self._open.pop(request_id, None)
        if entry is None:
            return
        entry["actual"]["e2e_s"] = _round(at - entry["routed_at"])
        if self._file is not None:
            self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self.written += 1
