"""Did a live run keep real time? Judged from the emulated engines' own record of their lateness.

Each `block engine` completes a step at its deadline (start + the profile's step time) on the monotonic
clock and counts how late it actually woke: `block:engine_step_lag_seconds` (a histogram of the lag of
every step), `block:engine_step_seconds_total` (the modelled step time) and
`block:engine_lag_dropped_seconds_total` (time dropped when the loop fell more than a second behind). A
live run scrapes every engine before and after; the difference says how late the engines ran *during the
run*. A machine that cannot give the engines their CPU in time delivers every token late and loses
capacity, whatever the policy: the policies then look alike, and the comparison says nothing. The load
generator is judged too, by how late it sent each request after its scheduled instant (the results file
records both): a starved client sends in bursts. A run where either fell behind is marked invalid, in
print and in its results file.
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from prometheus_client.parser import text_string_to_metric_families

LAG = "block:engine_step_lag_seconds"
STEP_SECONDS = "block:engine_step_seconds_total"
DROPPED = "block:engine_lag_dropped_seconds_total"
RESETS = "block:engine_lag_resets_total"

# A step's lag delays the tokens it emits (the next step still starts at the deadline, so a steady lag
# costs no capacity); time dropped by a lag reset is capacity lost. A run is invalid when its engines'
# steps were on average more than MAX_MEAN_LAG_S late, their p99 lag passed MAX_P99_LAG_S, or resets
# dropped more than MAX_LOST_SHARE of the modelled step time. On a machine that keeps up the lag is a
# fraction of a millisecond; `make demo` on a busy 2-core machine measured 2.1 ms (p99 16 ms).
MAX_MEAN_LAG_S = 0.010
MAX_P99_LAG_S = 0.050
MAX_LOST_SHARE = 0.02
LATE_STEP_S = 0.020  # a step this late counts in `late_steps_share`
# The load generator is one process: when the machine starves it, it sends requests late and then in a
# burst, so every cluster sees the same bursts and the policies look alike even while the engines keep up
# (a busy 2-core machine: p99 3.7 s late, the three policies within 6% of each other). Lateness under the
# mean gap between arrivals (59-118 ms at the demo's rates) leaves the arrival process nearly intact.
MAX_SEND_LATE_P99_S = 0.100


@dataclass(frozen=True)
class EngineLag:
    """Cumulative lateness counters of one engine, or their sum / difference over several."""

    steps: float = 0.0
    step_seconds: float = 0.0
    lag_seconds: float = 0.0  # the per-step lags, summed
    dropped_seconds: float = 0.0
    resets: float = 0.0
    buckets: tuple[tuple[float, float], ...] = ()  # cumulative (upper bound, steps), +Inf last

    @staticmethod
    def parse(text: str) -> EngineLag | None:
        """From a /metrics page; None where the server does not export the lag (not a Block engine)."""
        values: dict[str, float] = {}
        buckets: dict[float, float] = {}
        found = False
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == LAG + "_bucket":
                    found = True
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
                elif s.name in (LAG + "_count", LAG + "_sum", STEP_SECONDS, DROPPED, RESETS):
                    values[s.name] = values.get(s.name, 0.0) + s.value
        if not found:
            return None
        return EngineLag(
            steps=values.get(LAG + "_count", 0.0),
            step_seconds=values.get(STEP_SECONDS, 0.0),
            lag_seconds=values.get(LAG + "_sum", 0.0),
            dropped_seconds=values.get(DROPPED, 0.0),
            resets=values.get(RESETS, 0.0),
            buckets=tuple(sorted(buckets.items())),
        )

    def plus(self, other: EngineLag) -> EngineLag:
        return self._combine(other, 1.0)

    def minus(self, before: EngineLag) -> EngineLag:
        return self._combine(before, -1.0)

    def _combine(self, other: EngineLag, sign: float) -> EngineLag:
        bounds = dict(self.buckets)
        for le, n in other.buckets:
            bounds[le] = bounds.get(le, 0.0) + sign * n
        return EngineLag(
            self.steps + sign * other.steps,
            self.step_seconds + sign * other.step_seconds,
            self.lag_seconds + sign * other.lag_seconds,
            self.dropped_seconds + sign * other.dropped_seconds,
            self.resets + sign * other.resets,
            tuple(sorted(bounds.items())),
        )

    def quantile(self, q: float) -> float | None:
        """The q-quantile of the step lag, interpolated within its bucket as PromQL's
        histogram_quantile does (the last finite bound where it falls in +Inf)."""
        if self.steps <= 0 or not self.buckets:
            return None
        rank = q * self.buckets[-1][1]
        lower, below = 0.0, 0.0
        for le, count in self.buckets:
            if count >= rank:
                if math.isinf(le):
                    return lower
                span = count - below
                return lower + (le - lower) * ((rank - below) / span if span > 0 else 1.0)
            lower, below = le, count
        return lower

    def share_later_than(self, seconds: float) -> float:
        """Share of steps more than `seconds` late (`seconds` should be a bucket bound)."""
        total = self.buckets[-1][1] if self.buckets else 0.0
        if total <= 0:
            return 0.0
        within = max((n for le, n in self.buckets if le <= seconds), default=0.0)
        return (total - within) / total


def total(lags: Iterable[EngineLag | None]) -> EngineLag | None:
    """The sum over engines; None when none of them reported lag."""
    out: EngineLag | None = None
    for lag in lags:
        if lag is not None:
            out = lag if out is None else out.plus(lag)
    return out


def scrape(url: str, timeout_s: float = 2.0) -> EngineLag | None:
    """The engine's lag counters now; None if it cannot be read or does not export them."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout_s) as r:
            return EngineLag.parse(r.read().decode(errors="replace"))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Verdict:
    valid: bool | None  # None: nothing was measured, so the run could not be judged
    message: str
    # the engines, all together
    late_share: float | None = None  # (lag + dropped) / modelled step time: how late, relative to a step
    lost_share: float | None = None  # dropped / modelled step time: capacity lost to lag resets
    mean_lag_s: float | None = None
    mean_step_s: float | None = None
    p99_lag_s: float | None = None
    max_lag_bucket_s: float | None = None  # upper bound of the highest bucket a step fell in (None: +Inf)
    late_steps_share: float | None = None  # steps more than LATE_STEP_S late
    steps: int = 0
    lag_resets: int = 0
    dropped_s: float = 0.0
    # the load generator: how late it sent requests after their scheduled instants
    send_late_p99_s: float | None = None
    send_late_max_s: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["thresholds"] = {
            "max_mean_lag_s": MAX_MEAN_LAG_S,
            "max_p99_lag_s": MAX_P99_LAG_S,
            "max_lost_share": MAX_LOST_SHARE,
            "max_send_late_p99_s": MAX_SEND_LATE_P99_S,
        }
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in d.items()}


def judge(lag: EngineLag | None, send_late_s: Sequence[float] = ()) -> Verdict:
    """Valid or not, with the numbers and a sentence that says why. `send_late_s`: how late the load
    generator sent each request (sent - scheduled), from the run's request records."""
    problems: list[str] = []
    notes: list[str] = []
    fields: dict = {}
    if send_late_s:
        late_sorted = sorted(send_late_s)
        p99_send = late_sorted[min(len(late_sorted) - 1, math.ceil(0.99 * len(late_sorted)) - 1)]
        fields.update(send_late_p99_s=p99_send, send_late_max_s=late_sorted[-1])
        sent = f"the load generator sent requests up to {late_sorted[-1]:.2f} s late (p99 {p99_send:.3f} s)"
        if p99_send > MAX_SEND_LATE_P99_S:
            problems.append(sent + ", so the arrivals came in bursts, not as scheduled")
        else:
            notes.append(sent)
    if lag is not None and lag.steps > 0 and lag.step_seconds > 0:
        late = (lag.lag_seconds + lag.dropped_seconds) / lag.step_seconds
        lost = lag.dropped_seconds / lag.step_seconds
        mean_lag = lag.lag_seconds / lag.steps
        p99 = lag.quantile(0.99) or 0.0
        late_steps = lag.share_later_than(LATE_STEP_S)
        numbers = (
            f"mean step lag {mean_lag * 1e3:.1f} ms per {lag.step_seconds / lag.steps * 1e3:.0f} ms step, "
            f"p99 {p99 * 1e3:.0f} ms, {late_steps:.1%} of steps more than {LATE_STEP_S * 1e3:.0f} ms late, "
            f"{int(lag.resets)} timeline resets dropping {lost:.1%} of the modelled time"
        )
        fields.update(
            late_share=late,
            lost_share=lost,
            mean_lag_s=lag.lag_seconds / lag.steps,
            mean_step_s=lag.step_seconds / lag.steps,
            p99_lag_s=p99,
            max_lag_bucket_s=_highest_nonempty(lag.buckets),
            late_steps_share=late_steps,
            steps=int(lag.steps),
            lag_resets=int(lag.resets),
            dropped_s=lag.dropped_seconds,
        )
        if mean_lag > MAX_MEAN_LAG_S or p99 > MAX_P99_LAG_S or lost > MAX_LOST_SHARE:
            problems.insert(0, f"engines ran {late:.0%} late on average ({numbers})")
        else:
            notes.insert(0, f"engines kept real time ({numbers})")
    elif not send_late_s:
        return Verdict(None, "lag not measured (no Block engine reported steps): validity unknown")
    else:
        notes.append("engine lag not measured (not Block engines)")
    if problems:
        message = (
            "INVALID: "
            + "; ".join(problems)
            + ". This machine could not keep real time: the results do not compare policies"
            + (f" ({'; '.join(notes)})" if notes else "")
        )
        return Verdict(False, message, **fields)
    return Verdict(True, "valid: " + "; ".join(notes), **fields)


def _highest_nonempty(buckets: tuple[tuple[float, float], ...]) -> float | None:
    """The upper bound of the highest bucket with a step in it (cumulative counts)."""
    previous = 0.0
    highest = None
    for le, count in buckets:
        if count > previous:
            highest = None if math.isinf(le) else le
        previous = count
    return highest
