"""A small async client of the predictor sidecar, for the router."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from block.request import Forecast


@dataclass(frozen=True, slots=True)
class SidecarForecast(Forecast):
    running: int
    waiting: int
    free_blocks: int
    snapshot_age_ms: float
    predict_ms: float
    anticipated_rate: float = 0.0  # req/s of synthetic arrivals added (a sidecar run with anticipation)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SidecarForecast:
        return cls(
            float(d["ttft_s"]),
            float(d["e2e_s"]),
            float(d["queue_delay_s"]),
            float(d["added_delay_s"]),
            int(d["running"]),
            int(d["waiting"]),
            int(d["free_blocks"]),
            float(d["snapshot_age_ms"]),
            float(d["predict_ms"]),
            float(d.get("anticipated_rate", 0.0)),
        )


class PredictorError(RuntimeError):
    pass


class PredictorClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession, token: str | None = None) -> None:
        """`token`: the sidecar's (`block predictor --token`), sent as a bearer token on every POST."""
        self.base_url = base_url.rstrip("/")
        self.session = session
        self._headers = {"Authorization": f"Bearer {token}"} if token else None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(self.base_url + path, json=body, headers=self._headers) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200:
                message = data.get("error", {}).get("message") if isinstance(data, dict) else None
                raise PredictorError(f"{path}: HTTP {resp.status}: {message or data}")
            return data

    async def predict(
        self, prompt_tokens: int, expected_output_tokens: int, max_tokens: int | None = None
    ) -> SidecarForecast:
        body: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "expected_output_tokens": expected_output_tokens,
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return SidecarForecast.from_dict(await self._post("/predict", body))

    async def predict_batch(self, requests: list[tuple[int, int]]) -> list[SidecarForecast]:
        body = {"requests": [{"prompt_tokens": p, "expected_output_tokens": o} for p, o in requests]}
        data = await self._post("/predict_batch", body)
        return [SidecarForecast.from_dict(d) for d in data["predictions"]]

    async def routed(
        self,
        request_id: str,
        prompt_tokens: int,
        expected_output_tokens: int,
        calibration: dict[str, float] | None = None,
    ) -> None:
        """`calibration`: the router's factors for this instance ({"decode": f, "prefill": f})."""
        body: dict[str, object] = {
            "request_id": request_id,
            "prompt_tokens": prompt_tokens,
            "expected_output_tokens": expected_output_tokens,
        }
        if calibration is not None:
            body["calibration"] = calibration
        await self._post("/routed", body)

    async def finished(self, request_id: str) -> None:
        await self._post("/finished", {"request_id": request_id})

    async def health(self) -> bool:
        try:
            async with self.session.get(self.base_url + "/health") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False
