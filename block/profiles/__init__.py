"""Step-time profiles: how long one engine step takes for a given model, GPU and batch."""

from block.profiles.noise import StepNoise
from block.profiles.profile import BatchShape, Profile, available_profiles, load_profile

__all__ = ["BatchShape", "Profile", "StepNoise", "available_profiles", "load_profile"]
