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
    log_level: str = "info"
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.predictors and len(self.predictors) != len(self.instances):
            raise ValueError("give one --predictor per --instance, in the same order")
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be >= 1")
        if self.health_interval <= 0 or self.refresh_ms <= 0 or self.deadline_ms <= 0:
            raise ValueError("health_interval, refresh_ms and deadline_ms must be > 0")
        self.instances = [u.rstrip("/") for u in self.instances]
        self.predictors = [u.rstrip("/") for u in self.predictors]

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


def load_yaml(path: str | Path) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of router settings")
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        name = _ALIASES.get(name, name)
        if name in ("instances", "predictors") and isinstance(value, str):
            value = [value]
        out[name] = value
    return out
