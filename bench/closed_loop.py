"""The load generator: closed-loop client threads, and the check of what they were acknowledged.

Each of ``Load.clients`` threads opens its own client (a keep-alive HTTP connection, or a
database connection for the in-process rows) and sends its next request as soon as the previous
one is answered, until the row's budget of requests or seconds runs out. Every call returns the
``job_id`` of each job acknowledged to it, so :func:`check_stored` can hold the database to
exactly those jobs, once each.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from outbox.schema import jobs


class BenchError(Exception):
    """A response or the database disagreed with what the bench sent: the figures mean nothing."""


@dataclass(frozen=True)
class Load:
    """How hard each row pushes: ``requests`` per row if set, else for ``seconds``."""

    clients: int = 8
    seconds: float = 5.0
    requests: int | None = None
    batch_size: int = 100


@dataclass(frozen=True)
class Sample:
    """One row's figures in one run, and the ``job_id`` of every job acknowledged."""

    requests: int
    jobs: int
    seconds: float
    p50_ms: float
    p99_ms: float
    job_ids: list[str] = field(repr=False)
    bench_cores: float = 0.0
    """CPU this process used meanwhile, in cores: the load generator, or the in-process rows."""
    gateway_cores: float = 0.0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def jobs_per_second(self) -> float:
        return self.jobs / self.seconds


class Budget:
    """Hands out request numbers until ``requests`` are given or the deadline passes."""

    def __init__(self, load: Load) -> None:
        self._limit = load.requests
        self._deadline = time.monotonic() + load.seconds if load.requests is None else None
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> int | None:
        with self._lock:
            if self._limit is not None and self._next >= self._limit:
                return None
            if self._deadline is not None and time.monotonic() >= self._deadline:
                return None
            self._next += 1
            return self._next - 1

    def stop(self) -> None:
        with self._lock:
            self._limit = 0


def _percentile_ms(latencies: Sequence[float], q: int) -> float:
    if len(latencies) < 2:
        return latencies[0] * 1000
    return statistics.quantiles(latencies, n=100, method="inclusive")[q - 1] * 1000


Lists = tuple[list[float], list[str]]
"""One client's latencies (seconds) and the ``job_id`` of each job acknowledged to it."""


def _sample(elapsed: float, per_client: Sequence[Lists], jobs_per: int) -> Sample:
    latencies = [t for lats, _ in per_client for t in lats]
    job_ids = [j for _, ids in per_client for j in ids]
    if not latencies:
        raise BenchError("no request was made; raise --seconds or --requests")
    p50, p99 = _percentile_ms(latencies, 50), _percentile_ms(latencies, 99)
    return Sample(len(latencies), len(latencies) * jobs_per, elapsed, p50, p99, job_ids)


Call = Callable[[int], list[str]]
"""One request (or in-process transaction) number ``n``; returns the ``job_id`` acknowledged."""
Client = Callable[[], contextlib.AbstractContextManager[Call]]
"""Opens one client's connection for the length of a row."""


def drive(load: Load, client: Client, *, jobs_per: int) -> Sample:
    """``load.clients`` threads, each calling its own client's ``call(n)`` until the budget ends."""
    budget = Budget(load)
    per_client: list[Lists] = [([], []) for _ in range(load.clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(load.clients) as pool:
        futures = [pool.submit(_client_loop, budget, client, *lists) for lists in per_client]
        for future in futures:
            future.result()
    return _sample(time.perf_counter() - started, per_client, jobs_per)


def _client_loop(
    budget: Budget, client: Client, latencies: list[float], job_ids: list[str]
) -> None:
    try:
        with client() as call:
            while (n := budget.take()) is not None:
                started = time.perf_counter()
                job_ids.extend(call(n))
                latencies.append(time.perf_counter() - started)
    except BaseException:
        budget.stop()  # the other clients end too; the error reaches the caller
        raise


def check_stored(engine: Engine, prefix: str, sample: Sample) -> None:
    """The database holds exactly the jobs ``sample`` acknowledged under ``prefix``, once each."""
    with engine.connect() as conn:
        stored = conn.scalars(
            sa.select(jobs.c.job_id).where(jobs.c.job_id.startswith(f"{prefix}-"))
        )
        found = Counter(stored)
    acknowledged = Counter(sample.job_ids)
    if found != acknowledged or len(acknowledged) != sample.jobs:
        missing, unexpected = acknowledged - found, found - acknowledged
        raise BenchError(f"{prefix}: {sample.jobs} jobs acknowledged, {len(acknowledged)} "
                         f"distinct, {missing.total()} missing, {unexpected.total()} unexpected "
                         "rows in the database")  # fmt: skip
