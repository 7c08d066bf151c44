"""What one instance runs: a step-time profile and the engine settings that shape its batching.

A fleet file (block/fleet/fleet_file.py) gives one per instance, group or template; the simulator, the
router's trackers, the forecasts and the emulated-engine launcher all build their replica model from it,
so a mixed fleet (A100s beside A30s, or the same GPU with different `max_num_seqs`) is modelled instance
by instance. Settings left out take the profile's `engine_defaults`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from block.profiles.profile import Profile, load_profile
from block.replica.config import ReplicaConfig

# Integer engine settings a fleet file may give (the ReplicaConfig knobs), each >= 1.
ENGINE_KNOBS = ("max_num_seqs", "max_num_batched_tokens", "num_gpu_blocks", "block_size", "max_model_len")


@dataclass(frozen=True)
class EngineSpec:
    profile: str | None = None  # a shipped profile name or a .json path; None: unknown step times
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    num_gpu_blocks: int | None = None
    block_size: int | None = None
    max_model_len: int | None = None
    # vLLM V1 automatic prefix caching (ReplicaConfig.enable_prefix_caching); None: the default (on)
    prefix_caching: bool | None = None

    def settings(self) -> dict[str, Any]:
        """The engine settings given (not None), without the profile."""
        return {k: v for k, v in asdict(self).items() if k != "profile" and v is not None}

    def over(self, base: EngineSpec) -> EngineSpec:
        """This spec where it says something, `base` elsewhere."""
        return replace(base, **{k: v for k, v in asdict(self).items() if v is not None})

    def load_profile(self) -> Profile | None:
        return None if self.profile is None else load_profile(self.profile)

    def replica_config(self, profile: Profile | None = None) -> ReplicaConfig:
        """The profile's engine defaults, then these settings."""
        profile = profile if profile is not None else self.load_profile()
        knobs: dict[str, Any] = dict(profile.engine_defaults) if profile is not None else {}
        knobs.update({k: v for k, v in self.settings().items() if k in ENGINE_KNOBS})
        config = ReplicaConfig.from_dict(knobs)
        if self.prefix_caching is not None:
            config = replace(config, enable_prefix_caching=self.prefix_caching)
        return config

    def label(self) -> str:
        """How tables name instances of this kind: the profile plus the settings that differ."""
        extra = " ".join(f"{k}={v}" for k, v in self.settings().items())
        return " ".join(p for p in (self.profile or "no-profile", extra) if p)

    def engine_args(self, with_profile: bool = True) -> list[str]:
        """`block engine` flags for an emulated engine of this kind."""
        args = ["--profile", self.profile] if self.profile and with_profile else []
        flags = {"max_num_seqs": "--max-num-seqs", "max_num_batched_tokens": "--max-num-batched-tokens"}
        flags |= {"num_gpu_blocks": "--num-gpu-blocks", "block_size": "--block-size"}
        flags |= {"max_model_len": "--max-model-len"}
        for key, flag in flags.items():
            value = getattr(self, key)
            if value is not None:
                args += [flag, str(value)]
        if self.prefix_caching is not None:
            args.append("--prefix-caching" if self.prefix_caching else "--no-prefix-caching")
        return args
