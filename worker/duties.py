"""Periodic upkeep every worker runs: promote due retries, rescue expired leases, prune.

Each duty's ``run_once`` does one small batch in one transaction and raises on error; the
scheduled wrapper repeats it while batches come back full (a bounded number of times), logs a
failure and carries on. Rows are picked with ``SKIP LOCKED``, so every worker may run every
duty at once without doing the work twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy.engine import Engine

from outbox import queries
from outbox.states import JobStatus
from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

BATCH_SIZE = 500  # small: each batch holds its row locks only briefly
MAX_BATCHES_PER_RUN = 20  # a huge backlog is worked off over several runs, not in one stretch


@dataclass(frozen=True)
class Duty:
    """A named periodic job: ``run_once`` handles one batch and returns how many rows it moved."""

    name: str
    interval_seconds: float
    run_once: Callable[[], int]


class Maintenance:
    """The three duties on one database; ``now`` comes from ``clock`` (None: the database's)."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime | None],
        batch_size: int = BATCH_SIZE,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._batch_size = batch_size
        self._metrics = metrics

    def promote_once(self) -> int:
        with self._engine.begin() as conn:
            return queries.promote_due_retries(conn, limit=self._batch_size, now=self._clock())

    def rescue_once(self) -> int:
        with self._engine.begin() as conn:
            rescued = queries.rescue_expired(conn, limit=self._batch_size, now=self._clock())
        if self._metrics is not None:  # committed: count them
            self._metrics.lease_rescues.inc(len(rescued))
        for job in rescued:
            # A worker died or stalled holding these; worth a line each (rare, and actionable).
            log.warning(
                "lease expired; job rescued",
                extra={"job_id": job.job_id, "dead": job.status is JobStatus.DEAD},
            )
        return len(rescued)

    def prune_once(self, retention: timedelta) -> int:
        with self._engine.begin() as conn:
            return queries.prune_finished(
                conn, older_than=retention, limit=self._batch_size, now=self._clock()
            )

    def duties(
        self,
        *,
        promote_interval: float,
        rescue_interval: float,
        prune_interval: float,
        retention: timedelta | None,
    ) -> list[Duty]:
        duties = [
            Duty("promote_due_retries", promote_interval, self.promote_once),
            Duty("rescue_expired", rescue_interval, self.rescue_once),
        ]
        if retention is not None:
            duties.append(
                Duty("prune_finished", prune_interval, lambda: self.prune_once(retention))
            )
        return duties

    def run_duty(self, duty: Duty) -> int:
        """What the scheduler calls: batches until one comes back short; logs, never raises."""
        total = 0
        try:
            for _ in range(MAX_BATCHES_PER_RUN):
                moved = duty.run_once()
                total += moved
                if moved < self._batch_size:
                    break
        except Exception:
            log.warning(
                "duty failed; next run tries again", extra={"duty": duty.name}, exc_info=True
            )
        return total


def schedule_duties(scheduler: BaseScheduler, maintenance: Maintenance, duties: list[Duty]) -> None:
    """Add each duty to ``scheduler`` at its interval, first run at once; one run at a time."""
    for duty in duties:
        scheduler.add_job(
            maintenance.run_duty,
            "interval",
            args=[duty],
            seconds=duty.interval_seconds,
            id=f"duty:{duty.name}",
            name=f"duty:{duty.name}",
            replace_existing=True,
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
        )
