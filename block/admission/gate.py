"""The admission rule: may a request start now, and where? Read from one decision's forecasts.

A forecast meets a target when the time the request already waited plus the forecast latency stays
within the target. Lower priorities are shed first: a request below the highest priority seen so far
must fit within a smaller share of its target (LOWER_PRIORITY_SHARE per level below), so as load grows
the lower classes stop fitting while there is still room for the higher ones. A request below the highest
priority must also leave room in the KV cache for the prompts above it (reserve.py): time is not the only
thing a high-priority request needs. The instances that meet both are the only candidates the policy
then chooses from.

Without any forecast (a predictor late or down, the budget spent) an arriving request is admitted
everywhere: a slow predictor never fails a request. A held one stays held: it already waits, and the
next change of state brings another placement pass. Measured live (4 emulated engines, ShareGPT at 2x
capacity, a CPU-starved machine): with queue, re-checking held requests spent the router's forecast
budget, 72 decisions went without forecasts and 45 admitted requests started after their target; with
reject, 11 and none; the simulator, which always has its forecasts, had none late.

`retry_after_s` says when a refused request may come back: the smallest amount by which a forecast
overshoots, the time that queue needs to drain that much.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from block.admission.reserve import Reserve
from block.admission.target import Target
from block.policies.base import Candidates, InstanceView
from block.request import Forecast

LOWER_PRIORITY_SHARE = 0.5  # of the target, per priority level below the highest one seen
LOWEST_SHARE = 0.25  # however many levels below
MIN_RETRY_AFTER_S = 1  # Retry-After is whole seconds; never "come back at once"


@dataclass(frozen=True, slots=True)
class Verdict:
    meeting: list[int]  # indices of the forecasts that meet the target (no forecast: all; held: none)
    retry_after_s: int  # for a refused request: when to try again
    fallback: bool = False  # no forecast at all: admitted without one, unless held

    @property
    def admit(self) -> bool:
        return bool(self.meeting)


class Gate:
    def __init__(self) -> None:
        self.top_priority: int | None = None  # the highest priority seen so far
        self.reserve = Reserve()  # KV room held back for the higher priorities

    def share(self, priority: int) -> float:
        """The share of its target a request of `priority` may use."""
        top = self.top_priority
        if top is None or priority >= top:
            return 1.0
        return max(LOWEST_SHARE, LOWER_PRIORITY_SHARE ** (top - priority))

    def saw(self, priority: int, prompt_tokens: int) -> None:
        """A request arrived (once per request, not per attempt)."""
        if self.top_priority is None or priority > self.top_priority:
            self.top_priority = priority
        self.reserve.saw(priority, prompt_tokens)

    def verdict(
        self,
        target: Target,
        prompt_tokens: int,
        views: Sequence[InstanceView],
        forecasts: Sequence[Forecast | None],
        now: float,
        held: bool = False,
    ) -> Verdict:
        """`forecasts` are aligned with `views` (None where one is missing); `held`: a held request's
        placement pass (placed on a forecast only)."""
        if not target.bounded:
            return Verdict(list(range(len(forecasts))), MIN_RETRY_AFTER_S)
        known = [i for i, f in enumerate(forecasts) if f is not None]
        if not known:
            everywhere = [] if held else list(range(len(forecasts)))
            return Verdict(everywhere, MIN_RETRY_AFTER_S, fallback=True)
        share = self.share(target.priority)
        reserved = self.reserve.tokens_above(target.priority)
        waited = now - target.arrived
        meeting: list[int] = []
        overshoot = math.inf
        for i in known:
            f = forecasts[i]
            assert f is not None
            over = max(
                _over(waited + f.ttft_s, target.ttft_s, share),
                _over(waited + f.e2e_s, target.e2e_s, share),
            )
            overshoot = min(overshoot, over)
            if over <= 0 and self.reserve.leaves_room(views[i], prompt_tokens, reserved):
                meeting.append(i)
        retry = MIN_RETRY_AFTER_S if meeting else max(MIN_RETRY_AFTER_S, math.ceil(overshoot))
        return Verdict(meeting, retry)


def _over(latency_s: float, target_s: float | None, share: float) -> float:
    """How far `latency_s` is past `share` of the target (<= 0: within it)."""
    return -math.inf if target_s is None else latency_s - share * target_s


def admitted_candidates(
    views: Sequence[InstanceView], forecasts: Sequence[Forecast | None], verdict: Verdict, keep: bool
) -> Candidates:
    """The candidates the policy chooses from: the instances that meet the target, with their
    forecasts when the policy reads them (`keep`)."""
    chosen = [views[i] for i in verdict.meeting]
    return Candidates(chosen, [forecasts[i] for i in verdict.meeting] if keep else None)
