"""How a simulated cluster is built: instances, engine knobs, step noise, router refresh."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from block.admission.settings import DEFAULT_MAX_HELD, DEFAULT_TTFT_S, AdmissionSettings
from block.fleet.engine_spec import EngineSpec
from block.profiles import Profile, StepNoise, load_profile
from block.profiles.model_error import Factor, parse_model_error
from block.replica import ReplicaConfig

# The live router polls every instance's state this often; forecasts see snapshots this old at most.
ROUTER_REFRESH_S = 0.02


@dataclass(frozen=True)
class SimConfig:
    instances: int = 12
    profile: str = "llama-2-7b-a30"
    policy: str = "round-robin"
    policy_options: dict[str, Any] = field(default_factory=dict)
    # Engine knobs; None takes the profile's engine_defaults.
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    num_gpu_blocks: int | None = None
    max_model_len: int | None = None
    # vLLM V1's automatic prefix caching (on by default, as there); the paper's experiments turn it off
    prefix_caching: bool = True
    # The ceiling of prefix caching instead (block/replica/ceiling_cache.py): every prompt block computed
    # anywhere counts as cached everywhere; an upper bound on what cache affinity can add, no engine's model
    prefix_ceiling: bool = False
    # Step-time noise, as the engine emulator samples it (0 and 0: exact profile means).
    noise: float = 0.03
    stall_probability: float = 0.001
    stall_factor: float = 3.0
    seed: int = 0
    refresh_s: float = ROUTER_REFRESH_S
    # Per-request inter-token gaps in the results (memory: one float per token). Off for huge runs.
    record_itl: bool = True
    # Skip runs of pure-decode steps in one go (exactly equivalent; off only to test that it is).
    fast_forward: bool = True
    # "auto": lazy for policies that read no instance state (see simulator.py), else eager; "eager": always.
    schedule: str = "auto"
    # "lazy": snapshots taken only when a decision can see them; "poll": every replica at every tick,
    # as the router literally does (slow; the reference the lazy rule is tested against).
    refresh: str = "lazy"
    # Forecasts add the arrivals expected at each instance's recent routing rate (InstanceTracker).
    anticipate_arrivals: bool = False
    # Model error (block/profiles/model_error.py): `KIND:E` makes the replicas run at a true speed the
    # router's forecasts do not know; "" runs them at the profile's. Seeded by `seed`.
    model_error: str = ""
    # Online calibration (block/fleet/calibration.py): the trackers correct their profile from the token
    # times the replicas stream back, as the router does.
    calibration: bool = False
    # A heterogeneous fleet (block/fleet/fleet_file.py): one engine per instance, its profile and settings
    # over the fleet-wide ones above; () runs `instances` copies of `profile`.
    fleet: tuple[EngineSpec, ...] = ()
    # Independent routers in front of the fleet, the requests split round robin (block/sim/routers.py).
    routers: int = 1
    # SLO-aware admission (block/admission): "off" routes every request at once, as always; "queue"
    # holds those no instance can serve within their target, "reject" refuses them (429).
    admission: str = "off"
    max_held: int = DEFAULT_MAX_HELD
    admission_ttft_s: float | None = DEFAULT_TTFT_S
    admission_e2e_s: float | None = None

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise ValueError("instances must be >= 1")
        if self.routers < 1:
            raise ValueError("routers must be >= 1")
        if not self.refresh_s > 0:
            raise ValueError("refresh_s must be > 0")
        if self.schedule not in ("auto", "eager"):
            raise ValueError("schedule must be 'auto' or 'eager'")
        if self.refresh not in ("lazy", "poll"):
            raise ValueError("refresh must be 'lazy' or 'poll'")
        if self.prefix_ceiling and not self.prefix_caching:
            raise ValueError("the prefix ceiling is a bound on prefix caching: it needs caching on")
        parse_model_error(self.model_error)  # a bad KIND:E fails here, with its one-line reason
        if self.fleet and len(self.fleet) != self.instances:
            raise ValueError(f"the fleet lists {len(self.fleet)} instances, instances is {self.instances}")
        self.admission_settings()  # a bad admission setting fails here
        if self.admission != "off" and self.routers > 1:
            raise ValueError("admission is simulated behind one router: give --routers 1")

    def admission_settings(self) -> AdmissionSettings:
        return AdmissionSettings(self.admission, self.max_held, self.admission_ttft_s, self.admission_e2e_s)

    def load_profile(self) -> Profile:
        return load_profile(self.profile)

    def replica_config(self, profile: Profile) -> ReplicaConfig:
        knobs = dict(profile.engine_defaults)
        for name in ("max_num_seqs", "max_num_batched_tokens", "num_gpu_blocks", "max_model_len"):
            value = getattr(self, name)
            if value is not None:
                knobs[name] = value
        knobs["enable_prefix_caching"] = self.prefix_caching
        return ReplicaConfig.from_dict(knobs)

    def engine_for(self, instance: int) -> EngineSpec:
        """Instance `instance`'s profile and engine settings: the fleet's entry over the fleet-wide knobs."""
        knobs = ("max_num_seqs", "max_num_batched_tokens", "num_gpu_blocks", "max_model_len")
        base = EngineSpec(
            self.profile, **{k: getattr(self, k) for k in knobs}, prefix_caching=self.prefix_caching
        )
        return self.fleet[instance].over(base) if self.fleet else base

    def instance_models(self) -> tuple[list[Profile], list[ReplicaConfig]]:
        """Every instance's profile and replica config (profiles loaded once per name)."""
        loaded: dict[str, Profile] = {}
        profiles, configs = [], []
        for r in range(self.instances):
            engine = self.engine_for(r)
            name = engine.profile or self.profile
            if name not in loaded:
                loaded[name] = load_profile(name)
            profiles.append(loaded[name])
            configs.append(engine.replica_config(loaded[name]))
        return profiles, configs

    def noise_for(self, instance: int) -> StepNoise:
        # One independent stream per instance: an instance's step times never depend on routing order.
        return StepNoise(
            relative_std=self.noise,
            stall_probability=self.stall_probability,
            stall_factor=self.stall_factor,
            seed=self.seed * 1_000_003 + instance,
        )

    def model_error_for(self, instance: int) -> Factor | None:
        """Instance `instance`'s true step-time factor over time, or None without model error."""
        error = parse_model_error(self.model_error, self.seed)
        return None if error is None or error.error == 0 else error.factor(instance)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
