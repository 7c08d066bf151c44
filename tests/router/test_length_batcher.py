"""The router's length batcher: concurrent requests share one prediction, a lone one waits a few ms."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from block.router.length_batcher import LengthBatcher
from block.router.request_shape import estimate_batched, parse_shape
from tests.router.servers import count_words


class Lengths:
    """A length model whose answer is the text's length, that records which thread ran each batch."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.threads: set[int] = set()
        self.tokens: list[Sequence[int] | None] = []

    def __call__(self, texts: Sequence[str], tokens: Sequence[int] | None) -> np.ndarray:
        self.threads.add(threading.get_ident())
        self.tokens.append(tokens)
        time.sleep(self.delay_s)
        return np.array([len(t) for t in texts])


async def test_concurrent_requests_are_predicted_together_off_the_loop() -> None:
    model = Lengths(delay_s=0.02)
    batcher = LengthBatcher(model, max_batch=16, max_wait_s=0.003)
    texts = ["x" * (i + 1) for i in range(40)]
    try:
        got = await asyncio.wait_for(asyncio.gather(*(batcher(t, len(t)) for t in texts)), 10)
    finally:
        batcher.close()
    assert got == [len(t) for t in texts]
    assert sum(batcher.batch_sizes) == 40 and max(batcher.batch_sizes) == 16
    assert len(batcher.batch_sizes) <= 4  # 16 + 16 + 8, the rest filled while the first ran
    assert threading.get_ident() not in model.threads  # the event loop never ran the model
    assert model.tokens[0] == [len(t) for t in texts[:16]]


async def test_a_lone_request_waits_only_max_wait() -> None:
    batcher = LengthBatcher(Lengths(), max_batch=16, max_wait_s=0.003)
    try:
        t0 = time.perf_counter()
        assert await asyncio.wait_for(batcher("hello", None), 5) == 5
        waited = time.perf_counter() - t0
    finally:
        batcher.close()
    assert batcher.batch_sizes == [1]
    assert waited < 1.0  # 3 ms plus a thread hand-off; generous for a loaded machine


async def test_shape_is_planned_by_the_batcher_capped_and_fixed_lengths_kept() -> None:
    batcher = LengthBatcher(Lengths(), max_wait_s=0.001)

    async def planned(body: dict) -> int:
        shape = parse_shape("/v1/completions", body, count_words, None, 100, read_text=True)
        await estimate_batched(shape, batcher)
        return shape.expected_output_tokens

    prompt = "a prompt of thirty characters!"
    try:
        assert await planned({"prompt": prompt}) == len(prompt)
        assert await planned({"prompt": prompt, "max_tokens": 8}) == 8
        assert await planned({"prompt": prompt, "max_tokens": 64, "ignore_eos": True}) == 64
        assert await planned({"prompt": [1, 2, 3]}) == 100  # no text: the default
    finally:
        batcher.close()


async def test_a_failing_model_falls_back_to_the_default() -> None:
    def broken(texts: Sequence[str], tokens: Sequence[int] | None) -> np.ndarray:
        raise RuntimeError("boom")

    batcher = LengthBatcher(broken, max_wait_s=0.001)
    shape = parse_shape("/v1/completions", {"prompt": "hi there"}, count_words, None, 40, read_text=True)
    try:
        await estimate_batched(shape, batcher)
        with pytest.raises(RuntimeError):
            await batcher("again", None)
    finally:
        batcher.close()
    assert shape.expected_output_tokens == 40
