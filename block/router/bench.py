"""`block router bench`: emulated engines plus the router as subprocesses, and three measurements.

(a) added latency: short non-streaming requests (1 output token, so latency = TTFT) at a moderate open-loop
    rate, each sent at random either straight to an engine or through the router; both populations see
    the same load, and the router's added latency is the difference of their percentiles.
(b) throughput: open-loop rates stepped up through the router until a step shows errors, falls behind
    (< 97 % of the offered rate completed) or its p99 latency passes 50 ms; the router is pinned to one core.
(c) concurrent streams: N streaming requests opened at once and held until each has all its tokens.
Every process started here runs in its own process group and is stopped on the way out.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from block.clock import sleep_until
from block.launch import ManagedServer, block_command, health_ok, router_ready, start_all
from block.router.loadgen import LoadClient, Result

P99_LIMIT_S = 0.050  # a step whose p99 passes this is queueing, not sustaining
ACHIEVED_MIN = 0.97


@dataclass
class BenchSettings:
    instances: int = 12
    policy: str = "block"
    profile: str = "tiny-fast"
    streams: int = 2000
    stream_tokens: int = 50
    latency_requests: int = 1500
    latency_rate: float = 300.0
    rates: list[float] = field(default_factory=lambda: [250, 500, 750, 1000, 1250, 1500, 2000, 2500])
    step_seconds: float = 3.0
    parts: list[str] = field(default_factory=lambda: ["latency", "throughput", "streams"])
    engine_max_num_seqs: int = 256  # room for the stream test: 2,000 streams over 12 engines run at once
    engine_num_gpu_blocks: int = 8192
    # Emulated engines per process (block engine --count): 100 engines fit two cores as a few processes.
    engines_per_process: int = 1


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


class Fleet:
    """Engines and a router as subprocesses, each in its own process group; always stopped."""

    def __init__(self, settings: BenchSettings) -> None:
        self.s = settings
        self.engines: list[ManagedServer] = []
        self.router: ManagedServer | None = None
        self.logdir = tempfile.mkdtemp(prefix="block-router-bench-")
        ncpu = os.cpu_count() or 1
        # With 4+ cores the router gets core 0 to itself and everything else shares the rest; on smaller
        # machines pinning would starve either side, so nothing is pinned (the router is one thread anyway).
        self.pinned = ncpu >= 4
        self.router_cpus = {0} if self.pinned else set(range(ncpu))
        self.other_cpus = set(range(1, ncpu)) if self.pinned else set(range(ncpu))
        self.ncpu = ncpu

    @property
    def engine_urls(self) -> list[str]:
        groups = zip(self.engines, self.counts, strict=True)
        return [f"http://{e.host}:{e.port + i}" for e, n in groups for i in range(n)]

    @property
    def counts(self) -> list[int]:
        """Engines in each engine process."""
        per, n = self.s.engines_per_process, self.s.instances
        return [min(per, n - k) for k in range(0, n, per)]

    @property
    def router_url(self) -> str:
        assert self.router is not None
        return self.router.url

    def _server(self, name: str, args: list[str], cpus: set[int], **kw: Any) -> ManagedServer:
        server = block_command(name, args, Path(self.logdir), **kw)
        server.pin_to = cpus if self.pinned else None
        return server

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the engines, then the router; return once it routes to all of them."""
        engine_args = ["engine", "--profile", self.s.profile, "--noise", "0", "--log-level", "warning",
                       "--max-num-seqs", str(self.s.engine_max_num_seqs),
                       "--num-gpu-blocks", str(self.s.engine_num_gpu_blocks)]  # fmt: skip
        self.engines, first = [], 0
        for k, count in enumerate(self.counts):
            args = [*engine_args, "--seed", str(first)] + (["--count", str(count)] if count > 1 else [])
            server = self._server(f"engine{k}", args, self.other_cpus, health=all_healthy(count), ports=count)
            self.engines.append(server)
            first += count
        start_all(self.engines, timeout_s)
        args = ["router", "--policy", self.s.policy, "--log-level", "warning"]
        args += [a for url in self.engine_urls for a in ("--instance", url)]
        self.router = self._server("router", args, self.router_cpus, health=router_ready(self.s.instances))
        self.router.start(timeout_s)

    def stop(self) -> None:
        for server in [*([self.router] if self.router is not None else []), *self.engines]:
            server.stop(grace_s=10.0)


def all_healthy(count: int) -> Any:
    """Health of a process serving `count` engines on consecutive ports from its own."""

    def check(base_url: str) -> bool:
        host, port = base_url.rsplit(":", 1)
        return all(health_ok(f"{host}:{int(port) + i}") for i in range(count))

    return check


async def _get_json(url: str, timeout: float = 2.0) -> Any:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        return r.status, await r.json(content_type=None)


async def open_loop(
    send: Any, n: int, rate: float, rng: random.Random, poisson: bool = True
) -> tuple[list[tuple[int, Result]], float]:
    """Send n requests at `rate` (Poisson or evenly spaced); returns (tag, result) pairs and the lag:
    how far behind schedule the last send was (a load generator that cannot keep up shows here)."""
    tasks = []
    start = time.monotonic()
    t = 0.0
    lag = 0.0
    for i in range(n):
        t += rng.expovariate(rate) if poisson else 1.0 / rate
        late = time.monotonic() - (start + t)
        if late > 0:
            lag = max(lag, late)
        else:
            await sleep_until(start + t)
        tasks.append(asyncio.ensure_future(send(i)))
    return list(await asyncio.gather(*tasks)), lag


def short_body(model: str) -> bytes:
    return orjson.dumps({"model": model, "prompt": "Say hi.", "max_tokens": 1, "ignore_eos": True})


async def measure_latency(fleet: Fleet, s: BenchSettings, model: str) -> dict[str, Any]:
    rng = random.Random(1)
    router = LoadClient(fleet.router_url)
    engines = [LoadClient(u) for u in fleet.engine_urls]
    raw = LoadClient.encode("/v1/completions", short_body(model))
    sides = [rng.random() < 0.5 for _ in range(2 * s.latency_requests)]

    async def send(i: int) -> tuple[int, Result]:
        via_router = sides[i]
        client = router if via_router else engines[i % len(engines)]
        return int(via_router), await client.request(raw, timeout=10)

    # Warm-up: open connections on both paths.
    await open_loop(send, min(200, len(sides)), s.latency_rate, rng)
    pairs, lag = await open_loop(send, len(sides), s.latency_rate, rng)
    for c in (router, *engines):
        c.close()
    results: dict[int, list[float]] = {0: [], 1: []}
    errors = 0
    for tag, r in pairs:
        if r.error or r.status != 200:
            errors += 1
        else:
            results[tag].append(r.latency)
    direct, routed = results[0], results[1]
    out = {
        "rate_rps": s.latency_rate,
        "requests_direct": len(direct),
        "requests_via_router": len(routed),
        "errors": errors,
        "direct_p50_ms": percentile(direct, 50) * 1e3,
        "direct_p99_ms": percentile(direct, 99) * 1e3,
        "router_p50_ms": percentile(routed, 50) * 1e3,
        "router_p99_ms": percentile(routed, 99) * 1e3,
        "loadgen_max_lag_ms": lag * 1e3,
    }
    out["added_p50_ms"] = out["router_p50_ms"] - out["direct_p50_ms"]
    out["added_p99_ms"] = out["router_p99_ms"] - out["direct_p99_ms"]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


async def measure_throughput(fleet: Fleet, s: BenchSettings, model: str) -> dict[str, Any]:
    raw = LoadClient.encode("/v1/completions", short_body(model))
    steps = []
    best = 0.0
    rng = random.Random(2)
    for rate in s.rates:
        client = LoadClient(fleet.router_url)
        n = max(1, int(rate * s.step_seconds))
        assert fleet.router is not None
        cpu0, wall0 = fleet.router.cpu_s(), time.perf_counter()

        async def send(i: int, client: LoadClient = client) -> tuple[int, Result]:
            return 0, await client.request(raw, timeout=10)

        pairs, lag = await open_loop(send, n, rate, rng, poisson=False)
        wall = time.perf_counter() - wall0
        cpu = fleet.router.cpu_s() - cpu0
        client.close()
        ok = [r for _, r in pairs if r.error is None and r.status == 200]
        errors = n - len(ok)
        span = max(r.done for _, r in pairs) - min(r.started for _, r in pairs)
        achieved = len(ok) / span if span > 0 else 0.0
        p99 = percentile([r.latency for r in ok], 99)
        passed = errors == 0 and achieved >= ACHIEVED_MIN * rate and p99 <= P99_LIMIT_S
        steps.append(
            {
                "offered_rps": rate,
                "achieved_rps": round(achieved, 1),
                "errors": errors,
                "p50_ms": round(percentile([r.latency for r in ok], 50) * 1e3, 3),
                "p99_ms": round(p99 * 1e3, 3),
                "router_cpu_pct": round(100 * cpu / wall, 1),
                "loadgen_max_lag_ms": round(lag * 1e3, 1),
                "passed": passed,
            }
        )
        if not passed:
            break
        best = max(best, rate)
        await asyncio.sleep(0.5)  # let the fleet drain between steps
    return {
        "max_sustained_rps": best,
        "criteria": f"no errors, >= {ACHIEVED_MIN:.0%} of offered, p99 <= {P99_LIMIT_S * 1e3:.0f} ms",
        "steps": steps,
    }


async def measure_streams(fleet: Fleet, s: BenchSettings, model: str) -> dict[str, Any]:
    body = orjson.dumps(
        {
            "model": model,
            "prompt": "Tell me a story.",
            "max_tokens": s.stream_tokens,
            "ignore_eos": True,
            "stream": True,
        }
    )
    raw = LoadClient.encode("/v1/completions", body)
    clients = [LoadClient(fleet.router_url) for _ in range(s.streams)]  # one connection per stream
    peak_in_flight = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak_in_flight
        while not done.is_set():
            with suppress(Exception):
                _, listing = await _get_json(fleet.router_url + "/instances", timeout=5)
                peak_in_flight = max(peak_in_flight, sum(i["in_flight"] for i in listing["instances"]))
            await asyncio.sleep(0.1)

    sampler = asyncio.ensure_future(sample())
    t0 = time.perf_counter()
    results = await asyncio.gather(*(c.request(raw, timeout=120) for c in clients))
    wall = time.perf_counter() - t0
    done.set()
    await sampler
    for c in clients:
        c.close()
    good = [
        r
        for r in results
        if r.error is None and r.status == 200 and r.events == s.stream_tokens and r.finished_with_done
    ]
    errors = [r.error or f"status {r.status}, {r.events} events" for r in results if r not in good]
    # Client-side peak of simultaneously open streams.
    marks = sorted([(r.started, 1) for r in results] + [(r.done, -1) for r in results])
    open_now = peak = 0
    for _, d in marks:
        open_now += d
        peak = max(peak, open_now)
    return {
        "streams": s.streams,
        "tokens_each": s.stream_tokens,
        "completed_ok": len(good),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "peak_open_client": peak,
        "peak_in_flight_router": peak_in_flight,
        "wall_s": round(wall, 2),
        "ttfb_p50_ms": round(percentile([r.ttfb for r in good], 50) * 1e3, 1),
        "ttfb_p99_ms": round(percentile([r.ttfb for r in good], 99) * 1e3, 1),
    }


async def _measure(fleet: Fleet, s: BenchSettings, progress: Any) -> dict[str, Any]:
    _, models = await _get_json(fleet.engine_urls[0] + "/v1/models")
    model = models["data"][0]["id"]
    report: dict[str, Any] = {}
    if "latency" in s.parts:
        progress("measuring added latency ...")
        report["added_latency"] = await measure_latency(fleet, s, model)
    if "throughput" in s.parts:
        progress("stepping up the request rate ...")
        report["throughput"] = await measure_throughput(fleet, s, model)
    if "streams" in s.parts:
        progress(f"holding {s.streams} streams ...")
        report["streams"] = await measure_streams(fleet, s, model)
    report["router"] = await router_stats(fleet.router_url)
    return report


async def router_stats(url: str) -> dict[str, Any]:
    """The router's own view: decision latency (mean, from its histogram), fallbacks, retries."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        text = await r.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    count = values.get("block_router_decision_seconds_count", 0.0)
    return {
        "decisions": int(count),
        "decision_mean_us": round(
            1e6 * values.get("block_router_decision_seconds_sum", 0.0) / max(count, 1), 1
        ),
        "fallbacks": int(values.get("block_router_fallbacks_total", 0)),
        "no_forecast_share": no_forecast_share(text_string_to_metric_families(text)),
        "retries": int(values.get("block_router_retries_total", 0)),
    }


def no_forecast_share(families: Any) -> float | None:
    """Decisions that wanted forecasts and went without, over those that wanted them."""
    by_outcome: dict[str, float] = {}
    for family in families:
        for sample in family.samples:
            if sample.name == "block_router_decisions_total":
                outcome = sample.labels.get("outcome", "")
                by_outcome[outcome] = by_outcome.get(outcome, 0.0) + sample.value
    wanted = by_outcome.get("forecast", 0.0) + by_outcome.get("fallback", 0.0)
    return None if wanted == 0 else round(by_outcome.get("fallback", 0.0) / wanted, 6)


def goals(report: dict[str, Any]) -> dict[str, bool]:
    out = {}
    if "added_latency" in report:
        a = report["added_latency"]
        out["added_p50_le_1ms"] = a["added_p50_ms"] <= 1.0
        out["added_p99_le_3ms"] = a["added_p99_ms"] <= 3.0
    if "throughput" in report:
        out["ge_1000_rps"] = report["throughput"]["max_sustained_rps"] >= 1000
    if "streams" in report:
        st = report["streams"]
        out["streams_ok"] = st["errors"] == 0 and st["completed_ok"] == st["streams"]
    return out


def run_bench(settings: BenchSettings, as_json: bool = False) -> dict[str, Any]:
    import uvloop

    from block.router.server import raise_fd_limit

    fd_limit = raise_fd_limit()
    if fd_limit < 2 * settings.streams + 256:
        raise RuntimeError(f"open-file limit {fd_limit} too low for {settings.streams} streams")

    def progress(msg: str) -> None:
        if not as_json:
            print(msg, file=sys.stderr, flush=True)

    fleet = Fleet(settings)
    try:
        with suppress(OSError):
            os.sched_setaffinity(0, fleet.other_cpus)  # the load generator stays off the router's core
        progress(
            f"starting {settings.instances} engines ({settings.profile}) "
            f"and the router ({settings.policy}) ..."
        )
        fleet.start()
        report = uvloop.run(_measure(fleet, settings, progress))
    finally:
        fleet.stop()
    if fleet.pinned:
        note = (
            f"{fleet.ncpu} CPU cores: router pinned to core 0; the {settings.instances} engines and the load "
            f"generator share cores 1-{fleet.ncpu - 1}"
        )
    else:
        note = (
            f"{fleet.ncpu} CPU cores, nothing pinned: the router, the {settings.instances} engines, their "
            "state polling and the load generator all share these cores (and whatever else runs on the "
            "machine), so these numbers understate what the router does on a core of its own"
        )
    report = {
        "policy": settings.policy,
        "instances": settings.instances,
        "engines_per_process": settings.engines_per_process,
        "profile": settings.profile,
        "engine_settings": {
            "max_num_seqs": settings.engine_max_num_seqs,
            "num_gpu_blocks": settings.engine_num_gpu_blocks,
            "noise": 0,
        },
        "cpu_note": note,
        **report,
    }
    report["goals"] = goals(report)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return report


def _share(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.2f}%"


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console

    c = Console()
    c.print(
        f"[bold]block router bench[/]: policy {report['policy']}, {report['instances']} engines "
        f"({report['profile']})"
    )
    c.print(f"[dim]{report['cpu_note']}[/]")
    if (a := report.get("added_latency")) is not None:
        c.print(
            f"added latency at {a['rate_rps']:.0f} req/s: p50 {a['added_p50_ms']:.3f} ms, "
            f"p99 {a['added_p99_ms']:.3f} ms "
            f"(direct p50 {a['direct_p50_ms']:.3f} / p99 {a['direct_p99_ms']:.3f}; "
            f"via router p50 {a['router_p50_ms']:.3f} / p99 {a['router_p99_ms']:.3f}; errors {a['errors']})"
        )
    if (t := report.get("throughput")) is not None:
        for st in t["steps"]:
            c.print(
                f"  {st['offered_rps']:>6.0f} req/s offered -> {st['achieved_rps']:>7.1f} achieved, "
                f"errors {st['errors']}, p50 {st['p50_ms']} ms, p99 {st['p99_ms']} ms, "
                f"router CPU {st['router_cpu_pct']}% {'ok' if st['passed'] else 'FAIL'}"
            )
        c.print(f"max sustained rate: {t['max_sustained_rps']:.0f} req/s ({t['criteria']})")
    if (r := report.get("router")) is not None:
        c.print(
            f"router: {r['decisions']} decisions, mean {r['decision_mean_us']} us each (forecasts included), "
            f"fallbacks {r['fallbacks']}, retries {r['retries']}, "
            f"no-forecast share {_share(r.get('no_forecast_share'))}"
        )
    if (s := report.get("streams")) is not None:
        c.print(
            f"streams: {s['completed_ok']}/{s['streams']} complete, errors {s['errors']}, "
            f"peak open {s['peak_open_client']} (router in-flight peak {s['peak_in_flight_router']}), "
            f"{s['wall_s']} s"
        )
    c.print("goals: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in report["goals"].items()))
