"""`block router ...`: serve the router (no sub-command) or benchmark it (`bench`)."""

from __future__ import annotations

from pathlib import Path

import typer

from block.errors import fail


def parse_kv_events(items: list[str]) -> dict[str, str]:
    """--kv-events URL=ENDPOINT[,REPLAY] items as the config's mapping."""
    out: dict[str, str] = {}
    for item in items:
        url, sep, endpoints = item.partition("=")
        if not sep or not url or not endpoints:
            raise typer.BadParameter(f"expected URL=tcp://host:port[,tcp://host:port], got {item!r}")
        out[url.rstrip("/")] = endpoints
    return out


def register(app: typer.Typer) -> None:
    router = typer.Typer(
        help="The global router: an OpenAI-compatible proxy choosing an instance per request.",
        invoke_without_command=True,
        no_args_is_help=False,
    )

    @router.callback(invoke_without_command=True)
    def serve(
        ctx: typer.Context,
        instance: list[str] = typer.Option(
            None, "--instance", help="Instance base URL (repeat for each).", rich_help_panel="Routing"
        ),
        policy: str = typer.Option(
            None,
            help="Routing policy: block, block-po2, llumnix, infaas, min-qpm, "
            "least-requests, po2, round-robin, random; the peers' cache-aware baselines cache-aware "
            "(SGLang), prefix-load (llm-d), kv-overlap (Dynamo). (default: block)",
            rich_help_panel="Routing",
        ),
        port: int = typer.Option(
            None, min=1, max=65535, help="Port to listen on. (default: 8000)", rich_help_panel="Server"
        ),
        host: str = typer.Option(
            None, help="Address to bind. (default: 127.0.0.1)", rich_help_panel="Server"
        ),
        config: Path = typer.Option(
            None,
            "--config",
            exists=True,
            dir_okay=False,
            help="YAML file, same keys.",
            rich_help_panel="Server",
        ),
        fleet: Path = typer.Option(
            None,
            "--fleet",
            exists=True,
            dir_okay=False,
            help="Fleet file: the --config YAML whose instances name their profile and engine settings "
            "(url, profile, max_num_seqs, ...); checked before anything starts.",
            rich_help_panel="Routing",
        ),
        predictor: list[str] = typer.Option(
            None, "--predictor", help="Sidecar predictor URL per instance.", rich_help_panel="State"
        ),
        length_model: str = typer.Option(
            None, help="Length estimator file, or 'default' for the shipped one.", rich_help_panel="Routing"
        ),
        length_quantile: float = typer.Option(
            None,
            help="Plan free-length requests with this quantile of the estimate. (default: median)",
            rich_help_panel="Routing",
        ),
        tokenizer: str = typer.Option(
            None,
            help="How prompts are counted and laid out as token ids (their prefix identity): llama3, "
            "qwen3, cl100k or o200k in the Llama 3 chat layout, or the served model's directory with "
            "tokenizer.json and its chat template, for ids identical to the engine's (exact prefix "
            "routing on --kv-events needs them). (default: llama3)",
            rich_help_panel="Routing",
        ),
        health_interval: float = typer.Option(
            None, help="Seconds between health checks. (default: 0.5)", rich_help_panel="State"
        ),
        deadline_ms: float = typer.Option(
            None, help="Forecast deadline per decision. (default: 5)", rich_help_panel="Routing"
        ),
        refresh_ms: float = typer.Option(
            None, help="State polling period per instance. (default: 20)", rich_help_panel="State"
        ),
        state_reads_per_s: float = typer.Option(
            None,
            help="State reads a second over the whole fleet, at most: with more instances than this allows "
            "at --refresh-ms, each is read every N / this seconds and its state filled in between from the "
            "router's own routes and finishes. (default: 1000)",
            rich_help_panel="State",
        ),
        kv_events: list[str] = typer.Option(
            None,
            "--kv-events",
            help="Stock vLLM started with --kv-events-config: URL=tcp://host:port[,tcp://host:replay-port] "
            "(repeat per instance). The router subscribes and keeps an exact index of what each instance has "
            "cached. (default: none)",
            rich_help_panel="State",
        ),
        metrics_read_ms: float = typer.Option(
            None,
            help="Stock vLLM: read /metrics this often; at the refreshes between, the state is rebuilt "
            "from what the router sent and saw stream back (reading every 20 ms slows a small engine: "
            "`block realengine poll-cost`). (default: 250)",
            rich_help_panel="State",
        ),
        admin_token: str = typer.Option(
            None,
            help="Bearer token for POST/DELETE /instances (else the API key guards them).",
            rich_help_panel="Security",
        ),
        api_key: list[str] = typer.Option(
            None,
            "--api-key",
            help="Bearer key clients must present (completions, /v1/models, GET /instances). "
            "KEY:PRIORITY also gives that key's requests a default priority for admission; repeat "
            "for several keys.",
            rich_help_panel="Security",
        ),
        max_body_bytes: int = typer.Option(
            None,
            help="Larger request bodies get 413. (default: 4 MiB)",
            rich_help_panel="Timeouts and limits",
        ),
        profile: str = typer.Option(
            None, help="Step-time profile for stock vLLM instances.", rich_help_panel="State"
        ),
        discover: str = typer.Option(
            None,
            "--discover",
            help="k8s:NAMESPACE/LABEL_SELECTOR: the fleet is the ready endpoints of the EndpointSlices with "
            "these labels (e.g. kubernetes.io/service-name=vllm), watched; terminating ones drain, then "
            "leave. Profile from the pod label block/profile, else --profile. In a pod: its service "
            "account; elsewhere: $KUBECONFIG. (default: off)",
            rich_help_panel="Discovery",
        ),
        anticipate_arrivals: bool = typer.Option(
            None,
            "--anticipate-arrivals/--no-anticipate-arrivals",
            help="Forecasts add the requests expected to arrive at the fleet's recent rate per "
            "instance (lower forecast bias under load). (default: off)",
            rich_help_panel="Routing",
        ),
        calibration: bool = typer.Option(
            None,
            "--calibration/--no-calibration",
            help="Correct each instance's profile online, per phase (decode, prefill), from the token "
            "times streaming back (block_router_calibration_factor; 'calibration' in GET /instances). "
            "(default: off)",
            rich_help_panel="Routing",
        ),
        default_output_tokens: int = typer.Option(
            None, help="Planned output when nothing better is known.", rich_help_panel="Routing"
        ),
        log_level: str = typer.Option(
            None, help="debug, info, warning, error. (default: info)", rich_help_panel="Server"
        ),
        seed: int = typer.Option(None, help="Seed for randomised policies.", rich_help_panel="Routing"),
        decision_log: str = typer.Option(
            None,
            help="Write one JSON line per request: each instance's forecast and state at the decision, "
            "and the TTFT and E2E that followed (read it with `block router decisions FILE`). "
            "(default: none)",
            rich_help_panel="Server",
        ),
        provision: str = typer.Option(
            None,
            help="Auto-provisioning: preemptive (forecasts) or reactive (finished requests).",
            rich_help_panel="Provisioning",
        ),
        slo_e2e: float = typer.Option(
            None, "--slo-e2e", help="End-to-end latency SLO in seconds.", rich_help_panel="Provisioning"
        ),
        min_instances: int = typer.Option(
            None, help="Fewest serving instances. (default: 1)", rich_help_panel="Provisioning"
        ),
        max_instances: int = typer.Option(
            None,
            help="Most instances. (default: static: --instance + --standby count)",
            rich_help_panel="Provisioning",
        ),
        provider: str = typer.Option(
            None,
            help="Where instances come from: static, local-emulator, command, kubernetes. (default: static)",
            rich_help_panel="Provisioning",
        ),
        standby: list[str] = typer.Option(
            None, "--standby", help="Spare instance URL (static provider).", rich_help_panel="Provisioning"
        ),
        scale_up_cmd: str = typer.Option(
            None, help="Shell hook; prints the new instance URL on stdout.", rich_help_panel="Provisioning"
        ),
        scale_down_cmd: str = typer.Option(
            None,
            help="Shell hook; gets the URL as last argument and in $BLOCK_INSTANCE_URL.",
            rich_help_panel="Provisioning",
        ),
        k8s_deployment: str = typer.Option(
            None,
            help="Provider kubernetes: NAMESPACE/NAME of the engines' Deployment, scaled through the API.",
            rich_help_panel="Provisioning",
        ),
        cooldown_s: float = typer.Option(
            None, help="Seconds between provisioning actions. (default: 30)", rich_help_panel="Provisioning"
        ),
        scale_down_hold_s: float = typer.Option(
            None,
            help="Forecasts under half the SLO this long retire an instance. (default: 120)",
            rich_help_panel="Provisioning",
        ),
        no_scale_down: bool = typer.Option(
            False, "--no-scale-down", help="Only ever add (as the paper).", rich_help_panel="Provisioning"
        ),
        scale_up_fraction: float = typer.Option(
            None,
            help="Preemptive: scale up when a forecast passes this share of the SLO. (default: 1)",
            rich_help_panel="Provisioning",
        ),
        emulator_profile: str = typer.Option(
            None,
            help="Profile of engines the local-emulator provider starts. (default: tiny-fast)",
            rich_help_panel="Provisioning",
        ),
        start_timeout_s: float = typer.Option(
            None,
            help="An added instance not healthy within this is released. (default: 600)",
            rich_help_panel="Provisioning",
        ),
        # Security (block.router.auth, block.router.upstreams).
        allow_admin_without_auth: bool = typer.Option(
            False,
            "--allow-admin-without-auth",
            help="Let anyone add and remove instances when neither --admin-token nor --api-key is set "
            "(trusted networks only). (default: refused with 403)",
            rich_help_panel="Security",
        ),
        allowed_upstreams: list[str] = typer.Option(
            None,
            "--allowed-upstreams",
            help="Only instance and predictor URLs on these hosts: CIDRs, IP addresses or host names "
            "(repeat or comma-separate; names match literally, never resolved). (default: any host)",
            rich_help_panel="Security",
        ),
        # Timeouts and limits: per upstream attempt, and the shutdown drain.
        first_byte_timeout_s: float = typer.Option(
            None,
            help="Per attempt: seconds from sending to the first response byte (a stream's first token, "
            "a non-stream's whole answer), counted while no response from that instance makes progress "
            "(a busy instance is not a hung one); then it is taken out and the request retried "
            "elsewhere. (default: 60)",
            rich_help_panel="Timeouts and limits",
        ),
        idle_timeout_s: float = typer.Option(
            None,
            help="Per attempt: longest gap between two chunks of a response; a stream cut by it ends "
            "with an error event. (default: 60)",
            rich_help_panel="Timeouts and limits",
        ),
        timeout_cooldown_s: float = typer.Option(
            None,
            help="An instance taken out by a timeout stays out this long before a good health check "
            "may bring it back; doubles per repeat without a completed response, up to 8x. (default: 30)",
            rich_help_panel="Timeouts and limits",
        ),
        drain_timeout_s: float = typer.Option(
            None,
            help="On SIGTERM: stop accepting, let requests in flight finish this long, then cut the "
            "rest (streams: error event; others: 503) and exit. (default: 30)",
            rich_help_panel="Timeouts and limits",
        ),
        # Client-facing limits, and the sidecars' shared token.
        max_header_bytes: int = typer.Option(
            None,
            help="A request head (request line and headers) larger than this gets 431. (default: 65536)",
            rich_help_panel="Timeouts and limits",
        ),
        header_timeout_s: float = typer.Option(
            None,
            help="Close a connection whose request head is not complete within this many seconds "
            "(from opening, or from the head's first byte on a kept-alive connection). (default: 10)",
            rich_help_panel="Timeouts and limits",
        ),
        body_timeout_s: float = typer.Option(
            None,
            help="A request body not complete this many seconds after its head gets 408. (default: 30)",
            rich_help_panel="Timeouts and limits",
        ),
        predictor_token: str = typer.Option(
            None,
            envvar="BLOCK_PREDICTOR_TOKEN",
            show_envvar=True,
            help="Bearer token the --predictor sidecars require (their --token).",
            rich_help_panel="Security",
        ),
        admission: str = typer.Option(
            None,
            help="SLO-aware admission: off (every request is routed at once), queue (hold a request no "
            "instance can serve within its target until a forecast says one can; reject it at its "
            "deadline) or reject (429 with Retry-After at once). (default: off)",
            rich_help_panel="Admission",
        ),
        max_held: int = typer.Option(
            None,
            help="Requests held at most (--admission queue); beyond, the lowest priority and latest "
            "deadline gets 429. (default: 1000)",
            rich_help_panel="Admission",
        ),
        admission_ttft_ms: float = typer.Option(
            None,
            help="TTFT target of requests without an x-slo-ttft-ms header. (default: 3000)",
            rich_help_panel="Admission",
        ),
        admission_e2e_ms: float = typer.Option(
            None,
            help="E2E target of requests without an x-slo-e2e-ms header. (default: none)",
            rich_help_panel="Admission",
        ),
    ) -> None:
        if ctx.invoked_subcommand is not None:
            return
        from block.router.config import RouterConfig, parse_api_keys
        from block.router.request_shape import load_prompt_layout
        from block.router.server import serve as run_server

        plain_key, keyed = parse_api_keys(api_key or [])
        try:
            cfg = RouterConfig.build(
                config,
                fleet,
                instances=instance or None,
                predictors=predictor or None,
                policy=policy,
                port=port,
                host=host,
                length_model=length_model,
                length_quantile=length_quantile,
                tokenizer=tokenizer,
                health_interval=health_interval,
                deadline_ms=deadline_ms,
                refresh_ms=refresh_ms,
                metrics_read_ms=metrics_read_ms,
                state_reads_per_s=state_reads_per_s,
                kv_events=parse_kv_events(kv_events) if kv_events else None,
                admin_token=admin_token,
                api_key=plain_key,
                api_keys=keyed or None,
                max_body_bytes=max_body_bytes,
                profile=profile,
                anticipate_arrivals=anticipate_arrivals,
                calibration=calibration,
                default_output_tokens=default_output_tokens,
                log_level=log_level,
                decision_log=decision_log,
                seed=seed,
                provision=provision,
                slo_e2e=slo_e2e,
                min_instances=min_instances,
                max_instances=max_instances,
                provider=provider,
                standby=standby or None,
                scale_up_cmd=scale_up_cmd,
                scale_down_cmd=scale_down_cmd,
                cooldown_s=cooldown_s,
                scale_down_hold_s=scale_down_hold_s,
                scale_down=False if no_scale_down else None,
                scale_up_fraction=scale_up_fraction,
                emulator_profile=emulator_profile,
                k8s_deployment=k8s_deployment,
                provision_start_timeout_s=start_timeout_s,
                allow_admin_without_auth=allow_admin_without_auth or None,
                allowed_upstreams=allowed_upstreams or None,
                first_byte_timeout_s=first_byte_timeout_s,
                idle_timeout_s=idle_timeout_s,
                timeout_cooldown_s=timeout_cooldown_s,
                drain_timeout_s=drain_timeout_s,
                max_header_bytes=max_header_bytes,
                header_timeout_s=header_timeout_s,
                body_timeout_s=body_timeout_s,
                predictor_token=predictor_token,
                discover=discover,
                admission=admission,
                max_held=max_held,
                admission_ttft_ms=admission_ttft_ms,
                admission_e2e_ms=admission_e2e_ms,
            )
            from block.policies import POLICIES

            if cfg.policy not in POLICIES:
                raise ValueError(f"unknown policy {cfg.policy!r} (known: {', '.join(sorted(POLICIES))})")
            prompt_layout = load_prompt_layout(cfg.tokenizer)  # bad --tokenizer: one line, no failed start
            if cfg.discover:
                from block.router.discovery import kube_config

                kube_config()  # credentials found now, or a clear error rather than a failed start
        except (ValueError, TypeError, OSError) as e:
            fail(str(e))
            return
        if not cfg.instances and not cfg.provision.enabled and not cfg.discover:
            fail(
                "give at least one --instance URL (or 'instances:' in --config, or --discover); "
                "more can be added at run time"
            )
        run_server(cfg, prompt_layout)

    @router.command("bench")
    def bench(
        instances: int = typer.Option(12, help="Emulated engines to start."),
        policy: str = typer.Option("block", help="Routing policy under test."),
        profile: str = typer.Option("tiny-fast", help="Engine profile (a fast synthetic one)."),
        streams: int = typer.Option(2000, help="Concurrent streams for the stream test."),
        stream_tokens: int = typer.Option(50, help="Tokens per stream in the stream test."),
        latency_requests: int = typer.Option(1500, help="Requests per side for the added-latency test."),
        latency_rate: float = typer.Option(300.0, help="Request rate of the added-latency test (req/s)."),
        rates: str = typer.Option("250,500,750,1000,1250,1500,2000,2500", help="Rates tried for throughput."),
        step_seconds: float = typer.Option(3.0, help="Seconds per throughput step."),
        only: str = typer.Option("latency,throughput,streams", help="Which parts to run."),
        engines_per_process: int = typer.Option(
            1, min=1, help="Emulated engines per process (many engines on a small machine)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """Start emulated engines and the router; measure added latency, throughput and concurrent streams."""
        from block.router.bench import BenchSettings, run_bench

        settings = BenchSettings(
            instances=instances,
            policy=policy,
            profile=profile,
            streams=streams,
            stream_tokens=stream_tokens,
            latency_requests=latency_requests,
            latency_rate=latency_rate,
            rates=[float(r) for r in rates.split(",") if r.strip()],
            step_seconds=step_seconds,
            parts=[p.strip() for p in only.split(",") if p.strip()],
            engines_per_process=engines_per_process,
        )
        try:
            run_bench(settings, as_json=as_json)
        except RuntimeError as e:
            fail(str(e))

    @router.command("decide-bench")
    def decide_bench(
        instances: int = typer.Option(100, min=1, help="Instances in the fleet (each with a busy snapshot)."),
        running: int = typer.Option(48, min=1, help="Running requests per instance."),
        waiting: int = typer.Option(
            32, min=0, help="Waiting requests per instance (mean; half to 1.5 times)."
        ),
        decisions: int = typer.Option(50, min=1, help="Decisions to time (each also forecast exhaustively)."),
        seed: int = typer.Option(0),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """Time block decisions over N busy instances in process (one core), and check each against
        forecasting every instance."""
        import json

        from block.router.decide_bench import run

        report = run(instances, running, waiting, decisions, seed)
        if as_json:
            typer.echo(json.dumps(report))
            return
        for k, v in report.items():
            typer.echo(f"{k:>24}: {v}")

    @router.command("decisions")
    def decisions(
        path: str = typer.Argument(..., help="A file written by `block router --decision-log`."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """Read a decision log: per instance, forecast bias (actual over forecast TTFT and E2E), error and
        snapshot age; over the run, decisions without forecasts and choices a bias correction changes."""
        import json

        from rich.console import Console
        from rich.table import Table

        from block.router.decision_report import read_log, report

        try:
            result = report(read_log(path))
        except (OSError, ValueError) as e:
            fail(str(e))
            return
        if as_json:
            print(json.dumps(result, indent=2))
            return
        table = Table(title=f"{result['requests']} requests, policy {result['policy']}")
        for col in ("instance", "routed", "TTFT act/fc", "E2E act/fc", "E2E |err|", "age p50 s", "age p99 s"):
            table.add_column(col, justify="left" if col == "instance" else "right")
        for inst, r in result["instances"].items():
            cells = (
                r["routed"],
                r["ttft_actual_over_forecast_p50"],
                r["e2e_actual_over_forecast_p50"],
                r["e2e_abs_error_p50"],
                r["snapshot_age_s_p50"],
                r["snapshot_age_s_p99"],
            )
            table.add_row(inst, *("-" if c is None else str(c) for c in cells))
        console = Console()
        console.print(table)
        console.print(
            f"decisions without forecasts: {result['without_forecast_share']}; "
            f"lowest-E2E choices that each instance's median bias would change: "
            f"{result['choice_changed_by_bias_correction']}"
        )

    app.add_typer(router, name="router")
