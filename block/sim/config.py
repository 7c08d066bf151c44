"""How a simulated cluster is built: instances, engine knobs, step noise, router refresh."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise ValueError("instances must be >= 1")
        if not self.refresh_s > 0:
            raise ValueError("refresh_s must be > 0")
        if self.schedule not in ("auto", "eager"):
            raise ValueError("schedule must be 'auto' or 'eager'")
        if self.refresh not in ("lazy", "poll"):
            raise ValueError("refresh must be 'lazy' or 'poll'")
        parse_model_error(self.model_error)  # a bad KIND:E fails here, with its one-line reason

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
