"""What every drain shares: its setup, its clock, its result, and the two ways it fails.

A drain times a worker (the outbox's, or a peer's) emptying a backlog of no-op jobs. The clock
starts at the first handler call and stops when the database shows every job finished, so
startup is outside it; a drain that loses, repeats or strands jobs raises :class:`DrainFailed`
and the bench stops rather than print a figure that would be wrong.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.databases import TEMPLATE

# The outbox and the peers fill their backlogs alike, so their enqueue rates compare.
FILL_BATCH = 1000


class DrainFailed(Exception):
    """A drain lost, repeated or left jobs: its figure would be wrong, so the bench stops."""


class NotRun(Exception):
    """A row that cannot run here (a peer not installed, a server that did not start)."""


@dataclass(frozen=True)
class Setup:
    """What every run gets: the server, the backlog, the in-flight cap and the brokers."""

    admin_url: str
    jobs: int
    concurrency: int
    template: str = TEMPLATE
    redis_url: str | None = None
    kafka_bootstrap: str | None = None


@dataclass(frozen=True)
class Drained:
    """One timed drain: its seconds, and how often the handler ran (None: no handler)."""

    seconds: float
    handler_calls: int | None = None
    enqueue_seconds: float | None = None
    """How long enqueueing the backlog took, in 1,000-job batches (peers; outside the clock)."""


class Stopwatch:
    """Counts handler calls from any thread; the clock starts at the first one."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.calls = 0
        self.first: float | None = None
        self.all_called = threading.Event()
        self._lock = threading.Lock()

    def call(self) -> None:
        with self._lock:
            self.calls += 1
            if self.first is None:
                self.first = time.perf_counter()
            if self.calls == self.target:
                self.all_called.set()

    def elapsed(self) -> float:
        if self.first is None:
            raise DrainFailed("no handler ran")
        return time.perf_counter() - self.first


def deadline_for(jobs: int) -> float:
    """A generous bound on one drain (100 jobs/s, at least two minutes): a hang fails the run."""
    return time.monotonic() + max(120.0, jobs / 100)


def timed_drain(
    watch: Stopwatch, finished: Callable[[], int], alive: Callable[[], bool], jobs: int
) -> float:
    """Seconds from the first handler call until ``finished()`` reaches ``jobs``."""
    deadline = deadline_for(jobs)
    while not watch.all_called.wait(0.05):
        if not alive() or time.monotonic() > deadline:
            raise DrainFailed(f"the handler ran {watch.calls} of {jobs} jobs, then stopped")
    while (done := finished()) < jobs:  # the last outcome writes trail the last call briefly
        if time.monotonic() > deadline:
            raise DrainFailed(f"only {done} of {jobs} jobs finished")
        time.sleep(0.002)
    return watch.elapsed()


async def timed_drain_async(
    watch: Stopwatch, finished: Callable[[], Awaitable[int]], run: asyncio.Task[Any], jobs: int
) -> float:
    """:func:`timed_drain` for a peer's worker running as ``run``; waits for it to end."""
    deadline = deadline_for(jobs)
    try:
        while not watch.all_called.is_set():
            if run.done() or time.monotonic() > deadline:
                run.result()  # a worker that crashed says why
                raise DrainFailed(f"the handler ran {watch.calls} of {jobs} jobs, then stopped")
            await asyncio.sleep(0.005)
        while (done := await finished()) < jobs:
            if time.monotonic() > deadline:
                raise DrainFailed(f"only {done} of {jobs} jobs finished")
            await asyncio.sleep(0.002)
        seconds = watch.elapsed()
    except BaseException:
        run.cancel()
        raise
    await asyncio.wait_for(run, 60)  # both peers' workers end by themselves once drained
    return seconds
