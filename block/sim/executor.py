"""Where a sweep's independent runs execute: worker processes on this machine, or Ray tasks.

Every sweep (`block simulate`, the experiments' simulator runner, the model-error capacity searches and
the provisioning variants) submits its runs to the `concurrent.futures.Executor` opened here, so where
they run is one flag, `--executor`:

- `local` (the default): `workers` forked processes on this machine (1: here, one run after another);
- `ray`: each run is a Ray task on a Ray runtime started on this machine for the command;
- `ray:ADDRESS`: each run is a task on an existing Ray cluster (`auto`, `HOST:6379`, `ray://HOST:10001`).

A run is a pure function of its arguments (every random choice is seeded) and returns its results to
this process, which writes every file: the results are the same wherever the runs execute, and a
cluster's nodes need Block installed (the image of deploy/) but no disk shared with this machine.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from itertools import islice
from typing import Any

LOCAL = "local"
RAY = "ray"
RAY_INSTALL = "pip install 'block-llm[ray]'"


class ExecutorUnavailable(Exception):
    """The executor asked for cannot be used here (a one-line message for the user)."""


@dataclass(frozen=True)
class ExecutorSpec:
    kind: str = LOCAL  # local | ray
    address: str | None = None  # ray: an existing cluster; None: a runtime started for this command

    @classmethod
    def parse(cls, text: str) -> ExecutorSpec:
        kind, _, address = text.strip().partition(":")
        if kind == LOCAL and not address:
            return cls()
        if kind == RAY:
            return cls(RAY, address.strip() or None)
        raise ValueError(f"unknown executor {text!r}: choose local, ray or ray:ADDRESS")

    def __str__(self) -> str:
        return self.kind if self.address is None else f"{self.kind}:{self.address}"

    def connect(self) -> None:
        """Fail early, before any run, with one line: Ray missing, or its cluster out of reach. Ray stays
        connected for the process: an experiment's later sweeps reuse it; Ray stops it at exit."""
        if self.kind != RAY:
            return
        try:
            import ray
        except ImportError:
            raise ExecutorUnavailable(f"--executor {self} needs Ray: {RAY_INSTALL}") from None
        # "local": a new runtime here, even where `ray start` left a cluster running
        address = self.address or "local"
        _check_reachable(address)  # Ray's own retries wait minutes on an address where nothing listens
        if ray.is_initialized():  # by a caller (a test, a notebook) or an earlier sweep
            return
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError, ImportError) as e:
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ExecutorUnavailable(f"--executor {self}: cannot start or reach Ray ({why})") from None

    def open(self, workers: int) -> Executor:
        """An executor for one sweep; `workers` counts for the local one only (Ray: the cluster's CPUs)."""
        if self.kind == RAY:
            self.connect()
            return RayExecutor()
        if workers <= 1:
            return InlineExecutor()
        # fork: workers inherit the imported modules and the parent's workload cache
        return LocalPool(max_workers=workers, mp_context=mp.get_context("fork"))


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) address must accept a TCP connection within `timeout_s`."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "local", "auto": nothing to dial
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ExecutorUnavailable(f"--executor ray:{address}: nothing answers there ({e})") from None


def parallelism(pool: Executor) -> int:
    """How many runs the executor runs at once (a sweep keeps that many, and one more, in flight)."""
    return getattr(pool, "parallelism", 1)


class InlineExecutor(Executor):
    """Runs each submitted call at once, in this process: one worker, no pickling."""

    parallelism = 1

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # the caller sees it from future.result(), as from a pool
            future.set_exception(e)
        return future


class LocalPool(ProcessPoolExecutor):
    def __init__(self, max_workers: int, mp_context: Any) -> None:
        super().__init__(max_workers=max_workers, mp_context=mp_context)
        self.parallelism = max_workers


def _call(fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


class RayExecutor(Executor):
    """Each submitted call is a Ray task (one CPU) on the Ray that `ExecutorSpec.connect` reached."""

    def __init__(self) -> None:
        import ray

        self._task = ray.remote(num_cpus=1)(_call)
        self.parallelism = max(1, int(ray.cluster_resources().get("CPU", 1)))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return self._task.remote(fn, args, kwargs).future()


def run_each(pool: Executor, fn: Callable[..., Any], jobs: Iterable[tuple]) -> Iterator[tuple[int, Any]]:
    """`(i, fn(*job))` for the i-th job as each finishes. Jobs are drawn from `jobs` only as workers free
    up (one more than the executor runs at once is queued), so a job's arguments (a run's requests) and
    its results are held for the runs in flight only."""
    queued = enumerate(jobs)
    running: dict[Future, int] = {}
    while True:
        for i, job in islice(queued, max(0, parallelism(pool) + 1 - len(running))):
            running[pool.submit(fn, *job)] = i
        if not running:
            return
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in sorted(done, key=running.__getitem__):
            yield running.pop(future), future.result()
