"""Runs experiment specs live (`--mode live`): emulated engines + Block routers + the bench client.

Each spec gets its own cluster: `spec.instances` engine emulators (`block engine`) behind one router
(`block router --policy ...`). Specs that share a workload and a rate form a batch whose clusters run
side by side, and one client sends the same requests at the same instants into every router of the
batch: the policies face exactly the same arrivals and the same machine noise, and on a small machine a
batch of three policies takes the wall time of one run instead of three.

Engines are kept between batches while the next batch needs the same engine configuration (an idle
emulator holds no state a run could see); routers are started afresh per batch so no policy carries
request history (min-qpm's 60 s window, round robin's position) from one run into the next.

Live runs are only faithful while the machine keeps up: every streamed token costs CPU in the engine,
the router and the client. Each results file therefore records the machine's CPU use during the run,
the engines' lag resets (the emulator fell behind its step deadlines) and the router's fallbacks (a
forecast missed its deadline), so a reader can tell a policy effect from an overloaded host. Each batch
is also judged (block/live_validity.py: the engines' step lag and the client's send lateness during the
run): a batch that did not keep real time is printed as INVALID and marked so in `config.validity`
of its results files, and is run again rather than reused on resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import os
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from block import live_validity
from block.bench.client import BenchResult, run_benchmark
from block.bench.results import build_results, write_results
from block.experiments.plan import RunOutput, RunSpec
from block.fleet.engine_spec import EngineSpec
from block.launch import ManagedServer, block_command, router_ready, start_all
from block.machine_load import cpu_busy, cpu_times
from block.sim.workload import WorkloadSpec
from block.workload import Sample
from block.workload.arrivals import arrival_times, scale_trace
from block.workload.sessions import (
    DEFAULT_THINK_TIME_S,
    SessionPlan,
    is_session_workload,
    session_plan,
)

# The emulator's stall rate is fixed (block/engine/settings.py) whenever noise is on.
ENGINE_STALL_PROBABILITY = 0.001
# vLLM (and the emulator) count a begin-of-text token in a text prompt that the workload's token counts
# leave out; engines get this much extra context so a request at exactly max_model_len is not refused.
PROMPT_SPECIAL_TOKENS = 1


@dataclass(frozen=True)
class EngineKey:
    """What makes two clusters' engines interchangeable (reused across batches)."""

    instances: int
    profile: str
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    num_gpu_blocks: int | None
    max_model_len: int
    noise: float
    seed: int
    fleet: tuple[EngineSpec, ...] = ()  # a mixed fleet: each engine's profile and settings over the above
    prefix_caching: bool = False

    @staticmethod
    def of(spec: RunSpec) -> EngineKey:
        return EngineKey(
            spec.instances,
            spec.profile,
            spec.max_num_seqs,
            spec.max_num_batched_tokens,
            spec.num_gpu_blocks,
            spec.workload.max_model_len,
            spec.noise,
            spec.seed,
            spec.fleet,
            spec.prefix_caching,
        )

    def engine(self, i: int) -> EngineSpec:
        """Engine i's profile and batching settings (the fleet's entry over the cluster-wide ones)."""
        base = EngineSpec(
            self.profile,
            self.max_num_seqs,
            self.max_num_batched_tokens,
            self.num_gpu_blocks,
            prefix_caching=self.prefix_caching,
        )
        return self.fleet[i].over(base) if self.fleet else base


@dataclass
class LiveCluster:
    """Real engine processes and the router in front of them (simulated: block.sim.simulator.Cluster)."""

    key: EngineKey
    engines: list[ManagedServer]
    router: ManagedServer | None = None

    @property
    def url(self) -> str:
        assert self.router is not None
        return self.router.url

    @property
    def servers(self) -> list[ManagedServer]:
        """The router (while there is one) first, then the engines."""
        return [*([self.router] if self.router is not None else []), *self.engines]


@dataclass(frozen=True)
class LiveSettings:
    # Clusters of one batch run side by side, at most this many (1: one policy at a time).
    max_parallel: int = 3
    start_timeout_s: float = 120.0
    request_timeout_s: float = 900.0
    # Applied to every spec's workload (e.g. max_model_len=1024 to keep the slowest response short on a
    # small machine). The results file records the workload actually run.
    workload_overrides: dict[str, Any] = field(default_factory=dict)
    # Engines and routers log at this level; uvicorn's per-request access log costs CPU at info.
    log_level: str = "warning"
    log_dir: Path | None = None
    resume: bool = True  # reuse results files from identical live runs (an interrupted sweep goes on)


class LiveRunner:
    mode = "live"

    def __init__(self, settings: LiveSettings | None = None) -> None:
        self.settings = settings or LiveSettings()
        self._engines: dict[tuple[EngineKey, int], LiveCluster] = {}  # idle clusters kept for the next batch
        self._names = itertools.count()  # cluster names for server logs

    # -- plan.Runner ---------------------------------------------------------------------------------

    def run(
        self, specs: Sequence[RunSpec], out_dir: Path, on_done: Callable[[RunOutput], None] | None = None
    ) -> list[RunOutput]:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError("two runs would write the same file; give them distinct labels or groups")
        effective = [self.effective(s) for s in specs]
        for s in effective:
            check_spec(s)  # refuse before starting any server
        out_dir.mkdir(parents=True, exist_ok=True)
        log_dir = self.settings.log_dir or Path(tempfile.mkdtemp(prefix="block-live-"))
        results: list[RunOutput | None] = [None] * len(specs)

        def done(i: int, output: RunOutput) -> None:
            results[i] = output
            if on_done is not None:
                on_done(output)

        todo: list[int] = []
        for i, (spec, eff) in enumerate(zip(specs, effective, strict=True)):
            old = self._reuse(spec, eff, out_dir) if self.settings.resume else None
            if old is not None:
                done(i, old)
            else:
                todo.append(i)
        try:
            for batch in self._batches(todo, effective):
                outputs = self._run_batch(
                    [specs[i] for i in batch], [effective[i] for i in batch], out_dir, log_dir
                )
                for i, o in zip(batch, outputs, strict=True):
                    done(i, o)
        finally:
            self.close()
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Stop every server this runner still holds."""
        clusters, self._engines = list(self._engines.values()), {}
        for c in clusters:
            _stop_cluster(c)

    # -- planning ------------------------------------------------------------------------------------

    def effective(self, spec: RunSpec) -> RunSpec:
        """The spec as it will run live: the workload overrides applied."""
        if not self.settings.workload_overrides:
            return spec
        return replace(spec, workload=replace(spec.workload, **self.settings.workload_overrides))

    def _batches(self, todo: list[int], specs: Sequence[RunSpec]) -> list[list[int]]:
        """Specs with the same workload and rate, in chunks of max_parallel; consecutive batches keep
        the order of first appearance (experiments list a policy's rates together or a rate's policies)."""
        groups: dict[tuple[WorkloadSpec, float], list[int]] = {}
        for i in todo:
            groups.setdefault((specs[i].workload, specs[i].qps), []).append(i)
        size = max(1, self.settings.max_parallel)
        return [g[k : k + size] for g in groups.values() for k in range(0, len(g), size)]

    # -- one batch -----------------------------------------------------------------------------------

    def _run_batch(
        self, specs: list[RunSpec], effective: list[RunSpec], out_dir: Path, log_dir: Path
    ) -> list[RunOutput]:
        clusters = self._clusters_for(effective, log_dir)
        try:
            routers = [
                router_server(c, s, log_dir, self.settings.log_level)
                for c, s in zip(clusters, effective, strict=True)
            ]
            for c, r in zip(clusters, routers, strict=True):
                c.router = r
            start_all(routers, timeout_s=self.settings.start_timeout_s)
            eff = effective[0]  # every spec of a batch has this workload and rate
            samples, arrivals = requests_for(eff.workload, eff.qps)
            sessions = sessions_for(eff.workload, eff.qps, samples)
            concurrency = closed_loop_concurrency(eff) if math.isinf(eff.qps) else None
            before = [_counters(c) for c in clusters]
            lag_before = _engine_lag(clusters)
            own0 = [_process_cpu_s(c) for c in clusters], os.times()
            cpu0 = cpu_times()
            started_at = datetime.now(UTC).isoformat(timespec="seconds")
            outcomes = asyncio.run(
                _replay(
                    [c.url for c in clusters],
                    samples,
                    arrivals,
                    eff.workload.max_model_len,
                    self.settings.request_timeout_s,
                    concurrency,
                    sessions,
                    classes_for(eff.workload, eff.qps),
                )
            )
            cpu = cpu_busy(cpu0, cpu_times())
            own1 = [_process_cpu_s(c) for c in clusters], os.times()
            after = [_counters(c) for c in clusters]
            lag = _engine_lag(clusters)
        finally:
            for c in clusters:
                if c.router is not None:
                    c.router.stop()
                    c.router = None
        client_cpu = (own1[1].user + own1[1].system) - (own0[1].user + own0[1].system)
        send_late = [r.sent_s - r.scheduled_s for o in outcomes for r in o.records if r.sent_s is not None]
        during = lag.minus(lag_before) if lag is not None and lag_before is not None else None
        verdict = live_validity.judge(during, send_late)
        if verdict.valid is False:
            names = ", ".join(s.name for s in specs)
            print(f"{names}: {verdict.message}", file=sys.stderr)
        outputs = []
        for k, (spec, e, outcome) in enumerate(zip(specs, effective, outcomes, strict=True)):
            b, a = before[k], after[k]
            tokens = sum(r.output_tokens for r in outcome.records if r.ok)
            servers_cpu = own1[0][k] - own0[0][k]
            live = {
                "parallel_clusters": len(clusters),
                # the whole machine, other users included: near 1.0 means the timings are suspect
                "machine_cpu_busy": cpu,
                # this cluster's engines and router; the client is shared by the batch's clusters
                "servers_cpu_s": round(servers_cpu, 2),
                "client_cpu_s": round(client_cpu, 2),
                "servers_cpu_us_per_token": round(servers_cpu / tokens * 1e6, 1) if tokens else None,
                "closed_loop_concurrency": concurrency,
                "started_at": started_at,
                "prompt_special_tokens": PROMPT_SPECIAL_TOKENS,
                **{name: a.get(name, 0) - b.get(name, 0) for name in a},
            }
            results = build_results(
                results_config(e, live), outcome.records, outcome.duration_s, dict(spec.slos)
            )
            results["config"]["validity"] = verdict.to_dict()
            for r in results["requests"]:
                r["itl_s"] = []  # the summary's itl_s was computed from them; the file stays small
            path = out_dir / f"{spec.name}.json"
            write_results(results, path)
            outputs.append(
                RunOutput(spec, path, results["summary"], {"live": live, "validity": verdict.to_dict()})
            )
        return outputs

    def _clusters_for(self, specs: list[RunSpec], log_dir: Path) -> list[LiveCluster]:
        """Engines for each spec: reuse idle ones with the same configuration, stop the rest, start new."""
        wanted: list[tuple[EngineKey, int]] = []
        for s in specs:
            key = EngineKey.of(s)
            wanted.append((key, sum(1 for k, _ in wanted if k == key)))
        for slot in [k for k in self._engines if k not in wanted]:
            _stop_cluster(self._engines.pop(slot))
        new = {}
        for slot in wanted:
            if slot not in self._engines:
                name = f"c{next(self._names)}"
                new[slot] = LiveCluster(
                    slot[0], engine_servers(slot[0], name, log_dir, self.settings.log_level)
                )
        if new:
            servers = [e for c in new.values() for e in c.engines]
            start_all(servers, timeout_s=self.settings.start_timeout_s)
            self._engines.update(new)
        return [self._engines[slot] for slot in wanted]

    def _reuse(self, spec: RunSpec, effective: RunSpec, out_dir: Path) -> RunOutput | None:
        path = out_dir / f"{spec.name}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        cfg = data.get("config", {})
        if cfg.get("mode") != "live" or cfg.get("spec") != _spec_key(effective):
            return None
        if data.get("summary", {}).get("slos") != dict(spec.slos):
            return None
        if cfg.get("validity", {}).get("valid") is False:
            return None  # measured while the machine could not keep up: measure again
        return RunOutput(spec, path, data["summary"], {"live": cfg.get("live", {}), "reused": True})


# -- specs -----------------------------------------------------------------------------------------------


def check_spec(spec: RunSpec) -> None:
    """Refuse what the live pieces cannot do, with the reason."""
    if spec.noise > 0 and not math.isclose(spec.stall_probability, ENGINE_STALL_PROBABILITY):
        raise ValueError(
            f"{spec.name}: the engine emulator stalls with probability {ENGINE_STALL_PROBABILITY} whenever "
            f"noise is on; live runs cannot use stall_probability {spec.stall_probability}"
        )
    if spec.noise == 0 and spec.stall_probability > 0:
        raise ValueError(f"{spec.name}: with noise 0 the emulator never stalls; set stall_probability 0")
    if not spec.qps > 0:
        raise ValueError(f"{spec.name}: qps must be > 0")
    lengths = getattr(spec.workload, "lengths", "known")
    if lengths != "known":
        # The client fixes every output with max_tokens + ignore_eos, so the router always knows it.
        raise ValueError(
            f"{spec.name}: live runs send the true output length (ignore_eos); lengths={lengths!r} "
            "(planning with estimated lengths) is simulator-only for now"
        )


def closed_loop_concurrency(spec: RunSpec) -> int:
    """qps = inf (a saturation pilot): instead of opening every request's stream at once, keep as many
    in flight as the cluster can run (instances x max_num_seqs). The engines would only queue the rest,
    so throughput is the same, and the host is spared thousands of idle streams."""
    from block.engine.settings import replica_config
    from block.profiles import load_profile

    if spec.fleet:
        key = EngineKey.of(spec)
        return sum(key.engine(i).replica_config().max_num_seqs for i in range(spec.instances))
    cfg = replica_config(load_profile(spec.profile), max_num_seqs=spec.max_num_seqs)
    return spec.instances * cfg.max_num_seqs


def requests_for(w: WorkloadSpec, qps: float) -> tuple[list[Sample], np.ndarray]:
    """The samples and send times, as the simulator derives them (block.sim.workload.requests_for),
    sorted by send time (the client sends in list order)."""
    # The simulator's own (cached) draw, so both modes replay identical samples even as its sampling
    # rules grow (held-out splits); `split` exists only in newer WorkloadSpecs.
    from block.sim import workload as sim_workload

    split = getattr(w, "split", "all")
    key = (w.dataset, w.num_requests, w.seed, w.tokenizer, w.max_model_len)
    samples = list(sim_workload._samples(*key, split) if split != "all" else sim_workload._samples(*key))
    plan = sessions_for(w, qps, samples)
    if plan is not None:  # sessions start in list order: their turns stay together
        return samples, plan.not_before_s
    if w.process == "trace":
        stamps = [s.arrival_s for s in samples]
        if any(t is None for t in stamps):
            raise ValueError(f"process 'trace' needs a dataset with timestamps; {w.dataset!r} has none")
        arrivals = scale_trace(stamps, None if math.isinf(qps) else qps)
    else:
        arrivals = arrival_times(len(samples), qps, w.process, w.burstiness, w.seed)
    order = np.argsort(arrivals, kind="stable")
    return [samples[i] for i in order], np.asarray(arrivals, dtype=np.float64)[order]


def sessions_for(w: WorkloadSpec, qps: float, samples: list[Sample]) -> SessionPlan | None:
    """When each turn of a session workload is due (as the simulator releases them); None otherwise."""
    if not is_session_workload(samples):
        return None
    think = getattr(w, "think_time_s", DEFAULT_THINK_TIME_S)
    return session_plan(samples, qps, w.process, w.burstiness, w.seed, think)


def classes_for(w: WorkloadSpec, qps: float) -> list[int] | None:
    """Each request's priority in send order, as the simulator gives them (None: no priorities)."""
    share = getattr(w, "priority_share", 0.0)
    if not share:
        return None
    from block.sim import workload as sim_workload

    classes = sim_workload.requests_for(w, qps).priorities
    return None if classes is None else classes.tolist()


def _spec_key(spec: RunSpec) -> dict[str, Any]:
    """Everything that decides a live run's outcome, as JSON (for resuming)."""
    return json.loads(
        json.dumps(
            {
                "policy": spec.policy,
                "qps": None if math.isinf(spec.qps) else spec.qps,
                "engines": _engine_key(EngineKey.of(spec)),
                "workload": spec.workload.to_dict(),
                "stall_probability": spec.stall_probability,
                "admission": spec.admission,
            }
        )
    )


def _engine_key(key: EngineKey) -> dict[str, Any]:
    d = dataclasses.asdict(key)
    if not key.fleet:
        del d["fleet"]  # keys of homogeneous runs stay as they were (earlier results files resume)
    return d


def results_config(spec: RunSpec, live: dict[str, Any]) -> dict[str, Any]:
    """The results file's `config`: the simulator's fields (block.sim.batch.SimRun.results_config) where
    they mean the same thing, plus how the live run was made."""
    return {
        "mode": "live",
        "label": spec.display,
        "group": spec.group,
        "policy": spec.policy,
        "qps": spec.qps,
        **spec.workload.to_dict(),
        "ignore_eos": True,
        "instances": spec.instances,
        "profile": spec.profile,
        **({"fleet": [e.label() for e in spec.fleet]} if spec.fleet else {}),
        "engine": {
            "max_num_seqs": spec.max_num_seqs,
            "max_num_batched_tokens": spec.max_num_batched_tokens,
            "num_gpu_blocks": spec.num_gpu_blocks,
            "prefix_caching": spec.prefix_caching,
            "max_model_len": spec.workload.max_model_len + PROMPT_SPECIAL_TOKENS,
            "noise": spec.noise,
            "stall_probability": spec.stall_probability if spec.noise > 0 else 0.0,
        },
        "seed": spec.seed,
        "spec": _spec_key(spec),
        "live": live,
    }


# -- servers ---------------------------------------------------------------------------------------------


def engine_servers(key: EngineKey, prefix: str, log_dir: Path, log_level: str) -> list[ManagedServer]:
    """The cluster's engine emulators, each with its own profile and settings (a mixed fleet); the
    engines report their profile in /state, so the router forecasts each with its own."""
    return [
        block_command(
            f"{prefix}-engine{i}",
            [
                "engine",
                *replace(key.engine(i), max_model_len=None).engine_args(),
                "--max-model-len",
                str(key.max_model_len + PROMPT_SPECIAL_TOKENS),
                "--noise",
                str(key.noise),
                # one noise stream per engine, as the simulator gives each replica its own
                "--seed",
                str(key.seed * 1000 + i),
                "--log-level",
                log_level,
            ],
            log_dir=log_dir,
        )  # fmt: skip
        for i in range(key.instances)
    ]


def router_server(cluster: LiveCluster, spec: RunSpec, log_dir: Path, log_level: str) -> ManagedServer:
    args = ["router", "--policy", spec.policy, "--seed", str(spec.seed), "--log-level", log_level]
    if spec.admission != "off":
        args += [
            "--admission",
            spec.admission,
            "--admission-ttft-ms",
            f"{spec.slos.get('ttft', 3.0) * 1000:g}",
        ]
        if "e2e" in spec.slos:
            args += ["--admission-e2e-ms", f"{spec.slos['e2e'] * 1000:g}"]
    args += [a for e in cluster.engines for a in ("--instance", e.url)]
    return block_command(
        f"{cluster.engines[0].name.split('-')[0]}-router-{spec.policy}",
        args,
        log_dir=log_dir,
        health=router_ready(len(cluster.engines)),
    )


def _stop_cluster(c: LiveCluster) -> None:
    for s in c.servers:
        s.stop(grace_s=5.0)


# -- measuring -------------------------------------------------------------------------------------------


async def _replay(
    urls: list[str],
    samples: list[Sample],
    arrivals: np.ndarray,
    max_model_len: int,
    timeout_s: float,
    concurrency: int | None,
    sessions: SessionPlan | None = None,
    classes: list[int] | None = None,
) -> list[BenchResult]:
    """The same requests at the same instants into every router, with their x-priority (session turns:
    after the same think times, each router's own answers deciding when)."""
    runs = [
        run_benchmark(
            url,
            samples,
            arrivals,
            max_model_len=max_model_len,
            timeout_s=timeout_s,
            max_concurrency=concurrency,
            sessions=sessions,
            priorities=classes,
        )
        for url in urls
    ]
    return list(await asyncio.gather(*runs))


_COUNTERS = {
    "engine_lag_resets": "block:engine_lag_resets_total",
    "engine_steps": "block:engine_steps_total",
    # prompt tokens looked up in the engines' prefix caches at admission, and of them found cached
    "prefix_cache_queries": "vllm:prefix_cache_queries_total",
    "prefix_cache_hits": "vllm:prefix_cache_hits_total",
    "router_fallbacks": "block_router_fallbacks_total",
    "router_forecasts_missed": "block_router_forecasts_missed_total",
    "router_retries": "block_router_retries_total",
}


def _counters(c: LiveCluster) -> dict[str, float]:
    """Sums of a few Prometheus counters over the cluster's servers (missing ones count 0)."""
    totals = dict.fromkeys(_COUNTERS, 0.0)
    for s in c.servers:
        for line in _scrape(s.url):
            for key, metric in _COUNTERS.items():
                if line.startswith(metric) and line[len(metric) : len(metric) + 1] in (" ", "{"):
                    with contextlib.suppress(ValueError, IndexError):
                        totals[key] += float(line.rsplit(" ", 1)[1])
    return totals


def _engine_lag(clusters: list[LiveCluster]) -> live_validity.EngineLag | None:
    """The lag counters of every engine of the batch, summed."""
    return live_validity.total(live_validity.scrape(e.url) for c in clusters for e in c.engines)


def _scrape(url: str) -> Iterator[str]:
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=2.0) as r:
            yield from r.read().decode(errors="replace").splitlines()
    except OSError:
        return


def _process_cpu_s(c: LiveCluster) -> float:
    """CPU seconds (user + system) used so far by the cluster's server processes (Linux /proc)."""
    return sum(s.cpu_s() for s in c.servers)
