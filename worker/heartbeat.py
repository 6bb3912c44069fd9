"""The heartbeat: extends the leases of the jobs a worker runs, so a long job is not rescued.

Every third of the lease, so two beats may fail (a database blip) before a lease runs out.
A lease the heartbeat can no longer extend was rescued: the job's ``cancelled`` is set, so a
handler that checks it stops working for a result nobody will take.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from outbox import queries
from worker.running import RunningJobs

log = logging.getLogger(__name__)


class Heartbeat:
    """Extends held leases every ``lease / 3`` on a thread of its own."""

    def __init__(
        self,
        engine: Engine,
        running: RunningJobs,
        *,
        lease: timedelta,
        clock: Callable[[], datetime | None],
    ) -> None:
        self._engine = engine
        self._running = running
        self._lease = lease
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Extend every held lease once; return how many were lost."""
        leases = self._running.leases_held()
        if not leases:
            return 0
        with self._engine.begin() as conn:
            held = set(queries.extend_leases(conn, leases, lease=self._lease, now=self._clock()))
        lost = self._running.mark_lost([le for le in leases if le.id not in held])
        for running in lost:
            log.warning(
                "lease lost; the job was rescued, its handler is cancelled",
                extra={"job_id": running.job.job_id, "type": running.job.type},
            )
        return len(lost)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        interval = self._lease.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                self.run_once()
            except sa.exc.SQLAlchemyError:
                log.warning("heartbeat failed; trying again next beat", exc_info=True)
