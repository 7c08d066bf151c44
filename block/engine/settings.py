"""What one emulated engine is: the profile it runs, its batching knobs, noise and seed."""

from __future__ import annotations

from dataclasses import dataclass

from block.profiles import Profile, StepNoise
from block.replica import ReplicaConfig

# Rare stalls only when noise is on: `--noise 0` must make every step exactly the profile mean.
STALL_PROBABILITY = 0.001
STALL_FACTOR = 3.0


@dataclass(frozen=True, slots=True)
class EngineSettings:
    profile: Profile
    config: ReplicaConfig
    noise: float = 0.03  # relative standard deviation of a step's time
    seed: int | None = None
    model: str | None = None  # the served model name; default: the profile's model

    @property
    def model_name(self) -> str:
        return self.model or self.profile.model or self.profile.name

    def step_noise(self) -> StepNoise:
        if self.noise <= 0:
            return StepNoise.exact()
        # Noise and output lengths use different seeds so changing one does not shift the other.
        seed = None if self.seed is None else self.seed * 1_000_003 + 17
        return StepNoise(self.noise, STALL_PROBABILITY, STALL_FACTOR, seed)


def replica_config(profile: Profile, **overrides: int | None) -> ReplicaConfig:
    """The profile's engine defaults, then ReplicaConfig's defaults, with the given (non-None) overrides."""
    fields = ReplicaConfig.__dataclass_fields__
    values = {k: v for k, v in profile.engine_defaults.items() if k in fields}
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown engine settings: {', '.join(sorted(unknown))}")
    return ReplicaConfig(**values)
