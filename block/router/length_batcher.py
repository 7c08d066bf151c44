"""Length estimates of concurrent requests computed together, off the event loop.

A transformer length model (block.length.finetuned, block.length.minilm_heads) costs milliseconds per
prompt, most of it matrix products that cost little more for 16 prompts than for one: predicting
requests one by one on the event loop would stall the router. So a request's prompt joins a batch, and a
batch is predicted when it holds `max_batch` prompts or its first prompt has waited `max_wait_s`, in one
worker thread (numpy releases the GIL during the products, so the loop keeps serving meanwhile). While a
batch is being predicted the next one fills up (to `max_batch`) and goes as soon as the worker is free.

The cheap TF-IDF model does not come here: at about half a millisecond, mostly Python, it is cheaper
inline than a hand-off (see block.router.request_shape.load_length_estimate).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MAX_BATCH = 16
MAX_WAIT_S = 0.003

PredictMany = Callable[[Sequence[str], Sequence[int] | None], np.ndarray]


class LengthBatcher:
    """`await batcher(text, text_tokens)` -> planned output tokens, predicted with other waiting requests."""

    def __init__(self, predict_many: PredictMany, max_batch: int = MAX_BATCH, max_wait_s: float = MAX_WAIT_S):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be at least 1 and max_wait_s at least 0")
        self.predict_many = predict_many
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._pending: list[tuple[str, int | None, asyncio.Future[int]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False
        # One worker: batches run one after another (two at once would only share the same cores).
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="length-batcher")
        self.batch_sizes: list[int] = []  # of every batch predicted (tests and benchmarks read it)

    async def __call__(self, text: str, text_tokens: int | None) -> int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._pending.append((text, text_tokens, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._busy or not self._pending:
            return  # the running batch's end sends this one
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        self._busy = True
        self.batch_sizes.append(len(batch))
        texts = [t for t, _, _ in batch]
        counts = [n for _, n, _ in batch]
        tokens = None if any(n is None for n in counts) else counts  # the model counts the missing ones
        done = asyncio.get_running_loop().run_in_executor(self._worker, self.predict_many, texts, tokens)
        done.add_done_callback(lambda f: self._deliver(f, batch))

    def _deliver(self, done: asyncio.Future, batch: list) -> None:
        self._busy = False
        error = done.exception()
        results = None if error is not None else done.result()
        for i, (_, _, future) in enumerate(batch):
            if future.done():  # its request went away (cancelled)
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(int(results[i]))
        if self._pending:
            self._flush()

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
