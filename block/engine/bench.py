"""`block engine bench`: does a live emulator keep the profile's time?

Starts `block engine --noise 0` as a subprocess (own process group, free port, always stopped),
sends fixed requests (token-id prompts, ignore_eos) from an aiohttp streaming client at several
concurrencies (closed loop: each client sends its next request when its previous one ends), and
compares the measured TTFT and TPOT (means, and medians for information) with a Replica that replays
the same requests, arriving when the engine says they arrived (response header x-block-arrival-time),
in virtual time. The measured TTFT includes the HTTP round trip (about 1-2 ms on a small shared
host); the TPOT does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from block.engine.openai_protocol import ARRIVAL_TIME_HEADER
from block.engine.settings import replica_config
from block.launch import block_command, running
from block.profiles import Profile, load_profile
from block.replica import Replica, ReplicaConfig, Request


@dataclass(frozen=True, slots=True)
class BenchSpec:
    profile: str = "llama-2-7b-a100"
    concurrencies: tuple[int, ...] = (1, 8, 32)
    prompt_tokens: int = 512
    output_tokens: int = 128
    requests_per_client: int = 3
    min_requests: int = 8  # per concurrency level: low concurrencies send more rounds
    tolerance: float = 0.05
    startup_timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Timing:
    """One request: seconds on the client's clock."""

    sent: float
    arrival: float  # when the engine received it, on the engine's clock (x-block-arrival-time)
    first_token: float
    last_token: float
    tokens: int

    @property
    def ttft(self) -> float:
        return self.first_token - self.sent

    @property
    def tpot(self) -> float:
        return (self.last_token - self.first_token) / max(1, self.tokens - 1)


# -- the prediction --------------------------------------------------------------------------------


def predict(
    profile: Profile, config: ReplicaConfig, arrivals: list[float], prompt_tokens: int, output_tokens: int
) -> list[tuple[float, float]]:
    """(TTFT, TPOT) of requests arriving at `arrivals` (seconds), by a Replica in virtual time.

    A request that arrives while a step runs joins the next one, as in the live engine; it reaches the
    queue the profile's request overhead after it arrives, as in the emulator."""
    replica = Replica(config, profile)
    sent = arrivals
    arrivals = [a + profile.request_overhead(prompt_tokens) for a in sent]
    order = sorted(range(len(arrivals)), key=arrivals.__getitem__)
    requests = [
        Request(str(i), prompt_tokens, output_tokens, arrival_time=arrivals[i]) for i in range(len(arrivals))
    ]
    nxt = 0
    while nxt < len(order) or replica.has_work:
        if not replica.has_work:
            replica.advance_to(arrivals[order[nxt]])
        while nxt < len(order) and arrivals[order[nxt]] <= replica.now:
            replica.add(requests[order[nxt]])
            nxt += 1
        if replica.step() is None:
            raise RuntimeError("the virtual replica cannot schedule the benchmark requests")
    out = []
    for r, t0 in zip(requests, sent, strict=True):
        assert r.first_token_time is not None and r.finish_time is not None
        out.append(
            (
                r.first_token_time - t0,
                (r.finish_time - r.first_token_time) / max(1, output_tokens - 1),
            )
        )
    return out


# -- the measurement -------------------------------------------------------------------------------


async def _one_request(session: Any, url: str, body: bytes) -> Timing:
    sent = time.perf_counter()
    first = last = 0.0
    tokens = 0
    async with session.post(url, data=body, headers={"content-type": "application/json"}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"engine answered {resp.status}: {(await resp.text())[:300]}")
        arrival = float(resp.headers.get(ARRIVAL_TIME_HEADER, "nan"))
        async for line in resp.content:
            # Cheap checks instead of a JSON parse per token: the client must not be the bottleneck.
            if not line.startswith(b"data: {") or b'"choices":[]' in line:
                continue  # blank separators, [DONE], the usage chunk
            if line.startswith(b'data: {"error"'):
                raise RuntimeError(f"engine stream error: {line[6:].decode(errors='replace')}")
            last = time.perf_counter()
            if tokens == 0:
                first = last
            tokens += 1
    return Timing(sent, arrival, first, last, tokens)


async def measure(base_url: str, concurrency: int, spec: BenchSpec) -> list[Timing]:
    import aiohttp

    url = base_url + "/v1/completions"
    prompt = [1000 + i % 30000 for i in range(spec.prompt_tokens)]
    sent = itertools.count(40_000)

    def body(max_tokens: int) -> bytes:
        # No `model`: the engine serves its own (a name it does not serve would be a 404). Each prompt
        # starts with its own token: the prediction has no prefix cache hits, the engine must have none.
        prompt[0] = next(sent)
        return orjson.dumps({"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "stream": True})

    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        # Warm-up opens one keep-alive connection per client, so connecting does not skew the first round.
        await asyncio.gather(*(_one_request(session, url, body(1)) for _ in range(concurrency)))
        timings: list[Timing] = []

        rounds = max(spec.requests_per_client, -(-spec.min_requests // concurrency))

        async def client() -> None:
            for _ in range(rounds):
                timings.append(await _one_request(session, url, body(spec.output_tokens)))

        await asyncio.gather(*(client() for _ in range(concurrency)))
    bad = [t.tokens for t in timings if t.tokens != spec.output_tokens]
    if bad:
        raise RuntimeError(f"{len(bad)} responses had the wrong number of tokens (e.g. {bad[0]})")
    return timings


# -- the engine subprocess ---------------------------------------------------------------------------


@contextlib.contextmanager
def engine_subprocess(profile: str, timeout_s: float, extra: list[str] | None = None) -> Iterator[str]:
    """`python -m block.engine` in its own process group on a free port; always stopped afterwards."""
    args = ["engine", "--profile", profile, "--noise", "0", "--seed", "0", "--log-level", "warning"]
    with running(block_command("engine", [*args, *(extra or [])]), timeout_s=timeout_s) as (engine,):
        yield engine.url


# -- the report --------------------------------------------------------------------------------------


def _rel(measured: float, predicted: float) -> float:
    return (measured - predicted) / predicted if predicted > 0 else float("inf")


def _lag_resets(url: str) -> int | None:
    """How often the engine fell behind its deadlines by more than its lag limit (from /metrics)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(url + "/metrics", timeout=5.0).text
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(text):
        if family.name == "block:engine_lag_resets":
            return int(family.samples[0].value)
    return None


def _compare(name: str, measured: list[float], predicted: list[float]) -> dict[str, float]:
    m_mean, p_mean = statistics.fmean(measured), statistics.fmean(predicted)
    m_p50, p_p50 = statistics.median(measured), statistics.median(predicted)
    return {
        f"{name}_measured_s": m_mean,
        f"{name}_predicted_s": p_mean,
        f"{name}_rel_error": _rel(m_mean, p_mean),
        f"{name}_p50_measured_s": m_p50,
        f"{name}_p50_predicted_s": p_p50,
        f"{name}_p50_rel_error": _rel(m_p50, p_p50),
    }


def run_bench(spec: BenchSpec, progress: bool = True) -> dict[str, Any]:
    import uvloop

    profile = load_profile(spec.profile)
    config = replica_config(profile)
    rows = []
    load_before = os.getloadavg()[0]
    with engine_subprocess(spec.profile, spec.startup_timeout_s) as url:
        for c in spec.concurrencies:
            if progress:
                print(f"concurrency {c} ...", file=sys.stderr, flush=True)
            timings = uvloop.run(measure(url, c, spec))
            # Replay at the engine's own arrival times: the step each request joins is then the same
            # as live (client send times are off by the network, which can shift a step boundary).
            t0 = min(t.arrival for t in timings)
            arrivals = [t.arrival - t0 for t in timings]
            predicted = predict(profile, config, arrivals, spec.prompt_tokens, spec.output_tokens)
            row: dict[str, Any] = {"concurrency": c, "requests": len(timings)}
            row |= _compare("ttft", [t.ttft for t in timings], [p[0] for p in predicted])
            row |= _compare("tpot", [t.tpot for t in timings], [p[1] for p in predicted])
            rows.append(row)
        lag_resets = _lag_resets(url)

    passed = all(abs(r[k]) <= spec.tolerance for r in rows for k in ("ttft_rel_error", "tpot_rel_error"))
    return {
        "profile": profile.name,
        "engine": config.to_dict(),
        "spec": {k: v for k, v in asdict(spec).items() if k != "startup_timeout_s"},
        # Timing is only as good as the CPU the engine and the client get: say how busy the host was.
        "host": {
            "cpus": os.cpu_count(),
            "load_avg_1m_before": load_before,
            "load_avg_1m_after": os.getloadavg()[0],
            "engine_lag_resets": lag_resets,
        },
        "results": rows,
        # Means within the tolerance at every concurrency. Medians are reported too (robust to one
        # stalled request on a busy host, but TTFT is multimodal under load, so not a criterion).
        "passed": passed,
    }


def print_report(report: dict[str, Any], json_only: bool = False) -> None:
    if not json_only:
        from rich.console import Console
        from rich.table import Table

        tol = report["spec"]["tolerance"]

        def err(x: float) -> str:
            return f"[{'green' if abs(x) <= tol else 'red'}]{x:+.1%}[/]"

        table = Table(title=f"engine bench: {report['profile']} (noise 0), measured vs virtual-time replica")
        columns = (
            "conc.",
            "req.",
            "TTFT ms",
            "pred. ms",
            "err",
            "err p50",
            "TPOT ms",
            "pred. ms",
            "err",
            "err p50",
        )
        for col in columns:
            table.add_column(col, justify="right")
        for r in report["results"]:
            table.add_row(
                str(r["concurrency"]),
                str(r["requests"]),
                f"{r['ttft_measured_s'] * 1e3:.2f}",
                f"{r['ttft_predicted_s'] * 1e3:.2f}",
                err(r["ttft_rel_error"]),
                err(r["ttft_p50_rel_error"]),
                f"{r['tpot_measured_s'] * 1e3:.3f}",
                f"{r['tpot_predicted_s'] * 1e3:.3f}",
                err(r["tpot_rel_error"]),
                err(r["tpot_p50_rel_error"]),
            )
        console = Console(stderr=True, width=max(100, Console(stderr=True).width))
        console.print(table)
        host = report["host"]
        console.print(
            f"means within {tol:.0%} at every concurrency: {'yes' if report['passed'] else 'NO'}  "
            f"(host: {host['cpus']} CPUs, load "
            f"{host['load_avg_1m_before']:.1f} before, {host['load_avg_1m_after']:.1f} after; engine lag "
            f"resets: {host['engine_lag_resets']})"
        )
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
