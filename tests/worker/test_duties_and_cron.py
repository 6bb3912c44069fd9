"""Periodic duties and cron schedules: small batches, and each cron firing enqueued exactly once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine

from outbox.schema import jobs
from outbox.states import JobStatus
from tests.jobs_on_disk import T0, place_job, status_of
from tests.waiting import wait_until
from worker import HandlerRegistry, Worker
from worker.cron_enqueuer import CronEnqueuer, cron_job_id
from worker.duties import Duty, Maintenance, schedule_duties
from worker.handlers import CronSpec

S = JobStatus


@pytest.fixture
def scheduler() -> Iterator[BackgroundScheduler]:
    scheduler = BackgroundScheduler(timezone=UTC)
    yield scheduler
    if scheduler.running:
        scheduler.shutdown()


def statuses(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(jobs.c.status).order_by(jobs.c.id)).scalars())


def test_a_duty_works_off_a_backlog_in_small_batches_until_one_comes_back_short(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        for _ in range(5):
            place_job(conn, S.FAILED, run_at=T0 - timedelta(seconds=1))
        place_job(conn, S.FAILED, run_at=T0 + timedelta(seconds=1))  # backoff not over yet
    maintenance = Maintenance(engine, clock=lambda: T0, batch_size=2)
    promote = Duty("promote_due_retries", 1.0, maintenance.promote_once)

    assert maintenance.run_duty(promote) == 5
    assert statuses(engine) == ["PENDING"] * 5 + ["FAILED"]


def test_rescue_and_prune_duties_move_only_what_their_rule_allows(engine: Engine) -> None:
    with engine.begin() as conn:
        expired = place_job(conn, S.PROCESSING, locked_until=T0 - timedelta(seconds=1))
        alive = place_job(conn, S.PROCESSING, locked_until=T0 + timedelta(seconds=1))
        old = place_job(conn, S.COMPLETED, finished_at=T0 - timedelta(days=8))
        young = place_job(conn, S.DEAD, finished_at=T0 - timedelta(days=6))
    maintenance = Maintenance(engine, clock=lambda: T0)

    assert maintenance.rescue_once() == 1
    assert maintenance.prune_once(timedelta(days=7)) == 1
    with engine.connect() as conn:
        assert [status_of(conn, j.id) for j in (expired, alive, old, young)] == [
            S.PENDING, S.PROCESSING, None, S.DEAD,
        ]  # fmt: skip


def test_no_prune_duty_when_retention_is_off_and_a_failing_duty_never_raises(
    engine: Engine,
) -> None:
    maintenance = Maintenance(engine, clock=lambda: None)
    names = [d.name for d in maintenance.duties(
        promote_interval=1, rescue_interval=1, prune_interval=1, retention=None)]  # fmt: skip
    assert names == ["promote_due_retries", "rescue_expired"]

    def broken() -> int:
        raise RuntimeError("database on fire")

    assert maintenance.run_duty(Duty("broken", 1.0, broken)) == 0


def test_scheduled_duties_run_at_once_on_the_scheduler(
    engine: Engine, scheduler: BackgroundScheduler
) -> None:
    with engine.begin() as conn:
        place_job(conn, S.FAILED, run_at=datetime.now(UTC) - timedelta(seconds=1))
    maintenance = Maintenance(engine, clock=lambda: None)
    duties = maintenance.duties(promote_interval=60, rescue_interval=60, prune_interval=60,
                                retention=timedelta(days=7))  # fmt: skip
    schedule_duties(scheduler, maintenance, duties)
    scheduler.start()

    assert wait_until(lambda: statuses(engine) == ["PENDING"])
    assert {j.id for j in scheduler.get_jobs()} == {
        "duty:promote_due_retries", "duty:rescue_expired", "duty:prune_finished",
    }  # fmt: skip


def test_two_workers_firing_the_same_cron_moment_enqueue_one_job(engine: Engine) -> None:
    registry = HandlerRegistry()
    registry.cron("digest", "*/5 * * * *", type="digest.send", payload={"list": "weekly"})
    spec = registry.crons["digest"]
    workers = [Worker(engine, registry), Worker(engine, registry)]
    fire_time = datetime(2026, 1, 1, 12, 5, tzinfo=UTC)
    together = threading.Barrier(2)
    won: list[bool] = []

    def fire(worker: Worker) -> None:
        together.wait()
        won.append(worker.cron.fire(spec, fire_time))

    threads = [threading.Thread(target=fire, args=[w]) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert sorted(won) == [False, True]
    assert workers[0].cron.fire(spec, fire_time + timedelta(minutes=5))  # the next firing
    with engine.connect() as conn:
        rows = conn.execute(sa.select(jobs).order_by(jobs.c.id)).mappings().all()
    assert [(r["job_id"], r["type"], r["payload"]) for r in rows] == [
        ("cron:digest:2026-01-01T12:05:00+00:00", "digest.send", {"list": "weekly"}),
        ("cron:digest:2026-01-01T12:10:00+00:00", "digest.send", {"list": "weekly"}),
    ]
    assert rows[0]["headers"] == {"cron": "digest", "fire_time": "2026-01-01T12:05:00+00:00"}


def test_a_firing_has_one_job_id_whatever_the_time_zone_of_the_worker() -> None:
    local = datetime(2026, 1, 1, 13, 5, tzinfo=UTC).astimezone()
    assert cron_job_id("digest", local) == "cron:digest:2026-01-01T13:05:00+00:00"


def test_the_next_firing_is_strictly_after_the_last() -> None:
    spec = CronSpec("digest", "*/5 * * * *", "digest.send")
    at = datetime(2026, 1, 1, 12, 5, tzinfo=UTC)
    assert CronEnqueuer.next_fire_time(spec, at - timedelta(minutes=2)) == at
    assert CronEnqueuer.next_fire_time(spec, at) == at + timedelta(minutes=5)


def test_the_scheduler_fires_a_due_firing_once_and_schedules_the_next(
    engine: Engine, scheduler: BackgroundScheduler
) -> None:
    registry = HandlerRegistry()
    registry.cron("digest", "*/5 * * * *", type="digest.send")
    cron = CronEnqueuer(engine, registry.crons)
    now = datetime.now(UTC)
    # Schedule as if the process had been asleep for ten minutes: the firing due meanwhile
    # runs at once, later ones are skipped rather than run in a burst.
    cron.schedule(scheduler, after=now - timedelta(minutes=10))
    scheduler.start()

    due = CronEnqueuer.next_fire_time(registry.crons["digest"], now - timedelta(minutes=10))
    assert due is not None
    assert wait_until(lambda: statuses(engine) == ["PENDING"])
    with engine.connect() as conn:
        assert conn.execute(sa.select(jobs.c.job_id)).scalar_one() == cron_job_id("digest", due)
    assert wait_until(lambda: scheduler.get_job("cron:digest").next_run_time > now)
    next_run = scheduler.get_job("cron:digest").next_run_time
    assert next_run - now <= timedelta(minutes=5)
    assert (next_run.minute % 5, next_run.second) == (0, 0)
