"""Cron jobs: each firing of a schedule becomes one job, however many workers run the schedule.

The job's ``job_id`` is made from the cron's name and the firing's time
(``cron:nightly-report:2026-01-01T03:00:00+00:00``), and the insert leaves an existing
``job_id`` alone, so the first worker to fire enqueues it and the rest change nothing.

APScheduler 3 does not tell a job function which firing it is running, so each firing is a
one-shot job carrying its own fire time, which schedules the next one when it runs. Firings
missed while the process was suspended are skipped, not run in a burst.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy.engine import Engine

from outbox import queries
from outbox.new_job import NewJob
from worker.handlers import CronSpec

log = logging.getLogger(__name__)


def cron_job_id(name: str, fire_time: datetime) -> str:
    """The ``job_id`` of one firing: the same on every worker, whatever its time zone."""
    return f"cron:{name}:{fire_time.astimezone(UTC).isoformat()}"


class CronEnqueuer:
    """Enqueues the jobs of the registry's cron schedules."""

    def __init__(self, engine: Engine, specs: Mapping[str, CronSpec], *, notify: bool = True):
        self._engine = engine
        self._specs = dict(specs)
        self._notify = notify

    def fire(self, spec: CronSpec, fire_time: datetime) -> bool:
        """Enqueue the job of this firing; False when another worker already had."""
        job = NewJob.build(
            spec.type,
            spec.payload,
            job_id=cron_job_id(spec.name, fire_time),
            priority=spec.priority,
            headers={"cron": spec.name, "fire_time": fire_time.astimezone(UTC).isoformat()},
        )
        with self._engine.begin() as conn:
            inserted = queries.insert_jobs(conn, [job], notify=self._notify)
        if inserted:
            log.info("cron job enqueued", extra={"cron": spec.name, "job_id": job.job_id})
        return bool(inserted)

    @staticmethod
    def next_fire_time(spec: CronSpec, after: datetime) -> datetime | None:
        """The first firing strictly after ``after`` (None: the schedule never fires again)."""
        fire_time: datetime | None = spec.trigger().get_next_fire_time(
            None, after + timedelta(microseconds=1)
        )
        return fire_time

    def schedule(self, scheduler: BaseScheduler, *, after: datetime | None = None) -> None:
        """Put the next firing of every schedule on ``scheduler`` (after now, or ``after``)."""
        start = after or datetime.now(UTC)
        for spec in self._specs.values():
            self._schedule_next(scheduler, spec, start)

    def _schedule_next(self, scheduler: BaseScheduler, spec: CronSpec, after: datetime) -> None:
        fire_time = self.next_fire_time(spec, after)
        if fire_time is None:
            return
        scheduler.add_job(
            self._fire_and_schedule_next,
            "date",
            run_date=fire_time,
            args=[scheduler, spec, fire_time],
            id=f"cron:{spec.name}",
            name=f"cron:{spec.name}",
            replace_existing=True,
            misfire_grace_time=None,  # late (a busy or paused process) still fires, once
        )

    def _fire_and_schedule_next(
        self, scheduler: BaseScheduler, spec: CronSpec, fire_time: datetime
    ) -> None:
        try:
            self.fire(spec, fire_time)
        except Exception:
            log.warning("cron firing failed", extra={"cron": spec.name}, exc_info=True)
        finally:
            # From now, not from fire_time: firings missed while late are skipped.
            self._schedule_next(scheduler, spec, max(datetime.now(UTC), fire_time))
