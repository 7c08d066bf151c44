"""`block bench` (run, `sweep`, `capacity`) and `block plot`."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from block.errors import fail

Url = Annotated[
    str | None,
    typer.Option(
        help="Server base URL (vLLM, emulator or router), e.g. http://127.0.0.1:8000; several separated by "
        "commas (routers in front of one fleet) take the requests in turn, a session's turns together."
    ),
]
Dataset = Annotated[
    str,
    typer.Option(
        help="Workload: sharegpt | sharegpt-chat | shared-prefix:GROUPS:SYSTEM_TOKENS | hashtrace:PATH | "
        "arxiv:PATH | burstgpt:PATH | azure:PATH | jsonl:PATH | fixed:P:O | "
        "uniform:PMIN-PMAX:OMIN-OMAX | zipf:ALPHA:MAXP:MAXO. For session workloads (sharegpt-chat) "
        "--qps is the rate at which sessions start."
    ),
]
NumRequests = Annotated[int, typer.Option(min=1, help="Requests to send.")]
Process = Annotated[
    str | None,
    typer.Option(help="Arrivals: poisson | gamma | constant | trace (dataset timestamps, scaled to --qps)."),
]
Burstiness = Annotated[
    float, typer.Option(help="Coefficient of variation of inter-arrival gaps (gamma); 1 = Poisson.")
]
ThinkTime = Annotated[
    float,
    typer.Option(
        min=0.0,
        help="Session workloads: mean think time (s, exponential) between an answer and the next turn.",
    ),
]
Seed = Annotated[int, typer.Option(help="Seed for sampling the dataset and the arrival times.")]
Endpoint = Annotated[str, typer.Option(help="completions | chat.")]
Model = Annotated[
    str | None, typer.Option(help="Model name to send (default: the first from GET /v1/models).")
]
FreeLength = Annotated[bool, typer.Option(help="Let the model stop on its own (no ignore_eos).")]
Tokenizer = Annotated[str, typer.Option(help="Tokenizer for prompt lengths: llama3 | qwen3 | cl100k.")]
MaxModelLen = Annotated[int, typer.Option(help="Drop requests with prompt + output above this.")]
Timeout = Annotated[float, typer.Option(help="Per-request timeout (s).")]
MaxConcurrency = Annotated[int | None, typer.Option(help="Cap on requests in flight (default: none).")]
Label = Annotated[str | None, typer.Option(help="Name of this configuration in plots.")]
Policy = Annotated[str | None, typer.Option(help="Routing policy under test (recorded; used by plots).")]
Slo = Annotated[
    list[str] | None,
    typer.Option(
        help="SLO METRIC=SECONDS; per request ttft|tpot|e2e (goodput) or aggregate e.g. ttft_p99=3."
    ),
]


PriorityShare = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Share of requests sent as high priority (x-priority 1, the rest 0), drawn per request "
        "from --seed; the summary reports goodput and rejections per priority. (default: 0, no header)",
    ),
]


def _shared_options(
    url: Url = None,
    dataset: Dataset = "sharegpt",
    num_requests: NumRequests = 1000,
    process: Process = None,
    burstiness: Burstiness = 1.0,
    think_time: ThinkTime = 5.0,
    seed: Seed = 0,
    endpoint: Endpoint = "completions",
    model: Model = None,
    free_length: FreeLength = False,
    tokenizer: Tokenizer = "llama3",
    max_model_len: MaxModelLen = 4096,
    timeout: Timeout = 3600.0,
    max_concurrency: MaxConcurrency = None,
    label: Label = None,
    policy: Policy = None,
    slo: Slo = None,
    priority_share: PriorityShare = 0.0,
) -> None:
    """The options `bench`, `sweep` and `capacity` share (never called: its signature is the spec)."""


_SHARED = inspect.signature(_shared_options, eval_str=True).parameters


def with_shared_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a typer command the shared options in place of its parameter `opts`, which then receives
    their values as one dict (option name -> value; see `_settings`)."""
    sig = inspect.signature(command, eval_str=True)
    params = [q for p in sig.parameters.values() for q in (_SHARED.values() if p.name == "opts" else [p])]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        opts = {name: kwargs.pop(name) for name in _SHARED}
        command(*args, opts=opts, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def _settings(opts: dict[str, Any], **overrides: Any):
    """BenchSettings from the shared options (validated; `fail`s with a message)."""
    from block.bench.metrics import parse_slos
    from block.bench.runner import BenchSettings

    kw = {**opts, **overrides}
    kw["timeout_s"] = kw.pop("timeout")
    kw["think_time_s"] = kw.pop("think_time")
    if kw["url"] is None:
        fail("--url is required")
    from block.bench.client import split_urls

    try:
        split_urls(kw["url"])
    except ValueError as e:
        fail(f"--url: {e}")
    if kw["endpoint"] not in ("completions", "chat"):
        fail(f"--endpoint must be completions or chat, not {kw['endpoint']!r}")
    process = kw.pop("process") or ("gamma" if kw["burstiness"] != 1.0 else "poisson")
    if process not in ("poisson", "gamma", "constant", "trace"):
        fail(f"--process must be poisson, gamma, constant or trace, not {process!r}")
    if process == "poisson" and kw["burstiness"] != 1.0:
        fail("--burstiness needs --process gamma (Poisson has CV 1)")
    try:
        slos = parse_slos(kw.pop("slo") or [])
    except ValueError as e:
        fail(str(e))
    return BenchSettings(process=process, slos=slos, **kw)


def _load(settings):
    from block.bench.runner import load_samples

    try:
        return load_samples(settings)
    except (ValueError, OSError) as e:
        fail(str(e))


def _run_with_progress(settings, samples, qps: float, title: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from block.bench.runner import run_once

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("failed {task.fields[failed]}"),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(title, total=len(samples), failed=0)
        failed = 0

        def on_done(record) -> None:
            nonlocal failed
            failed += not record.ok
            progress.update(task, advance=1, failed=failed)

        try:
            return run_once(settings, samples, qps, on_done)
        except (ValueError, RuntimeError) as e:
            fail(str(e))
        except OSError as e:
            fail(f"cannot reach {settings.url}: {e}")


def _print_summary(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    s = results["summary"]
    table = Table(title=f"qps {results['config']['qps']:g}  model {results['config']['model']}")
    table.add_column("metric")
    for stat in ("mean", "p50", "p90", "p99"):
        table.add_column(stat, justify="right")
    for key in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
        table.add_row(
            key[:-2].upper() + " (ms)", *(_ms(s[key][stat]) for stat in ("mean", "p50", "p90", "p99"))
        )
    console = Console()
    console.print(table)
    console.print(
        f"completed {s['completed']}  failed {s['failed']}  duration {s['duration_s']:.1f} s  "
        f"{s['request_throughput']:.2f} req/s  {s['output_token_throughput']:.0f} output tok/s  "
        f"goodput {s['goodput']:.2f} req/s"
    )
    first_error = next((r["error"] for r in results["requests"] if r["error"]), None)
    if first_error:
        console.print(f"[red]first error:[/] {first_error}", highlight=False)
    classes = s.get("by_priority", {})
    if len(classes) > 1 or any(c["rejected"] for c in classes.values()):
        for priority, c in classes.items():
            console.print(
                f"priority {priority}: {c['requests']} requests, {c['completed']} completed, "
                f"{c['rejected']} rejected (429), goodput {c['goodput']:.2f} req/s, "
                f"on target {c['on_target']:.1%}, TTFT P99 {_ms(c['ttft_p99_s'])} ms"
            )
    if s["slo_met"]:
        console.print(
            "SLOs: " + "  ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in s["slo_met"].items())
        )
    lag = s["client_overhead"]["send_lag_s"]
    per_chunk = s["client_overhead"]["parse_s_per_chunk"]
    if lag["mean"] is not None:
        console.print(
            f"client overhead: send lag mean {_ms(lag['mean'])} ms p99 {_ms(lag['p99'])} ms; "
            f"parse {per_chunk * 1e6 if per_chunk else 0:.1f} us/chunk"
        )
    if results["config"].get("interrupted"):
        console.print("[yellow]interrupted: partial results[/]")


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.1f}"


def _parse_qps(text: str) -> float:
    try:
        qps = math.inf if text.lower() in ("inf", "max") else float(text)
    except ValueError:
        qps = -1.0
    if not qps > 0:
        fail(f"--qps must be a positive rate or inf, not {text!r}")
    return qps


bench_app = typer.Typer(
    help="Benchmark an OpenAI-compatible endpoint (streams every request; times TTFT, ITL, E2E).",
    no_args_is_help=False,
)


@bench_app.callback(invoke_without_command=True)
@with_shared_options
def bench(
    ctx: typer.Context,
    opts: dict[str, Any],
    qps: Annotated[
        str, typer.Option(help="Average request rate (req/s), or inf to send all at once.")
    ] = "inf",
    out: Annotated[Path | None, typer.Option(help="Write the results JSON here.")] = None,
) -> None:
    """Run one benchmark (sub-commands: sweep, capacity)."""
    if ctx.invoked_subcommand is not None:
        return
    from block.bench.results import write_results

    rate = _parse_qps(qps)
    settings = _settings(opts)
    samples = _load(settings)
    results, _ = _run_with_progress(settings, samples, rate, f"qps {rate:g}")
    _print_summary(results)
    if out is not None:
        write_results(results, out)
        typer.echo(f"wrote {out}")


@bench_app.command()
@with_shared_options
def sweep(
    qps: Annotated[str, typer.Option(help="Rates START:STOP:STEP (stop included) or a list 20,24,28.")],
    out_dir: Annotated[Path, typer.Option(help="Folder for one results JSON per rate.")],
    opts: dict[str, Any],
) -> None:
    """Run the same workload at each rate; write OUT_DIR/qps-RATE.json."""
    from block.bench.results import write_results
    from block.bench.sweep import parse_rates

    try:
        rates = parse_rates(qps)
    except ValueError as e:
        fail(str(e))
    settings = _settings(opts)
    samples = _load(settings)
    for rate in rates:
        results, result = _run_with_progress(settings, samples, rate, f"qps {rate:g}")
        _print_summary(results)
        path = out_dir / f"qps-{rate:g}.json"
        write_results(results, path)
        typer.echo(f"wrote {path}")
        if result.interrupted:
            fail("sweep interrupted", code=130)


@bench_app.command()
@with_shared_options
def capacity(
    out_dir: Annotated[Path, typer.Option(help="Folder for each probe's results and capacity.json.")],
    low: Annotated[float, typer.Option(help="Lowest rate to try (req/s).")] = 1.0,
    high: Annotated[float, typer.Option(help="Highest rate to try (req/s).")] = 64.0,
    tolerance: Annotated[float, typer.Option(help="Stop when the bracket is this narrow (req/s).")] = 0.5,
    max_probes: Annotated[int, typer.Option(help="At most this many benchmark runs.")] = 12,
    *,
    opts: dict[str, Any],
) -> None:
    """Highest rate meeting the aggregate SLOs (default ttft_p99=3, the paper's), by bisection.

    A rate passes when every aggregate SLO holds and no request failed.
    """
    import json

    from block.bench.results import write_results
    from block.bench.sweep import CapacitySearch

    settings = _settings(opts, slo=opts["slo"] or ["ttft_p99=3"])
    if not any("_" in k for k in settings.slos):
        fail("capacity needs an aggregate SLO such as ttft_p99=3")
    samples = _load(settings)

    def passes(rate: float) -> bool:
        results, result = _run_with_progress(settings, samples, rate, f"probe qps {rate:g}")
        _print_summary(results)
        write_results(results, out_dir / f"probe-qps-{rate:g}.json")
        if result.interrupted:
            fail("capacity search interrupted", code=130)
        return results["summary"]["all_slos_met"]

    search = CapacitySearch(low, high, tolerance, max_probes)
    try:
        found = search.run(passes)
    except ValueError as e:
        fail(str(e))
    summary = {
        "capacity_qps": found,
        "slos": settings.slos,
        "label": settings.label,
        "policy": settings.policy,
        "dataset": settings.dataset,
        "probes": [{"qps": r, "passed": ok} for r, ok in search.probes],
        "at_least": found == high,
    }
    (out_dir / "capacity.json").write_text(json.dumps(summary, indent=2))
    if found is None:
        typer.echo(f"capacity: below {low:g} req/s (the lowest rate missed the SLOs)")
    else:
        typer.echo(
            f"capacity: {'>= ' if found == high else ''}{found:.2f} req/s  ({out_dir / 'capacity.json'})"
        )


def plot(
    results: Annotated[
        list[Path], typer.Argument(help="Results JSON files, folders of them, capacity.json files.")
    ],
    out: Annotated[Path, typer.Option(help="Output image (PNG/PDF/SVG).")] = Path("fig.png"),
    slo_ttft_p99: Annotated[
        float, typer.Option(help="P99 TTFT SLO for capacity bars from sweeps (s).")
    ] = 3.0,
    title: Annotated[str | None, typer.Option(help="Figure title.")] = None,
) -> None:
    """Latency against rate per policy/label, throughput, and capacity bars (the paper's Figure 6)."""
    from block.bench.plot import collect, draw

    try:
        series, capacities = collect(results, slo_ttft_p99)
    except ValueError as e:
        fail(str(e))
    draw(series, capacities, out, title=title, slo_ttft_p99=slo_ttft_p99)
    typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
    app.command(name="plot")(plot)
