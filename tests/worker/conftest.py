"""Fixtures for worker tests: workers (and, for broker sources, a relay) in threads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import gateway
from outbox.backoff import BackoffPolicy
from outbox.job_record import JobRecord
from outbox.schema import jobs
from outbox.states import JobStatus
from relay.publisher import Publisher
from relay.relay_loop import Relay
from relay.routing import Router
from tests.jobs_on_disk import stored_job
from tests.waiting import wait_until
from worker import HandlerRegistry, Job, Worker, WorkerConfig

FAST = WorkerConfig(
    concurrency=4,
    poll_interval=0.05,
    shutdown_grace=5.0,
    backoff=BackoffPolicy(base_seconds=10.0, cap_seconds=3600.0, jitter_seconds=0.0),
)
"""Polls often (tests see results quickly); no jitter, so retry times are exact."""

QUICK_RETRIES = replace(
    FAST,
    promote_interval=0.05,
    backoff=BackoffPolicy(base_seconds=0.05, cap_seconds=0.1, jitter_seconds=0.0),
)
"""Retries due within a tenth of a second, and promoted to PENDING as quickly."""


class FakeClock:
    """The ``now`` every statement of a worker uses; tests move it instead of sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


StartWorker = Callable[..., Worker]


@pytest.fixture
def start_worker(engine: Engine) -> Iterator[StartWorker]:
    """Start a :class:`Worker` on a thread; every one is stopped, and must stop, after the test."""
    started: list[tuple[Worker, threading.Thread]] = []

    def start(registry: HandlerRegistry, config: WorkerConfig = FAST, **kwargs: Any) -> Worker:
        worker = Worker(engine, registry, config, **kwargs)
        thread = threading.Thread(target=worker.run, name="worker-under-test", daemon=True)
        thread.start()
        started.append((worker, thread))
        return worker

    yield start
    for worker, _ in started:
        worker.stop()
    for _, thread in started:
        thread.join(20)
        assert not thread.is_alive(), "a worker did not stop"


def count(engine: Engine, status: JobStatus, type: str | None = None) -> int:
    """Jobs in ``status`` (of ``type``, when given)."""
    query = sa.select(sa.func.count()).where(jobs.c.status == status)
    if type is not None:
        query = query.where(jobs.c.type == type)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def went_round(worker: Worker) -> Callable[[], bool]:
    """True once the claim loop has started another round after this call."""
    since = worker.last_loop
    return lambda: worker.last_loop > since


class Gauge:
    """Counts handlers running at once and remembers the most seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


class Runs:
    """Every handler call, as (job_id, attempt), from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[str, int]] = []

    def record(self, job: Job) -> None:
        with self._lock:
            self.calls.append((job.job_id, job.attempt))


StartRelay = Callable[[Publisher, Router], Relay]


@pytest.fixture
def start_relay(engine: Engine) -> Iterator[StartRelay]:
    """Start the real relay on a thread, polling often; stopped (and its publisher closed) after."""
    started: list[tuple[Relay, Publisher, threading.Thread]] = []

    def start(publisher: Publisher, router: Router) -> Relay:
        relay = Relay(engine, publisher, router, poll_interval=0.05, gauge_interval=60)
        thread = threading.Thread(target=relay.run, name="relay-under-test", daemon=True)
        thread.start()
        started.append((relay, publisher, thread))
        return relay

    yield start
    for relay, publisher, thread in started:
        relay.stop()
        thread.join(20)
        assert not thread.is_alive(), "the relay did not stop"
        publisher.close()


def enqueue(engine: Engine, type: str, payload: Any = None, **options: Any) -> str:
    with engine.begin() as conn:
        return gateway.enqueue(conn, type, {} if payload is None else payload, **options)


job = stored_job  # the name the worker tests read it by


def wait_for_status(
    engine: Engine,
    job_id: str,
    status: JobStatus,
    *,
    attempts: int | None = None,
    timeout: float = 10.0,
) -> JobRecord:
    """Poll the row until it is in ``status`` (with ``attempts``), or fail saying where it is."""

    def reached() -> bool:
        record = job(engine, job_id)
        return record.status is status and attempts in (None, record.attempts)

    if not wait_until(reached, timeout=timeout):
        record = job(engine, job_id)
        raise AssertionError(
            f"job stayed {record.status} (attempts {record.attempts}), not {status}: "
            f"{record.last_error}"
        )
    return job(engine, job_id)
