"""The router's use of a `block predictor` sidecar: forecasts, and best-effort /routed and /finished
notices (a sidecar that is down must never affect serving; the decision's deadline bounds predict)."""

from __future__ import annotations

import contextlib

import aiohttp

from block.policies import Forecast
from block.predictor.client import PredictorClient, PredictorError

_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, PredictorError, ValueError, KeyError)


class SidecarClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.client = PredictorClient(base_url, session)

    async def predict(self, prompt_tokens: int, expected_output_tokens: int) -> Forecast:
        return await self.client.predict(prompt_tokens, expected_output_tokens)

    async def routed(self, request_id: str, prompt_tokens: int, expected_output_tokens: int) -> None:
        with contextlib.suppress(_ERRORS):
            await self.client.routed(request_id, prompt_tokens, expected_output_tokens)

    async def finished(self, request_id: str) -> None:
        with contextlib.suppress(_ERRORS):
            await self.client.finished(request_id)
