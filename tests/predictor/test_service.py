"""The sidecar over HTTP, against a real Block engine (noise 0)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from block.fleet.tracker import InstanceTracker
from block.policies.base import RoutingRequest
from block.predictor.client import PredictorClient, PredictorError
from block.prefix import chain_hashes
from block.profiles.profile import load_profile
from tests.predictor.servers import engine, sidecar

FIELDS = {"ttft_s", "e2e_s", "queue_delay_s", "added_delay_s", "running", "waiting", "free_blocks",
          "snapshot_age_ms", "predict_ms", "anticipated_rate"}  # fmt: skip


async def test_sidecar_endpoints() -> None:
    with engine() as eng, sidecar(eng) as url:
        async with aiohttp.ClientSession() as s:
            async with s.post(
                url + "/predict", json={"prompt_tokens": 100, "expected_output_tokens": 10}
            ) as r:
                assert r.status == 200
                body = await r.json()
            assert set(body) == FIELDS and body["ttft_s"] > 0 and body["e2e_s"] > body["ttft_s"]
            assert body["waiting"] == 0 and body["snapshot_age_ms"] < 1000

            client = PredictorClient(url, s)
            for i in range(4):
                await client.routed(f"burst{i}", 500, 100)
            busier = await client.predict(100, 10)
            assert busier.waiting == 4 and busier.e2e_s > body["e2e_s"]
            batch = await client.predict_batch([(100, 10), (1000, 10)])
            assert len(batch) == 2 and batch[1].ttft_s > batch[0].ttft_s
            for i in range(4):
                await client.finished(f"burst{i}")
            assert (await client.predict(100, 10)).waiting == 0

            for bad in ({"prompt_tokens": "x", "expected_output_tokens": 1}, {"prompt_tokens": 5}, [1]):
                async with s.post(url + "/predict", json=bad) as r:
                    assert r.status == 400
                    err = (await r.json())["error"]
                    assert err["type"] == "BadRequestError" and err["code"] == 400 and err["message"]
            async with s.post(url + "/predict", data=b"{not json") as r:
                assert r.status == 400
            async with s.post(url + "/predict_batch", json={"requests": []}) as r:
                assert r.status == 400
            async with s.post(url + "/routed", json={"prompt_tokens": 1}) as r:
                assert r.status == 400
            with pytest.raises(PredictorError):
                await client.predict(5000, 1)  # longer than the model's context
            async with s.get(url + "/metrics") as r:
                text = await r.text()
            assert (
                "block_predictor_predictions_total" in text
                and "block_predictor_predict_seconds_bucket" in text
            )
            assert (
                "block_predictor_snapshot_age_seconds" in text
                and "block_predictor_refresh_errors_total" in text
            )
            assert await client.health()


async def test_sidecar_anticipates_the_rate_reported_to_it() -> None:
    """--anticipate-arrivals: forecasts add arrivals at the rate of the requests reported to /routed."""
    with engine() as eng, sidecar(eng, anticipate_arrivals=True) as url:
        async with aiohttp.ClientSession() as s:
            client = PredictorClient(url, s)
            alone = await client.predict(100, 200)
            assert alone.anticipated_rate == 0  # nothing reported yet
            for i in range(40):  # 40 requests in the 10 s window: 4 req/s of 300 + 200 tokens
                await client.routed(f"r{i}", 300, 200)
                await client.finished(f"r{i}")
            busy = await client.predict(100, 200)
            assert busy.waiting == 0 and busy.anticipated_rate == pytest.approx(4.0)
            assert busy.e2e_s > alone.e2e_s  # the expected arrivals join its batch


async def _stream(
    s: aiohttp.ClientSession, url: str, rid: str, prompt: int, output: int
) -> tuple[float, float]:
    body = {"prompt": [1] * prompt, "max_tokens": output, "ignore_eos": True,
            "expected_output_tokens": output, "stream": True}  # fmt: skip
    t0 = time.monotonic()
    first = None
    async with s.post(url + "/v1/completions", json=body, headers={"x-block-request-id": rid}) as r:
        assert r.status == 200
        async for _ in r.content.iter_any():
            first = first or time.monotonic()
    end = time.monotonic()
    return (first or end) - t0, end - t0


@pytest.mark.slow
async def test_forecast_matches_the_engine_at_noise_zero() -> None:
    """With exact step times and known lengths, what the forecast says is what happens (within 1%)."""
    profile = load_profile("llama-2-7b-a30")
    with engine() as url:
        async with aiohttp.ClientSession() as s:
            background = [
                asyncio.create_task(_stream(s, url, f"bg{i}", 150 + 100 * i, 20 + 5 * i)) for i in range(5)
            ]
            await asyncio.sleep(0.12)  # let them get going: prefills done, decodes under way
            tracker = InstanceTracker("e", profile)
            async with s.get(url + "/state") as r:
                state = await r.json()
            tracker.observe_state(state, at=state["now"])  # on the engine's clock
            # long enough that the client's own hops (about 3 ms) stay well inside the 1%
            cand = asyncio.create_task(_stream(s, url, "cand", 700, 80))
            arrival = None
            while arrival is None:  # when the engine got it: a network race must not decide a step
                async with s.get(url + "/state") as r:
                    later = await r.json()
                arrival = next((q["arrival_time"] for q in later["running"] + later["waiting"]
                                if q["id"] == "cand"), None)  # fmt: skip
            # the prompts are all ones: the candidate hits the blocks the others cached (and the
            # forecast knows, from its prompt's block hashes and the engine's /state)
            f = tracker.predict(RoutingRequest(700, 80, prefix_hashes=chain_hashes([1] * 700)), arrival)
            ttft, e2e = await cand
            await asyncio.gather(*background)
    assert f is not None
    assert abs(e2e - f.e2e_s) / e2e < 0.01, (e2e, f.e2e_s)
    # TTFT is a few steps: allow the HTTP hops of one request (client -> engine -> client) on top
    assert abs(ttft - f.ttft_s) < 0.01 * ttft + 0.01, (ttft, f.ttft_s)
    print(f"e2e {e2e:.4f} forecast {f.e2e_s:.4f}; ttft {ttft:.4f} forecast {f.ttft_s:.4f}")
