"""How admission runs: off (every request goes somewhere at once, the default), queue or reject."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MODES = ("off", "queue", "reject")
DEFAULT_MAX_HELD = 1000
DEFAULT_TTFT_S = 3.0  # the paper's SLO, the default target when a request names none


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """`queue`: a request no instance can serve within its target is held (at most `max_held` of them)
    and placed as soon as a forecast says it can be; `reject`: it gets 429 at once. `ttft_s` / `e2e_s`
    are the targets of requests that name none (None: no such target)."""

    mode: str = "off"
    max_held: int = DEFAULT_MAX_HELD
    ttft_s: float | None = DEFAULT_TTFT_S
    e2e_s: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"admission must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.max_held < 0:
            raise ValueError("max_held must be >= 0")
        for name in ("ttft_s", "e2e_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"the default {name} target must be > 0")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def holds(self) -> bool:
        return self.mode == "queue"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
