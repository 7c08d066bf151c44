"""Fuzzing request parsing: whatever the body, the router and the engine answer with a parsed request
or a 4xx in OpenAI's format, never an exception that would be a 500.

(a) function level: random JSON-like bodies (the real field names with values of any type, and plain
    garbage) through the router's and the engine's parse functions;
(b) HTTP level: a bounded number of random bodies against a real engine and a real router in front
    of it; no answer is a 5xx.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from block.engine.openai_protocol import parse_body, parse_generation
from block.engine.server import BackgroundEngine, background_engine
from block.engine.settings import EngineSettings, replica_config
from block.openai_api.errors import RequestError
from block.profiles import load_profile
from block.router.request_shape import CHAT_PATH, RequestShape, parse_shape
from tests.router.servers import count_words, router

PATHS = ["/v1/completions", CHAT_PATH]
FIELDS = [
    "model",
    "prompt",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "min_tokens",
    "n",
    "best_of",
    "stream",
    "stream_options",
    "ignore_eos",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "expected_output_tokens",
]

# Any JSON value, and (function level only) what JSON cannot carry: NaN, infinities, huge integers.
leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["", "text", "user", "synthetic", "m1"])
)
json_value = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
part = st.fixed_dictionaries(
    {}, optional={"type": st.sampled_from(["text", "image_url"]) | json_value, "text": json_value | st.text()}
)
message = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "system", "assistant"]) | json_value,
        "content": st.text(max_size=20) | st.lists(part | json_value, max_size=3) | json_value,
    },
)
# Values that look right more often than not, so the parsers get past their first check.
plausible = (
    st.integers(-3, 40)
    | st.floats(-2.0, 3.0)
    | st.text(max_size=20)
    | st.lists(message, max_size=3)
    | st.lists(st.integers(-1, 50_000), max_size=8)
    | st.lists(st.text(max_size=8), max_size=3)
    | st.fixed_dictionaries({}, optional={"include_usage": json_value})
)
# Content parts whose `text` is a string about half the time.
parts = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url"]), "text": st.text(max_size=10) | json_value}
    ),
    max_size=2,
)
# A request for either path (prompt and messages both present), mostly valid ...
valid = st.fixed_dictionaries(
    {
        "prompt": st.text(min_size=1, max_size=20) | st.lists(st.integers(0, 50_000), min_size=1, max_size=8),
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "system"]), "content": st.text(max_size=20) | parts}
            ),
            min_size=1,
            max_size=3,
        ),
        # short answers keep the HTTP test fast; an override may still ask for the whole context
        "max_tokens": st.integers(1, 30) | st.integers(1, 30).map(float),
    },
    optional={
        "model": st.sampled_from(["synthetic", "m1", ""]),
        "min_tokens": st.integers(0, 2),
        "stream": st.booleans(),
        "ignore_eos": st.booleans(),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0.01, 1),
        "stop": st.text(max_size=3) | st.lists(st.text(max_size=3), max_size=2),
    },
)
# ... with up to two fields overwritten by anything: the parsers get past their first checks.
near_valid = st.builds(
    lambda base, changes: {**base, **changes},
    valid,
    st.dictionaries(st.sampled_from(FIELDS), plausible | json_value, max_size=2),
)
body_strategy = (
    near_valid | st.dictionaries(st.sampled_from(FIELDS), plausible | json_value, max_size=8) | json_value
)
# Over HTTP, mostly near-valid bodies (the others are refused at the first check), some garbage bytes.
http_body = st.one_of(
    near_valid.map(lambda b: json.dumps(b).encode()),
    near_valid.map(lambda b: json.dumps(b).encode()),
    body_strategy.map(lambda b: json.dumps(b).encode()),
    st.binary(max_size=64),
)


def _is_4xx(e: RequestError) -> bool:
    return 400 <= e.status < 500 and bool(e.message) and e.body().startswith(b'{"error":')


@settings(max_examples=400, deadline=None)
@given(path=st.sampled_from(PATHS), body=body_strategy, models=st.sampled_from([None, {"m1"}]))
def test_router_parsing_gives_a_shape_or_a_4xx(path: str, body: Any, models: set[str] | None) -> None:
    try:
        shape = parse_shape(path, body, count_words, lambda text, n: 7, 100, models)
    except RequestError as e:
        assert _is_4xx(e), e
    else:
        assert isinstance(shape, RequestShape) and shape.prompt_tokens >= 1
        assert shape.expected_output_tokens >= 1


@settings(max_examples=400, deadline=None)
@given(path=st.sampled_from(PATHS), body=body_strategy, header=st.none() | st.text(max_size=6))
def test_engine_parsing_gives_params_or_a_4xx(path: str, body: Any, header: str | None) -> None:
    kind = "chat" if path == CHAT_PATH else "completion"
    headers = {} if header is None else {"x-block-expected-output-tokens": header}
    try:
        params = parse_generation(kind, body, headers, frozenset({"m1"}))
    except RequestError as e:
        assert _is_4xx(e), e
    else:
        assert params.prompt_tokens >= 1


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=64) | body_strategy.map(lambda b: json.dumps(b).encode()))
def test_engine_body_decoding_gives_an_object_or_a_4xx(raw: bytes) -> None:
    try:
        assert isinstance(parse_body(raw), dict)
    except RequestError as e:
        assert _is_4xx(e), e


# -- HTTP level -------------------------------------------------------------------------------------

ACCEPTED_WAIT_S = 2.0  # an accepted non-streaming request answers when generated: stop waiting then


@pytest.fixture(scope="module")
def engine() -> Iterator[BackgroundEngine]:
    profile = load_profile("tiny-fast")  # 1-3 ms steps: accepted requests finish quickly
    with background_engine(EngineSettings(profile, replica_config(profile), noise=0.0, seed=1)) as e:
        yield e


@pytest.fixture
async def router_url(engine: BackgroundEngine) -> AsyncIterator[str]:
    async with router([engine.url]) as (app, url):
        assert app.pool.served_models() == {"synthetic"}
        yield url


async def _status(client: httpx.AsyncClient, url: str, raw: bytes) -> int | None:
    """The status, or None when an accepted request was still generating after ACCEPTED_WAIT_S."""
    try:
        async with client.stream("POST", url, content=raw, headers={"content-type": "application/json"}) as r:
            return r.status_code  # leaving unread closes the connection: the engine aborts it
    except httpx.ReadTimeout:
        return None


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=http_body)
async def test_no_body_gets_a_5xx_over_http(engine: BackgroundEngine, router_url: str, raw: bytes) -> None:
    timeout = httpx.Timeout(10.0, read=ACCEPTED_WAIT_S)
    async with httpx.AsyncClient(timeout=timeout) as client:
        for url in [base + path for base in (engine.url, router_url) for path in PATHS]:
            status = await _status(client, url, raw)
            assert status is None or status < 500, (url, raw, status)
