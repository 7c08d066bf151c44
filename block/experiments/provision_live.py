"""`block experiment provision --mode live`: the Figure 8 comparison with a real router process.

Per variant, one `block router --provision ... --provider local-emulator` is started with no instance:
it starts `block engine` processes itself (the controller's below-min rule brings it to the initial
size), and the run begins once that many are in rotation. The bench client then replays the workload
through it while GET /instances is sampled every `sample_s` (instances by state, the recent decisions).
The static baseline is the same router with min = max = the static size: the provisioner only ever
enforces the bounds, so its engines start the same way and are counted the same way.

Instance-seconds: instances held (requested from the provider, starting, in rotation, unhealthy or
draining) integrated over the samples, from the first request sent to the last response, as the
simulator counts held time. Live start-up is the engine's real boot (a Python process importing and
binding a port), a few seconds, not the simulator's assumed 30 s.

Every engine is a child of the router; its shutdown (SIGTERM) stops them. As a safety net, the router's
children are listed (by pid, from /proc) before it stops, and any left afterwards are stopped by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from block.launch import ManagedServer, block_command, router_ready
from block.machine_load import cpu_busy, cpu_times, load_average

STATIC = "static"
HELD_STATES = ("requested", "starting", "active", "unhealthy", "draining")


@dataclass(frozen=True)
class LiveRun:
    """What one variant's live run measured."""

    variant: str
    records: list[Any]  # block.bench.record.RequestRecord
    duration_s: float  # first request sent to last response
    timeline: list[tuple[float, int, int, int]]  # t, active, starting (+ requested), draining
    held: list[tuple[float, int]]  # t, instances held
    decisions: list[dict[str, Any]]  # times on the run's clock
    start_timeouts: int
    leftover_engines: int  # engines still running after the router stopped (stopped here by pid)
    router_log: str
    machine_cpu_busy: float | None  # share of the machine's CPU busy during the run (all processes)
    load_avg_1m: float  # at the end of the run
    engine_lag_resets: float  # engines still up at the end: times they fell behind their step deadlines
    router_fallbacks: float  # decisions made without forecasts (they missed the router's deadline)


def engine_profile(a: Any, folder: Path) -> str:
    """The profile the router's engines run: the named one, with the batch limit of `a` when it sets one
    (a derived JSON that keeps the name, so the router plans with the same step times)."""
    if a.max_num_seqs is None:
        return str(a.profile)
    from block.profiles import load_profile

    data = json.loads(json.dumps(load_profile(a.profile).to_dict()))
    data["engine_defaults"] = {**data.get("engine_defaults", {}), "max_num_seqs": a.max_num_seqs}
    path = folder / f"{a.profile}-seqs{a.max_num_seqs}.json"
    path.write_text(json.dumps(data))
    return str(path)


def router_args(variant: str, a: Any, profile: str, start_timeout_s: float) -> list[str]:
    """`block router` arguments for one variant (`a`: experiment.ProvisionArgs)."""
    if variant == STATIC:
        mode, low, high, scale_down = "reactive", a.static_instances, a.static_instances, False
    else:
        mode, low, high, scale_down = variant, a.initial_instances, a.max_instances, a.scale_down
    args = [
        "router", "--policy", a.policy, "--seed", str(a.seed), "--log-level", "info",
        "--provision", mode, "--slo-e2e", str(a.slo_s),
        "--min-instances", str(low), "--max-instances", str(high),
        "--provider", "local-emulator", "--emulator-profile", profile,
        "--cooldown-s", str(a.cooldown_s), "--scale-down-hold-s", str(a.scale_down_hold_s),
        "--start-timeout-s", str(start_timeout_s),
    ]  # fmt: skip
    if not scale_down:
        args.append("--no-scale-down")
    if a.anticipate_arrivals:
        args.append("--anticipate-arrivals")
    return args


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc): the engines a router started."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def stop_leftovers(pids: list[int], grace_s: float = 5.0) -> int:
    """SIGTERM, then SIGKILL, the process groups of `pids` still alive (each engine leads its own)."""
    alive = [p for p in pids if _exists(p)]
    for p in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(_exists(p) for p in alive) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in alive:
        if _exists(p):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p, signal.SIGKILL)
    return len(alive)


def _exists(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone (its parent has not reaped it)


async def _sample(url: str, t0: float, every_s: float, into: list[tuple[float, dict[str, Any]]]) -> None:
    """GET /instances every `every_s` until cancelled: (seconds since t0, body)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with session.get(url + "/instances") as r:
                    into.append((time.monotonic() - t0, await r.json()))
            await asyncio.sleep(every_s)


def _timeline(samples: list[tuple[float, dict[str, Any]]]) -> tuple[list[Any], list[Any]]:
    timeline, held = [], []
    for t, body in samples:
        states = body.get("provision", {}).get("states", {})
        timeline.append(
            (
                t,
                states.get("active", 0) + states.get("unhealthy", 0),
                states.get("starting", 0) + states.get("requested", 0),
                states.get("draining", 0),
            )
        )
        held.append((t, sum(states.get(s, 0) for s in HELD_STATES)))
    return timeline, held


def instance_seconds(held: list[tuple[float, int]], start: float, end: float) -> float:
    """Integral of the held count (a step function between samples) over [start, end]."""
    total = 0.0
    for (t, n), (t_next, _) in zip(held, [*held[1:], (end, 0)], strict=False):
        lo, hi = max(t, start), min(t_next, end)
        if hi > lo:
            total += n * (hi - lo)
    return total


async def _run_one(
    variant: str, a: Any, samples: list[Any], arrivals: Any, log_dir: Path, sample_s: float
) -> LiveRun:
    from block.bench.client import run_benchmark

    low = a.static_instances if variant == STATIC else a.initial_instances
    router: ManagedServer = block_command(
        f"router-{variant}",
        router_args(variant, a, engine_profile(a, log_dir), a.start_timeout_s),
        log_dir=log_dir,
        health=router_ready(low),
    )
    engines: list[int] = []
    try:
        await asyncio.to_thread(router.start, 180.0, 3)
        polled: list[tuple[float, dict[str, Any]]] = []
        t0 = time.monotonic()
        sampler = asyncio.create_task(_sample(router.url, t0, sample_s, polled))
        cpu0 = cpu_times()
        try:
            result = await run_benchmark(
                router.url, samples, arrivals, max_model_len=a.max_model_len, timeout_s=a.request_timeout_s
            )
            busy = cpu_busy(cpu0, cpu_times())
            await asyncio.sleep(sample_s)  # one more sample after the last response
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        engines = children_of(router.pgid)
        metrics = await _metrics(router.url)
        urls = {i["url"] for _, body in polled[-1:] for i in body.get("instances", [])}
        lag = sum([(await _metrics(u)).get("block:engine_lag_resets_total", 0.0) for u in sorted(urls)])
    finally:
        engines = engines or (children_of(router.pgid) if router.alive() else [])
        await asyncio.to_thread(router.stop, 20.0)
        left = await asyncio.to_thread(stop_leftovers, engines)
        if left:  # the router's shutdown should have stopped them: say so
            print(f"warning: {left} engine(s) outlived the {variant} router; stopped by pid")
    decisions: dict[tuple[float, str], dict[str, Any]] = {}
    for _, body in polled:
        for d in body.get("provision", {}).get("decisions", []):
            d = {**d, "time": d["time"] - t0}  # both clocks are the machine's CLOCK_MONOTONIC
            if d["time"] >= 0:  # not the start-up to the initial size, before the first request
                decisions[(round(d["time"], 6), d["action"])] = d
    timeline, held = _timeline(polled)
    return LiveRun(
        variant,
        result.records,
        result.duration_s,
        timeline,
        held,
        sorted(decisions.values(), key=lambda d: d["time"]),
        int(metrics.get("block_router_provision_start_timeouts_total", 0)),
        left,
        str(router.log_path),
        busy,
        load_average(),
        lag,
        metrics.get("block_router_fallbacks_total", 0.0),
    )


async def _metrics(url: str) -> dict[str, float]:
    """Samples of a server's /metrics, summed over their labels (name -> total)."""
    out: dict[str, float] = {}
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as session,
            session.get(url + "/metrics") as r,
        ):
            for line in (await r.text()).splitlines():
                if not line or line.startswith("#"):
                    continue
                name = line.split("{", 1)[0].split(" ", 1)[0]
                with contextlib.suppress(ValueError, IndexError):
                    out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def run_live(a: Any, log_dir: Path | None = None, sample_s: float = 0.5, echo: Any = print) -> list[LiveRun]:
    """Every variant of `a` (experiment.ProvisionArgs), one after another (each alone on the machine)."""
    from block.experiments.live_runner import requests_for
    from block.sim.workload import WorkloadSpec

    spec = WorkloadSpec(
        dataset=a.dataset, num_requests=a.num_requests, seed=a.seed, max_model_len=a.max_model_len
    )
    samples, arrivals = requests_for(spec, a.qps)
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="block-provision-live-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for variant in a.variants:
        echo(f"{variant}: starting the router and its engines (logs in {log_dir})")
        runs.append(asyncio.run(_run_one(variant, a, samples, arrivals, log_dir, sample_s)))
    return runs
