"""Limits on how jobs run: per-type concurrency, rate limits, timeouts, leases and fencing."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import gateway
from outbox import queries
from outbox.schema import jobs
from outbox.states import JobStatus
from tests.waiting import wait_until
from tests.worker.conftest import (
    FAST,
    FakeClock,
    Gauge,
    StartWorker,
    count,
    enqueue,
    job,
    wait_for_status,
)
from worker import HandlerRegistry, Job

S = JobStatus


def test_per_type_concurrency_limit_holds_while_other_types_keep_running(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    gauge = Gauge()
    release = threading.Event()

    @registry.handler("report", concurrency=2)
    def report(job: Job) -> None:
        with gauge:
            assert release.wait(10)

    registry.handler("ping")(lambda job: None)
    with engine.begin() as conn:
        gateway.enqueue_many(conn, [gateway.JobSpec("report", {"n": n}) for n in range(7)])
    start_worker(registry, replace(FAST, concurrency=6))
    assert wait_until(lambda: gauge.now == 2)

    # A job of another type still runs, so the worker has claimed again since the two started.
    ping = enqueue(engine, "ping")
    wait_for_status(engine, ping, S.COMPLETED)
    assert (gauge.now, count(engine, S.PROCESSING, "report")) == (2, 2)

    release.set()
    assert wait_until(lambda: count(engine, S.COMPLETED, "report") == 7)
    assert gauge.most == 2


@pytest.mark.parametrize(
    ("rate", "keys"),
    [("5/s", ["a"] * 9), ("5/s per key", ["a"] * 9 + ["b"] * 3)],
    ids=["per-type", "per-key"],
)
def test_rate_limit_holds_and_held_back_jobs_keep_their_attempts(
    engine: Engine, start_worker: StartWorker, rate: str, keys: list[str]
) -> None:
    registry = HandlerRegistry()
    started: dict[str, list[float]] = {}
    lock = threading.Lock()

    @registry.handler("sms", rate_limit=rate)
    def sms(job: Job) -> None:
        with lock:
            started.setdefault(job.key, []).append(time.monotonic())

    with engine.begin() as conn:
        gateway.enqueue_many(conn, [gateway.JobSpec("sms", {}, key=k) for k in keys])
    start_worker(registry, replace(FAST, concurrency=8))

    assert wait_until(lambda: count(engine, S.COMPLETED) == len(keys))
    # A bucket of 5 tokens refilled at 5/s: in any stretch of t seconds, at most 5 + 5t starts.
    # "per key" counts each key on its own; key b's 3 jobs never wait for key a's bucket.
    for times in started.values():
        for i, j in itertools.combinations(range(len(times)), 2):
            assert j - i + 1 <= 5 + 5 * (times[j] - times[i]) + 0.5, (i, j, times)
    assert len(started["a"]) == 9
    assert max(started["a"]) - min(started["a"]) >= 0.7  # 4 jobs over the burst, 0.2 s apart
    with engine.connect() as conn:
        attempts = conn.execute(sa.select(jobs.c.attempts)).scalars().all()
    assert set(attempts) == {1}  # waiting for a token never used up an attempt


def test_a_timed_out_attempt_fails_and_the_late_return_is_discarded(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    noticed = threading.Event()
    returned = threading.Event()

    @registry.handler("stuck", timeout_seconds=0.2, max_attempts=3)
    def stuck(job: Job) -> str:
        if job.cancelled.wait(10):
            noticed.set()
        returned.set()
        return "too late"

    clock = FakeClock()
    job_id = enqueue(engine, "stuck", run_at=clock.now)
    worker = start_worker(registry, clock=clock)

    record = wait_for_status(engine, job_id, S.FAILED)
    assert record.last_error == "timed out after 0.2 s"
    assert record.run_at == clock.now + timedelta(seconds=10)  # an ordinary retry, by policy
    assert noticed.wait(5)
    assert returned.wait(5)
    assert wait_until(lambda: worker.idle.is_set())  # the late return has been dealt with
    record = job(engine, job_id)
    assert (record.status, record.result, record.attempts) == (S.FAILED, None, 1)


def test_the_heartbeat_keeps_a_long_job_leased_past_the_lease_time(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    release = threading.Event()
    registry.handler("long")(lambda job: release.wait(10) and None)
    lease = timedelta(seconds=0.6)

    job_id = enqueue(engine, "long")
    start_worker(registry, replace(FAST, lease=lease))
    wait_for_status(engine, job_id, S.PROCESSING)
    first_expiry = job(engine, job_id).locked_until
    assert first_expiry is not None

    deadline = time.monotonic() + 3 * lease.total_seconds()
    while time.monotonic() < deadline:  # the rescuer keeps looking for three lease times
        with engine.begin() as conn:
            assert queries.rescue_expired(conn) == []
        time.sleep(0.05)  # polling the rescuer while wall time passes; no event to wait for
    record = job(engine, job_id)
    assert record.locked_until is not None
    assert record.locked_until > first_expiry + 2 * lease

    release.set()
    assert wait_for_status(engine, job_id, S.COMPLETED).attempts == 1


def test_a_zombie_cannot_complete_a_job_rescued_and_claimed_again(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    started = {1: threading.Event(), 2: threading.Event()}
    release = {1: threading.Event(), 2: threading.Event()}

    @registry.handler("pay")
    def pay(job: Job) -> dict[str, int]:
        started[job.attempt].set()
        assert release[job.attempt].wait(10)
        return {"by_attempt": job.attempt}

    clock = FakeClock()
    job_id = enqueue(engine, "pay", run_at=clock.now)
    zombie = start_worker(registry, clock=clock)  # lease 30 s: its heartbeat won't beat in time
    assert started[1].wait(10)

    clock.advance(FAST.lease + timedelta(seconds=1))  # the zombie stalls past its lease
    with engine.begin() as conn:
        assert [r.job_id for r in queries.rescue_expired(conn, now=clock.now)] == [job_id]
    successor = start_worker(registry, clock=clock)
    assert started[2].wait(10)

    release[1].set()  # the zombie returns while the successor still holds the job
    assert wait_until(lambda: zombie.idle.is_set())
    record = job(engine, job_id)
    assert (record.status, record.locked_by, record.result) == (
        S.PROCESSING, successor.worker_id, None,
    )  # fmt: skip

    release[2].set()
    record = wait_for_status(engine, job_id, S.COMPLETED)
    assert (record.result, record.attempts) == ({"by_attempt": 2}, 2)
