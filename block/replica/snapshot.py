"""A replica's state as plain data: what an engine's `/state` returns and a forecast starts from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from block.replica.config import ReplicaConfig


@dataclass(slots=True)
class RequestState:
    id: str
    arrival_time: float
    prompt_tokens: int
    computed_tokens: int = 0
    output_tokens: int = 0  # generated so far
    expected_output_tokens: int | None = None  # total output the router planned with, if known

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "arrival_time": self.arrival_time,
            "prompt_tokens": self.prompt_tokens,
            "computed_tokens": self.computed_tokens,
            "output_tokens": self.output_tokens,
            "expected_output_tokens": self.expected_output_tokens,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RequestState:
        expected = d.get("expected_output_tokens")
        return cls(
            id=str(d["id"]),
            arrival_time=float(d.get("arrival_time", 0.0)),
            prompt_tokens=int(d["prompt_tokens"]),
            computed_tokens=int(d.get("computed_tokens", 0)),
            output_tokens=int(d.get("output_tokens", 0)),
            expected_output_tokens=None if expected is None else int(expected),
        )


@dataclass(slots=True)
class Snapshot:
    config: ReplicaConfig
    now: float
    running: list[RequestState] = field(default_factory=list)  # in scheduling order, oldest first
    waiting: list[RequestState] = field(default_factory=list)  # FCFS order, next to admit first
    free_blocks: int | None = None
    num_preemptions: int = 0
    profile: str = ""

    @property
    def num_requests(self) -> int:
        return len(self.running) + len(self.waiting)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "profile": self.profile,
            "now": self.now,
            "running": [r.to_dict() for r in self.running],
            "waiting": [r.to_dict() for r in self.waiting],
            "free_blocks": self.free_blocks,
            "num_preemptions": self.num_preemptions,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Snapshot:
        try:
            free = d.get("free_blocks")
            return cls(
                config=ReplicaConfig.from_dict(d["config"]),
                now=float(d["now"]),
                running=[RequestState.from_dict(r) for r in d.get("running", [])],
                waiting=[RequestState.from_dict(r) for r in d.get("waiting", [])],
                free_blocks=None if free is None else int(free),
                num_preemptions=int(d.get("num_preemptions", 0)),
                profile=str(d.get("profile", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed snapshot: {e}") from e
