"""The live router's provisioning settings (`block router --provision ...`): one dataclass, self-checked.

In the router's YAML file and on its command line the settings keep their flat names (`provision`,
`slo-e2e`, `standby`, `provision-interval-s`, ...); ROUTER_KEYS maps each to its field here. A YAML file
may also nest them: `provision: {mode: preemptive, slo-e2e: 5, ...}` (field names or flat names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from block.provision.controller import MODES, ProvisionSettings
from block.provision.provider import Provider

# The router's flat settings named differently from their field here.
_RENAMED = {
    "provision": "mode",
    "provision_interval_s": "interval_s",
    "provision_start_timeout_s": "start_timeout_s",
}


@dataclass(slots=True)
class ProvisionConfig:
    mode: str | None = None  # preemptive | reactive; None: provisioning off
    slo_e2e: float | None = None  # seconds
    min_instances: int = 1
    max_instances: int | None = None  # default for the static provider: instances + standby
    provider: str = "static"  # static | local-emulator | command | kubernetes
    standby: list[str] = field(default_factory=list)  # static provider's spare instances
    scale_up_cmd: str | None = None
    scale_down_cmd: str | None = None
    hook_timeout_s: float = 300.0
    emulator_profile: str = "tiny-fast"  # local-emulator: `block engine --profile`
    k8s_deployment: str | None = None  # kubernetes: NAMESPACE/NAME of the engines' Deployment
    cooldown_s: float = 30.0
    scale_down: bool = True
    scale_down_hold_s: float = 120.0
    scale_down_fraction: float = 0.5
    scale_up_fraction: float = 1.0  # preemptive: forecasts over this share of the SLO add capacity
    interval_s: float = 0.5  # controller tick
    start_timeout_s: float = 600.0  # an added instance not healthy by then is released

    def __post_init__(self) -> None:
        if isinstance(self.standby, str):  # one URL written without a list
            self.standby = [self.standby]
        self.standby = [u.rstrip("/") for u in self.standby]
        if self.mode is None:
            return
        if self.mode not in MODES:
            raise ValueError(f"provision mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        from block.provision.providers import PROVIDERS

        if self.provider not in PROVIDERS:
            raise ValueError(f"unknown provider {self.provider!r} (known: {', '.join(PROVIDERS)})")
        if self.provider == "command" and not self.scale_up_cmd:
            raise ValueError("--provider command needs --scale-up-cmd")
        if self.provider == "kubernetes":
            from block.provision.kubernetes import parse_target

            parse_target(self.k8s_deployment)  # ValueError naming --k8s-deployment
        if self.interval_s <= 0 or self.start_timeout_s <= 0:
            raise ValueError("provision_interval_s and the start timeout must be > 0")
        if self.slo_e2e is None:
            raise ValueError("--provision needs --slo-e2e SECONDS")
        if self.max_instances is None and self.provider != "static":
            raise ValueError(f"--provider {self.provider} needs --max-instances")
        if self.max_instances is not None:  # else the router checks, knowing its instances
            self.settings(0)  # the controller's own checks (bounds, fractions), now rather than at first use

    @property
    def enabled(self) -> bool:
        return self.mode is not None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ProvisionConfig:
        """From settings named as the fields or as the router's flat settings, with dashes or underscores."""
        named = field_names(values)
        unknown = sorted(set(named) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown provisioning setting(s): {', '.join(unknown)}")
        return cls(**named)

    def settings(self, instances: int) -> ProvisionSettings | None:
        """The controller's settings, or None when off. `instances`: the router's configured instances
        (with the standby pool, the static provider's default for max_instances)."""
        if self.mode is None or self.slo_e2e is None:
            return None
        max_instances = self.max_instances
        if max_instances is None:
            max_instances = instances + len(self.standby)
        return ProvisionSettings(
            mode=self.mode,
            slo_e2e_s=self.slo_e2e,
            min_instances=self.min_instances,
            max_instances=max_instances,
            cooldown_s=self.cooldown_s,
            scale_down=self.scale_down,
            scale_down_hold_s=self.scale_down_hold_s,
            scale_down_fraction=self.scale_down_fraction,
            scale_up_fraction=self.scale_up_fraction,
        )

    def make_provider(self) -> Provider:
        from block.provision.providers import make_provider

        return make_provider(
            self.provider,
            standby=self.standby,
            scale_up_cmd=self.scale_up_cmd,
            scale_down_cmd=self.scale_down_cmd,
            hook_timeout_s=self.hook_timeout_s,
            emulator_profile=self.emulator_profile,
            k8s_deployment=self.k8s_deployment,
        )


# Every flat router setting (flag, flat YAML key) that belongs here -> its field.
ROUTER_KEYS = {f.name: f.name for f in fields(ProvisionConfig) if f.name not in _RENAMED.values()} | _RENAMED


def field_names(values: Mapping[str, Any]) -> dict[str, Any]:
    """The same settings keyed by field name (keys may use dashes, or the router's flat names)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        out[ROUTER_KEYS.get(name, name)] = value
    return out
