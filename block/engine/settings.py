"""What one emulated engine is: the profile it runs, its batching knobs, noise, model error and seed."""

from __future__ import annotations

import random
from dataclasses import dataclass

from block.profiles import Profile, StepNoise
from block.profiles.model_error import Factor, ModelError
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
    # Model error: the engine runs at a true speed its (nominal, reported) profile does not say.
    model_error: ModelError | None = None
    # vLLM's --enable-prompt-tokens-details: usage reports prompt_tokens_details.cached_tokens
    prompt_tokens_details: bool = False

    @property
    def model_name(self) -> str:
        return self.model or self.profile.model or self.profile.name

    def step_noise(self) -> StepNoise:
        if self.noise <= 0:
            return StepNoise.exact()
        # Noise and output lengths use different seeds so changing one does not shift the other.
        seed = None if self.seed is None else self.seed * 1_000_003 + 17
        return StepNoise(self.noise, STALL_PROBABILITY, STALL_FACTOR, seed)

    def model_error_factor(self) -> Factor | None:
        """This engine's true step-time factor over wall-clock time; None without model error.

        The seed is the engine's instance index in a fleet: engines with different seeds draw different
        speeds (static, drift), without one a random index. Wall-clock time (not the engine's own clock)
        makes every engine of a host share the `correlated` slowdowns, as CPU contention would."""
        error = self.model_error
        if error is None or error.error == 0:
            return None
        return error.factor(self.seed if self.seed is not None else random.randrange(2**31))


def replica_config(profile: Profile, **overrides: int | bool | None) -> ReplicaConfig:
    """The profile's engine defaults, then ReplicaConfig's defaults, with the given (non-None) overrides."""
    fields = ReplicaConfig.__dataclass_fields__
    values = {k: v for k, v in profile.engine_defaults.items() if k in fields}
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown engine settings: {', '.join(sorted(unknown))}")
    return ReplicaConfig(**values)
