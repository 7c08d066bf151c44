"""Router settings: one dataclass, loadable from YAML, with command-line flags taking precedence."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


@dataclass(slots=True)
class RouterConfig:
    instances: list[str] = field(default_factory=list)
    predictors: list[str] = field(default_factory=list)  # sidecar URL per instance, same order
    policy: str = "block"
    policy_options: dict[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8000
    length_model: str | None = None  # file for LengthEstimator.load; "default" = the shipped one
    length_quantile: float | None = None  # plan with this quantile of the estimate (None: the median)
    default_output_tokens: int = 256  # planned length when nothing better is known
    tokenizer: str = "llama3"
    health_interval: float = 0.5  # seconds between health checks of one instance
    health_timeout: float = 0.4  # a check slower than this counts as a failure
    deadline_ms: float = 5.0  # time budget for all forecasts of one decision
    refresh_ms: float = 20.0  # state polling period per instance
    admin_token: str | None = None
    api_key: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_retries: int = 2  # extra attempts on other instances before the first byte went out
    connect_timeout: float = 5.0  # generous: thousands of new connections can arrive in one burst
    profile: str | None = None  # step-time profile for stock vLLM instances (Block engines report theirs)
    anticipate_arrivals: bool = False  # forecasts add the arrivals expected at the fleet's rate per instance
    log_level: str = "info"
    seed: int | None = None
    # Auto-provisioning (block.provision): off unless `provision` is preemptive or reactive.
    provision: str | None = None
    slo_e2e: float | None = None  # seconds
    min_instances: int = 1
    max_instances: int | None = None  # default for the static provider: instances + standby
    provider: str = "static"  # static | local-emulator | command
    standby: list[str] = field(default_factory=list)  # static provider's spare instances
    scale_up_cmd: str | None = None
    scale_down_cmd: str | None = None
    hook_timeout_s: float = 300.0
    emulator_profile: str = "tiny-fast"  # local-emulator: `block engine --profile`
    cooldown_s: float = 30.0
    scale_down: bool = True
    scale_down_hold_s: float = 120.0
    scale_down_fraction: float = 0.5
    scale_up_fraction: float = 1.0  # preemptive: forecasts over this share of the SLO add capacity
    provision_interval_s: float = 0.5  # controller tick
    provision_start_timeout_s: float = 600.0  # an added instance not healthy by then is released
    # Security (block.router.auth, block.router.upstreams).
    allow_admin_without_auth: bool = False  # POST/DELETE /instances open when no credential is set
    allowed_upstreams: list[str] = field(default_factory=list)  # CIDRs, IPs, host names; [] = any
    # Timeouts and limits (per upstream attempt, and shutdown); see block/router/proxy.py.
    first_byte_timeout_s: float = 60.0  # sending an attempt -> its first response byte (a hang detector)
    idle_timeout_s: float = 60.0  # longest gap between two chunks of one response
    timeout_cooldown_s: float = 30.0  # an instance out for a timeout stays out this long (doubling)
    drain_timeout_s: float = 30.0  # on SIGTERM: in-flight requests may finish this long, then are cut
    # Client-facing limits (block.http_limits) and the predictor sidecars' token and notifications.
    max_header_bytes: int = 64 * 1024  # a larger request head gets 431
    header_timeout_s: float = 10.0  # a request head not complete by then: the connection is closed
    body_timeout_s: float = 30.0  # a request body not complete by then (after its head) gets 408
    predictor_token: str | None = None  # sent to every sidecar as "Authorization: Bearer ..."
    predictor_notify_timeout_s: float = 2.0  # a /routed or /finished notice slower than this is dropped
    predictor_notify_max_in_flight: int = 128  # per sidecar; notices beyond are dropped (counted)

    def provision_settings(self) -> Any:
        """The controller's settings (a block.provision.ProvisionSettings), or None when off."""
        if self.provision is None:
            return None
        from block.provision.controller import ProvisionSettings

        if self.slo_e2e is None:
            raise ValueError("--provision needs --slo-e2e SECONDS")
        max_instances = self.max_instances
        if max_instances is None:
            if self.provider != "static":
                raise ValueError(f"--provider {self.provider} needs --max-instances")
            max_instances = len(self.instances) + len(self.standby)
        return ProvisionSettings(
            mode=self.provision,
            slo_e2e_s=self.slo_e2e,
            min_instances=self.min_instances,
            max_instances=max_instances,
            cooldown_s=self.cooldown_s,
            scale_down=self.scale_down,
            scale_down_hold_s=self.scale_down_hold_s,
            scale_down_fraction=self.scale_down_fraction,
            scale_up_fraction=self.scale_up_fraction,
        )

    def __post_init__(self) -> None:
        if self.predictors and len(self.predictors) != len(self.instances):
            raise ValueError("give one --predictor per --instance, in the same order")
        if self.length_quantile is not None and not 0.0 < self.length_quantile < 1.0:
            raise ValueError("length_quantile must be in (0, 1)")
        if self.length_quantile is not None and not self.length_model:
            raise ValueError("--length-quantile needs --length-model FILE (or 'default')")
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be >= 1")
        if self.health_interval <= 0 or self.refresh_ms <= 0 or self.deadline_ms <= 0:
            raise ValueError("health_interval, refresh_ms and deadline_ms must be > 0")
        for name in ("first_byte_timeout_s", "idle_timeout_s", "timeout_cooldown_s", "drain_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        self.instances = [u.rstrip("/") for u in self.instances]
        self.standby = [u.rstrip("/") for u in self.standby]
        if self.provision is not None:
            from block.provision.providers import PROVIDERS

            if self.provider not in PROVIDERS:
                raise ValueError(f"unknown provider {self.provider!r} (known: {', '.join(PROVIDERS)})")
            if self.provider == "command" and not self.scale_up_cmd:
                raise ValueError("--provider command needs --scale-up-cmd")
            if self.provision_interval_s <= 0 or self.provision_start_timeout_s <= 0:
                raise ValueError("provision_interval_s and the start timeout must be > 0")
            self.provision_settings()  # validates the controller's settings now, not at first use
        self.predictors = [u.rstrip("/") for u in self.predictors]
        self.check_security()

    def upstream_allow_list(self) -> Any:
        """The parsed --allowed-upstreams (a block.router.upstreams.AllowList), None when empty."""
        from block.router.upstreams import AllowList

        return AllowList.parse(self.allowed_upstreams)

    def check_security(self) -> None:
        """Credentials non-empty; every configured instance, predictor and standby URL valid and allowed."""
        from block.router.upstreams import check_upstream

        if self.api_key == "" or self.admin_token == "":
            raise ValueError("--api-key and --admin-token must not be empty")
        allowed = self.upstream_allow_list()
        self.instances = [check_upstream(u, allowed) for u in self.instances]
        self.standby = [check_upstream(u, allowed) for u in self.standby]
        self.predictors = [check_upstream(u, allowed, "predictor") for u in self.predictors]
        from block.http_limits import HttpLimits

        HttpLimits(self.max_header_bytes, self.header_timeout_s, self.body_timeout_s)  # validates
        if self.predictor_notify_timeout_s <= 0 or self.predictor_notify_max_in_flight < 1:
            raise ValueError("predictor_notify_timeout_s must be > 0 and predictor_notify_max_in_flight >= 1")

    @classmethod
    def build(cls, path: str | Path | None = None, **overrides: Any) -> RouterConfig:
        """YAML file values (keys as the fields, or with dashes as the flags), then non-None overrides."""
        values: dict[str, Any] = {}
        if path is not None:
            values.update(load_yaml(path))
        values.update({k: v for k, v in overrides.items() if v is not None and v != []})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown router setting(s): {', '.join(unknown)}")
        return cls(**values)


_ALIASES = {"instance": "instances", "predictor": "predictors"}
_LISTS = ("instances", "predictors", "standby", "allowed_upstreams")


def load_yaml(path: str | Path) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of router settings")
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        name = _ALIASES.get(name, name)
        if name in _LISTS and isinstance(value, str):
            value = [value]
        out[name] = value
    return out
