"""What the benchmark records about one request. The simulator fills the same records in virtual time."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class RequestRecord:
    """One request's measurements. Times are seconds; `*_s` offsets count from the start of the run."""

    index: int  # position in the workload
    prompt_tokens: int
    expected_output_tokens: int  # max_tokens asked for (the dataset's output length with ignore_eos)
    scheduled_s: float  # when the arrival process said to send it
    sent_s: float | None = None  # when it was actually sent
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)  # every gap between consecutive tokens
    output_tokens: int = 0  # from the usage chunk when the server sends one, else the token events
    status: int | None = None  # HTTP status
    error: str | None = None
    instance: str | None = None  # the x-block-instance response header, when a router sets it
    chunks: int = 0  # SSE data events received
    parse_s: float = 0.0  # client time spent decoding SSE events (overhead)
    priority: int = 0  # the request's class (x-priority; higher is more important)

    @property
    def ok(self) -> bool:
        return self.error is None and self.e2e_s is not None

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first, vLLM's definition."""
        if not self.ok or self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)

    @property
    def send_lag_s(self) -> float | None:
        return None if self.sent_s is None else self.sent_s - self.scheduled_s
