"""The router plans free-length requests with the length estimator (--length-model, --length-quantile):
the rules with the shipped model, and end to end through the real engine emulator's /state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest

from block.length import LengthEstimator, load_default_estimator
from block.router.config import RouterConfig
from block.router.request_shape import load_length_estimate, parse_shape
from tests.router.servers import FakeUpstream, count_words, router, upstreams

PROMPT = "Write a detailed essay about the history of the Roman Empire, with sources."
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def estimator() -> LengthEstimator:
    return load_default_estimator()


def median(est: LengthEstimator, text: str) -> int:
    return est.predict(text, count_words(text))


def test_free_length_uses_the_estimate_capped_by_max_tokens(estimator: LengthEstimator) -> None:
    estimate = load_length_estimate("default")
    guess = median(estimator, PROMPT)
    assert guess > 8  # the cap below must bite

    def planned(body: dict, path: str = "/v1/completions") -> int:
        return parse_shape(path, body, count_words, estimate, 100).expected_output_tokens

    assert planned({"prompt": PROMPT}) == guess
    assert planned({"prompt": PROMPT, "max_tokens": 8}) == 8  # capped
    assert planned({"prompt": PROMPT, "max_tokens": 10_000}) == guess
    assert planned({"prompt": PROMPT, "max_tokens": 33, "ignore_eos": True}) == 33  # fixed by the client
    assert planned({"prompt": [1, 2, 3]}) == 100  # no text to read: the default
    # A chat is read as its last user message, as the estimator was trained (plain first-turn prompts).
    chat = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": PROMPT},
        ]
    }
    assert planned(chat, CHAT) == guess


def test_quantile_plans_longer_than_the_median(estimator: LengthEstimator) -> None:
    q90 = load_length_estimate("default", 0.9)
    assert q90 is not None
    want = estimator.predict_quantiles(PROMPT, (0.9,), count_words(PROMPT))[0.9]
    assert q90(PROMPT, count_words(PROMPT)) == want > median(estimator, PROMPT)
    assert load_length_estimate("default", 0.5) == estimator.predict  # the median's fast path


def test_model_file_and_bad_settings(tmp_path, estimator: LengthEstimator) -> None:  # noqa: ANN001
    path = estimator.save(tmp_path / "model.npz")
    from_file = load_length_estimate(str(path))
    assert from_file is not None and from_file(PROMPT, None) == estimator.predict(PROMPT)
    with pytest.raises(ValueError, match="needs --length-model"):
        RouterConfig(instances=["http://x"], length_quantile=0.9)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        RouterConfig(instances=["http://x"], length_model="default", length_quantile=1.5)
    with pytest.raises(ValueError):
        load_length_estimate(str(tmp_path / "missing.npz"))


def test_a_failing_estimator_falls_back_to_the_default() -> None:
    def broken(text: str, tokens: int | None) -> int:
        raise RuntimeError("boom")

    shape = parse_shape("/v1/completions", {"prompt": PROMPT, "max_tokens": 50}, count_words, broken, 40)
    assert shape.expected_output_tokens == 40


async def test_router_sends_the_estimate_as_header_and_field(estimator: LengthEstimator) -> None:
    fake = FakeUpstream(tokens=2)
    async with (
        upstreams(fake) as ups,
        router([ups[0].url], length_model="default") as (_, url),
        httpx.AsyncClient(timeout=10) as c,
    ):
        assert (await c.post(url + "/v1/completions", json={"prompt": PROMPT})).status_code == 200
    sent = fake.requests[0]
    guess = median(estimator, PROMPT)
    assert sent["headers"]["x-block-expected-output-tokens"] == str(guess)
    assert sent["body"]["expected_output_tokens"] == guess


@contextlib.contextmanager
def engine() -> Iterator[str]:
    from block.engine.server import BackgroundEngine
    from block.engine.settings import EngineSettings, replica_config
    from block.profiles import load_profile

    profile = load_profile("tiny-fast")
    started = BackgroundEngine(EngineSettings(profile, replica_config(profile), noise=0.0, seed=0)).start()
    try:
        yield started.url
    finally:
        started.stop()


@pytest.mark.parametrize("quantile", [None, 0.9])
async def test_engine_state_shows_the_planned_length(
    estimator: LengthEstimator, quantile: float | None
) -> None:
    if quantile is None:
        want = median(estimator, PROMPT)
    else:
        want = estimator.predict_quantiles(PROMPT, (quantile,), count_words(PROMPT))[quantile]
    with engine() as engine_url:
        settings = {"length_model": "default", "length_quantile": quantile}
        async with router([engine_url], **settings) as (_, url), httpx.AsyncClient(timeout=10) as c:
            # Free length (no max_tokens, no ignore_eos); min_tokens keeps it running while /state is read.
            body = {"prompt": PROMPT, "stream": True, "min_tokens": 3000}
            async with c.stream("POST", url + "/v1/completions", json=body) as resp:
                assert resp.status_code == 200
                request_id = resp.headers["x-block-request-id"]
                async for _ in resp.aiter_bytes():
                    break  # the first token is out: the request is in the engine
                state = (await c.get(engine_url + "/state")).json()
    listed = {r["id"]: r for r in state["running"] + state["waiting"]}
    assert listed[request_id]["expected_output_tokens"] == want
