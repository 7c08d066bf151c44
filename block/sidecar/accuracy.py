"""`block predictor accuracy`: forecasts against what then really happens, on emulated engines.

Engines run as subprocesses (with step noise). Requests are routed round robin with known lengths
(max_tokens + ignore_eos + expected_output_tokens) and each is forecast at arrival on its instance,
through an `InstanceTracker` fed a fresh `/state` plus the requests routed since (exactly the data
path the router uses). A sample (1% by default) is also forecast on, and sent to, every instance,
as the Block paper did for its Figure 5: was the forecast-best instance really the fastest?

Prompts are the dataset's own token ids (any workload spec: `sharegpt`, `sharegpt-chat`, `shared-prefix:G:S`,
...), and each forecast knows the prompt's block hashes, so with the engines' prefix caching on (their
default) the forecast is judged on the cache as well. In a session workload each turn is sent after the one
before it finished plus its think time (block.workload.sessions), `qps` then starting sessions.

`model_error` (KIND:E) runs the engines at a true speed their reported profile does not say; with
`calibration` the trackers correct it online from the tokens streaming back (block.fleet.calibration),
fed exactly as the router feeds them: routed, every streamed chunk's tokens, finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from block.clock import sleep_until
from block.fleet.arrival_log import FleetLog
from block.fleet.listeners import Routed
from block.fleet.tracker import InstanceTracker
from block.launch import block_command, running
from block.prefix import chain_hashes
from block.profiles.profile import load_profile
from block.request import RoutingRequest
from block.workload.sessions import DEFAULT_THINK_TIME_S


@dataclass(slots=True)
class Outcome:
    instance: int
    sampled: bool
    group: int  # the request index: a sampled request has one outcome per instance
    forecast_ttft: float
    forecast_e2e: float
    ttft: float = float("nan")
    e2e: float = float("nan")


@contextlib.contextmanager
def engines(
    profile: str, n: int, noise: float, seed: int, timeout_s: float = 60.0, model_error: str = ""
) -> Iterator[list[str]]:
    """n `python -m block.engine` subprocesses, each in its own process group; always stopped. Engine i
    runs with seed `seed + i`, which is also its instance index for `model_error`."""
    args = ["engine", "--profile", profile, "--noise", str(noise), "--log-level", "warning"]
    if model_error:
        args += ["--model-error", model_error]
    logs = Path(tempfile.mkdtemp(prefix="block-accuracy-"))
    servers = [block_command(f"engine{i}", [*args, "--seed", str(seed + i)], logs) for i in range(n)]
    with running(*servers, timeout_s=timeout_s):
        yield [s.url for s in servers]


@dataclass(frozen=True, slots=True)
class Job:
    """One request to send: when, what, and (in a session) the turn that follows it."""

    at_s: float  # offset from the start; a later turn of a session also waits for the turn before it
    prompt: int  # prompt tokens
    output: int
    ids: tuple[int, ...] | None = None  # the prompt's token ids; None: a prompt of `prompt` ones
    think_s: float = 0.0  # wait after the previous turn's answer (session turns)
    next_turn: int = -1  # index of the session's next turn, -1 after the last


def workload(
    num_requests: int,
    qps: float,
    seed: int,
    max_output: int,
    dataset: str = "sharegpt",
    think_time_s: float = DEFAULT_THINK_TIME_S,
) -> list[Job]:
    """The dataset's requests with their token ids; ShareGPT falls back to a synthetic stand-in offline."""
    from block.workload import get_tokenizer, load_workload
    from block.workload.arrivals import arrival_times
    from block.workload.sessions import is_session_workload, session_plan

    try:
        samples = load_workload(dataset, num_requests, seed)
    except Exception:  # noqa: BLE001 - no dataset offline: a synthetic stand-in with similar shape
        if dataset != "sharegpt":
            raise
        return _synthetic(num_requests, qps, seed, max_output)
    tokenizer = get_tokenizer("llama3")
    ids = [tuple(tokenizer.encode_ordinary(s.prompt)) or (1,) for s in samples]
    if is_session_workload(samples):
        plan = session_plan(samples, qps, "poisson", 1.0, seed, think_time_s)
        at, think, nxt = plan.not_before_s.tolist(), plan.think_s.tolist(), plan.next_turn.tolist()
    else:
        at = arrival_times(len(samples), qps, "poisson", 1.0, seed).tolist()
        think, nxt = [0.0] * len(samples), [-1] * len(samples)
    return [
        Job(float(at[k]), len(ids[k]), max(1, min(s.output_tokens, max_output)), ids[k], think[k], nxt[k])
        for k, s in enumerate(samples)
    ]


def _synthetic(num_requests: int, qps: float, seed: int, max_output: int) -> list[Job]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(num_requests):
        t += rng.expovariate(qps)
        prompt = max(4, min(int(rng.lognormvariate(5.3, 1.0)), 2000))
        output = max(4, min(int(rng.lognormvariate(4.9, 0.9)), max_output))
        out.append(Job(t, prompt, output))
    return out


async def _send(
    session: aiohttp.ClientSession,
    url: str,
    rid: str,
    job: Job,
    on_tokens: Callable[[int, float], None] | None = None,
) -> tuple[float, float]:
    """Stream one completion; returns (TTFT, E2E) as this client saw them. `on_tokens(count, at)`: each
    chunk's SSE token events, as the router counts them."""
    prompt, output = list(job.ids) if job.ids else [1] * job.prompt, job.output
    body = {"prompt": prompt, "max_tokens": output, "ignore_eos": True,
            "expected_output_tokens": output, "stream": True}  # fmt: skip
    t0 = time.monotonic()
    first = None
    headers = {"x-block-request-id": rid, "content-type": "application/json"}
    async with session.post(url + "/v1/completions", data=orjson.dumps(body), headers=headers) as resp:
        resp.raise_for_status()
        async for chunk in resp.content.iter_any():
            now = time.monotonic()
            if first is None:
                first = now
            if on_tokens is not None:
                on_tokens(chunk.count(b"data: {"), now)
    end = time.monotonic()
    return (first or end) - t0, end - t0


async def _run(
    urls: list[str],
    profile_name: str,
    reqs: list[Job],
    sample_rate: float,
    seed: int,
    anticipate_arrivals: bool = False,
    on_done: Callable[[], None] | None = None,
    calibration: bool = False,
) -> list[Outcome]:
    """`on_done` is called as each request finishes (a sampled one: all its copies)."""
    profile = load_profile(profile_name)
    rng = random.Random(seed)
    fleet = FleetLog(len(urls)) if anticipate_arrivals else None
    trackers = [
        InstanceTracker(
            u,
            profile,
            added_delay="none",
            anticipate_arrivals=anticipate_arrivals,
            fleet=fleet,
            calibrate=calibration,
        )
        for u in urls
    ]
    outcomes: list[Outcome] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def snapshot(i: int) -> None:
            sent = time.monotonic()
            async with session.get(urls[i] + "/state") as resp:
                state = orjson.loads(await resp.read())
            trackers[i].observe_state(state, (sent + time.monotonic()) / 2)

        async def one(o: Outcome, url: str, rid: str, job: Job, tracker: InstanceTracker) -> None:
            cal = tracker.calibration
            heard = None if cal is None else lambda n, at: cal.tokens(tracker.id, rid, n, at)
            try:
                o.ttft, o.e2e = await _send(session, url, rid, job, heard)
            finally:
                at = time.monotonic()
                tracker.on_finished(rid, at)
                if cal is not None:
                    cal.finished(tracker.id, rid, at)

        async def send(k: int) -> None:
            """Request k: forecast on its instance (every instance when sampled), sent, all copies done."""
            job = reqs[k]
            targets = list(range(len(urls))) if sampled[k] else [k % len(urls)]
            await asyncio.gather(*(snapshot(i) for i in targets))
            hashes = chain_hashes(job.ids) if job.ids else ()
            copies = []
            for i in targets:
                now = time.monotonic()
                f = trackers[i].predict(RoutingRequest(job.prompt, job.output, prefix_hashes=hashes), now)
                assert f is not None
                o = Outcome(i, sampled[k], k, f.ttft_s, f.e2e_s)
                outcomes.append(o)
                rid = f"acc-{k}-{i}"
                routed = RoutingRequest(job.prompt, job.output, id=rid, prefix_hashes=hashes)
                cal = trackers[i].calibration
                if cal is not None:  # as the router: listeners first, then the tracker
                    cal.routed(trackers[i].id, Routed(routed, now))
                trackers[i].on_routed(routed, now)
                copies.append(one(o, urls[i], rid, job, trackers[i]))
            await asyncio.gather(*copies)
            if on_done is not None:
                on_done()

        async def chain(first: int) -> None:
            """A session's turns in order (a request outside sessions is a session of one)."""
            await sleep_until(start + reqs[first].at_s)
            k = first
            while True:
                await send(k)
                k = reqs[k].next_turn
                if k < 0:
                    return
                await asyncio.sleep(reqs[k].think_s)
                await sleep_until(start + reqs[k].at_s)

        sampled = [rng.random() < sample_rate for _ in reqs]
        later = {j.next_turn for j in reqs}
        start = time.monotonic()
        tasks = [asyncio.create_task(chain(k)) for k in range(len(reqs)) if k not in later]
        await asyncio.gather(*tasks)
    return outcomes


def runner_up_gap(e2e: Sequence[float]) -> float:
    """How much longer the request took on the second-fastest instance than on the fastest: when this is
    small, "the fastest" is a near-tie that whatever happens after the decision settles."""
    if len(e2e) < 2:
        return float("nan")
    first, second = sorted(e2e)[:2]
    return second / first - 1


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    def err(kind: str, os_: list[Outcome]) -> float:
        xs = [abs(getattr(o, kind) - getattr(o, "forecast_" + kind)) / getattr(o, kind) for o in os_]
        return sum(xs) / len(xs) if xs else float("nan")

    groups: dict[int, list[Outcome]] = {}
    for o in outcomes:
        if o.sampled:
            groups.setdefault(o.group, []).append(o)
    hits, regret, gaps = 0, [], []
    for g in groups.values():
        chosen, fastest = min(g, key=lambda o: o.forecast_e2e), min(g, key=lambda o: o.e2e)
        hits += chosen.instance == fastest.instance
        regret.append(chosen.e2e / fastest.e2e - 1)  # what choosing by forecast cost the request
        gaps.append(runner_up_gap([o.e2e for o in g]))
    own = [o for o in outcomes if not o.sampled]

    def median_signed(kind: str) -> float:  # > 0: things took longer than forecast
        xs = sorted((getattr(o, kind) - getattr(o, "forecast_" + kind)) / getattr(o, kind) for o in outcomes)
        return xs[len(xs) // 2] if xs else float("nan")

    return {
        "requests": len({o.group for o in outcomes}),
        "forecasts": len(outcomes),
        "ttft_error": round(err("ttft", outcomes), 4),
        "e2e_error": round(err("e2e", outcomes), 4),
        "ttft_error_routed": round(err("ttft", own), 4),
        "e2e_error_routed": round(err("e2e", own), 4),
        "ttft_median_signed_error": round(median_signed("ttft"), 4),
        "e2e_median_signed_error": round(median_signed("e2e"), 4),
        "sampled": len(groups),
        "best_instance_accuracy": round(hits / len(groups), 4) if groups else None,
        "mean_regret_e2e": round(sum(regret) / len(regret), 4) if regret else None,
        "max_regret_e2e": round(max(regret), 4) if regret else None,
        "runner_up_gap_median": round(statistics.median(gaps), 4) if gaps else None,
    }


def run_accuracy(
    instances: int = 4,
    qps: float = 4.0,
    num_requests: int = 200,
    profile: str = "llama-2-7b-a30",
    noise: float = 0.03,
    sample_rate: float = 0.01,
    max_output: int = 512,
    seed: int = 0,
    anticipate_arrivals: bool = False,
    on_done: Callable[[], None] | None = None,
    dataset: str = "sharegpt",
    think_time_s: float = DEFAULT_THINK_TIME_S,
    model_error: str = "",
    calibration: bool = False,
) -> dict[str, Any]:
    """`on_done`: called as each of the `num_requests` requests finishes (for a progress bar)."""
    reqs = workload(num_requests, qps, seed, max_output, dataset, think_time_s)
    t0 = time.monotonic()
    with engines(profile, instances, noise, seed, model_error=model_error) as urls:
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:  # pragma: no cover
            runner = asyncio.run
        outcomes = runner(
            _run(urls, profile, reqs, sample_rate, seed, anticipate_arrivals, on_done, calibration)
        )
    report = summarize(outcomes)
    report.update(
        {"dataset": dataset, "instances": instances, "qps": qps, "noise": noise, "profile": profile,
         "anticipate_arrivals": anticipate_arrivals, "model_error": model_error or "none",
         "calibration": calibration, "wall_s": round(time.monotonic() - t0, 1)}
    )  # fmt: skip
    return report
