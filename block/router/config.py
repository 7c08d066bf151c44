"""Router settings: one dataclass, loadable from YAML, with command-line flags taking precedence."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from block.admission.settings import DEFAULT_MAX_HELD, DEFAULT_TTFT_S, AdmissionSettings
from block.fleet.fleet_file import FleetSpec
from block.provision.config import ROUTER_KEYS, ProvisionConfig, field_names


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
    # stock vLLM: /metrics is read this often; at the refreshes between, the state is recounted from what
    # the router sent and saw stream back (reading it every 20 ms slows a small engine: poll-cost)
    metrics_read_ms: float = 250.0
    # state reads a second over the whole fleet, at most: on a large fleet each instance is read every
    # N / state_reads_per_s seconds instead of every refresh (100 Block engines polled every 20 ms took
    # half the router's CPU); the tracker fills in between from its own routes and finishes
    state_reads_per_s: float = 1000.0
    # stock vLLM with --kv-events-config: instance URL -> "tcp://host:port[,tcp://host:replay-port]"
    kv_events: dict[str, str] = field(default_factory=dict)
    admin_token: str | None = None
    api_key: str | None = None
    api_keys: dict[str, int] = field(default_factory=dict)  # more client keys -> their default priority
    max_body_bytes: int = 4 * 1024 * 1024
    max_retries: int = 2  # extra attempts on other instances before the first byte went out
    connect_timeout: float = 5.0  # generous: thousands of new connections can arrive in one burst
    profile: str | None = None  # step-time profile for stock vLLM instances (Block engines report theirs)
    anticipate_arrivals: bool = False  # forecasts add the arrivals expected at the fleet's rate per instance
    # Online calibration (block.fleet.calibration): each instance's profile corrected per phase from the
    # tokens streaming back. Off by default: see the README (it makes forecasts right, not routing better).
    calibration: bool = False
    log_level: str = "info"
    decision_log: str | None = None  # JSON lines: what each decision saw against what happened
    seed: int | None = None
    # Auto-provisioning (block.provision.config): off unless its mode is preemptive or reactive.
    provision: ProvisionConfig = field(default_factory=ProvisionConfig)
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
    # What each instance is (block/fleet/fleet_file.py): its profile and engine settings, used where the
    # instance does not say (stock vLLM); from the YAML's instance entries, groups and templates.
    fleet: FleetSpec = field(default_factory=FleetSpec)
    # Kubernetes pod discovery (block/router/discovery.py): k8s:NAMESPACE/LABEL_SELECTOR of EndpointSlices.
    discover: str | None = None
    # SLO-aware admission (block/router/admission.py): off (default) routes every request at once.
    admission: str = "off"  # off | queue | reject
    max_held: int = DEFAULT_MAX_HELD  # requests held at most (queue); beyond, the lowest-ranked gets 429
    admission_ttft_ms: float | None = DEFAULT_TTFT_S * 1000  # target of requests without x-slo-ttft-ms
    admission_e2e_ms: float | None = None  # target of requests without x-slo-e2e-ms (None: none)

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
        if self.metrics_read_ms <= 0:
            raise ValueError("metrics_read_ms must be > 0")
        if not self.state_reads_per_s > 0:
            raise ValueError("state_reads_per_s must be > 0")
        for name in ("first_byte_timeout_s", "idle_timeout_s", "timeout_cooldown_s", "drain_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        self.instances = [u.rstrip("/") for u in self.instances]
        self.provision.settings(
            len(self.instances)
        )  # validates the controller's settings now, not at first use
        self.predictors = [u.rstrip("/") for u in self.predictors]
        self.admission_settings()  # validates
        self.check_security()
        if self.discover is not None:
            from block.router.discovery import parse_spec

            parse_spec(self.discover)  # a malformed spec fails at start, not in the background
            if self.provision.enabled:  # each would undo the other's additions and removals
                raise ValueError("--discover and --provision both decide the fleet: give one of them")

    def kv_event_endpoints(self, url: str) -> tuple[str, str | None] | None:
        """(events endpoint, replay endpoint or None) configured for the instance at `url`."""
        spec = self.kv_events.get(url.rstrip("/"))
        if not spec:
            return None
        endpoint, _, replay = spec.partition(",")
        return endpoint, replay or None

    def admission_settings(self) -> AdmissionSettings:
        def seconds(ms: float | None) -> float | None:
            return None if ms is None else ms / 1000.0

        return AdmissionSettings(
            self.admission, self.max_held, seconds(self.admission_ttft_ms), seconds(self.admission_e2e_ms)
        )

    def upstream_allow_list(self) -> Any:
        """The parsed --allowed-upstreams (a block.router.upstreams.AllowList), None when empty."""
        from block.router.upstreams import AllowList

        return AllowList.parse(self.allowed_upstreams)

    def check_security(self) -> None:
        """Credentials non-empty; every configured instance, predictor and standby URL valid and allowed."""
        from block.router.upstreams import check_upstream

        if self.api_key == "" or self.admin_token == "" or "" in self.api_keys:
            raise ValueError("--api-key and --admin-token must not be empty")
        allowed = self.upstream_allow_list()
        self.instances = [check_upstream(u, allowed) for u in self.instances]
        from block.router.upstreams import check_event_endpoint

        if not isinstance(self.kv_events, dict):
            raise ValueError(
                "kv_events: expected a mapping of instance URL to tcp://host:port[,tcp://host:port]"
            )
        self.kv_events = {
            str(url).rstrip("/"): ",".join(
                check_event_endpoint(e.strip(), allowed) for e in str(v).split(",")
            )
            for url, v in self.kv_events.items()
        }
        self.provision.standby = [check_upstream(u, allowed) for u in self.provision.standby]
        self.predictors = [check_upstream(u, allowed, "predictor") for u in self.predictors]
        from block.http_limits import HttpLimits

        HttpLimits(self.max_header_bytes, self.header_timeout_s, self.body_timeout_s)  # validates
        if self.predictor_notify_timeout_s <= 0 or self.predictor_notify_max_in_flight < 1:
            raise ValueError("predictor_notify_timeout_s must be > 0 and predictor_notify_max_in_flight >= 1")

    @classmethod
    def build(
        cls, path: str | Path | None = None, fleet_path: str | Path | None = None, **overrides: Any
    ) -> RouterConfig:
        """YAML file values (keys as the fields, or with dashes as the flags), then non-None overrides.
        Provisioning settings come flat (`provision: reactive`, `slo-e2e: 5`, as the flags) or as a nested
        `provision:` mapping; flat ones win, as flags win over the file. `fleet_path` (`--fleet`) is the
        same file format as `path` (`--config`): one or the other."""
        if path is not None and fleet_path is not None:
            raise ValueError("give --config or --fleet, not both: they read the same file format")
        path = path if path is not None else fleet_path
        values: dict[str, Any] = {}
        provision: dict[str, Any] = {}
        if path is not None:
            values.update(load_yaml(path))
            if isinstance(values.get("provision"), dict):
                provision.update(field_names(values.pop("provision")))
        values.update({k: v for k, v in overrides.items() if v is not None and v != []})
        provision.update({ROUTER_KEYS[k]: values.pop(k) for k in list(values) if k in ROUTER_KEYS})
        known = {f.name for f in fields(cls)} - {"provision"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown router setting(s): {', '.join(unknown)}")
        return cls(provision=ProvisionConfig.from_mapping(provision), **values)


_ALIASES = {"instance": "instances", "predictor": "predictors"}
_LISTS = ("instances", "predictors", "standby", "allowed_upstreams")  # a lone string is a list of one


def parse_api_keys(values: list[str]) -> tuple[str | None, dict[str, int]]:
    """--api-key values: KEY, or KEY:PRIORITY (an integer after the last colon) for a key whose
    requests get that priority by default. Returns (the plain key, or None; {key: priority}); more
    than one plain key: the others get priority 0."""
    plain: str | None = None
    keyed: dict[str, int] = {}
    for value in values:
        key, sep, level = value.rpartition(":")
        try:
            priority = int(level) if sep and key else None
        except ValueError:
            priority = None
        if priority is not None:
            keyed[key] = priority
        elif plain is None:
            plain = value
        else:
            keyed[value] = 0
    return plain, keyed


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The router settings of a YAML (fleet file) and, under `fleet`, what it says of each instance;
    a fleet error names the file, line and field (block/fleet/fleet_file.py)."""
    from block.fleet.fleet_file import split_router_yaml

    data, fleet = split_router_yaml(path)
    out: dict[str, Any] = {"fleet": fleet}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        name = _ALIASES.get(name, name)
        if name in _LISTS and isinstance(value, str):
            value = [value]
        out[name] = value
    return out
