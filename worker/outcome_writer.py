"""Writes what became of each attempt, on a thread of its own, fenced by each job's lease token.

Completions that arrive together go out in one statement (one at a time caps a worker near
2k jobs/s; DESIGN.md, performance notes); a retry, dead letter or snooze is one statement each.
A write whose lease is gone changes nothing: the job was rescued, and its new holder decides.
Metrics count each outcome once its transaction has committed, never before.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from outbox import queries
from outbox.backoff import BackoffPolicy
from outbox.database import HeldConnection
from outbox.job_record import Lease
from worker.attempt import Completed, Failed, Outcome, Snoozed
from worker.metrics import JobOutcome, RecordedOutcome, WorkerMetrics

log = logging.getLogger(__name__)

MAX_BATCH = 500


class Report(NamedTuple):
    """An outcome and what is needed to write it (a named tuple: every job makes one)."""

    lease: Lease
    job_id: str
    job_type: str
    attempt: int
    max_attempts: int
    outcome: Outcome
    since: datetime | None = None  # published_at, else created_at: the latency metric's start
    run_seconds: float | None = None  # the handler's run time (None: no handler ran)


class OutcomeWriter:
    """Takes :class:`Report` from any thread; writes them in order of arrival, in batches."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime | None],
        backoff_for: Callable[[str], BackoffPolicy],
        on_written: Callable[[list[Lease]], None],
        outage_patience_seconds: float,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._engine = engine
        self._connection = HeldConnection(engine)
        self._metrics = metrics
        self._clock = clock
        self._backoff_for = backoff_for
        self._on_written = on_written
        # Past the lease, the jobs are rescued anyway and a late write would change nothing.
        self._retrying = Retrying(
            retry=retry_if_exception_type(sa.exc.OperationalError),
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=0.1),
            stop=stop_after_delay(outage_patience_seconds),
            reraise=True,
        )
        self._queue: queue.SimpleQueue[Report | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._pending_lock = threading.Lock()

    def put(self, report: Report) -> None:
        with self._pending_lock:
            self._pending += 1
        self._queue.put(report)

    @property
    def pending(self) -> int:
        """Reports put and not yet written (or given up on)."""
        with self._pending_lock:
            return self._pending

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="outcome-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Write everything already put, then end the thread. Safe to call twice."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            batch, stopping = self._next_batch()
            if batch:
                self.write(batch)
            if stopping:
                self._connection.close()
                return

    def _next_batch(self) -> tuple[list[Report], bool]:
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def write(self, batch: list[Report]) -> None:
        """Write ``batch`` now (the thread calls this; tests may too). Never raises."""
        try:
            for attempt in self._retrying:
                with attempt:
                    self._write_batch(batch)
        except sa.exc.OperationalError:
            log.exception("database unavailable; outcomes dropped, the jobs will be rescued")
        except sa.exc.DBAPIError:
            # One value the database refuses must not sink the others: write them one by one.
            log.exception("batch of outcomes refused; writing them one by one")
            for report in batch:
                self._write_alone(report)
        except Exception:
            # A dead writer thread would leave every job of this worker PROCESSING until rescued.
            log.exception("outcomes not written; the jobs will be rescued")
        finally:
            # Also after a failure: those jobs stay PROCESSING under their leases, which the
            # rescuer takes back (attempt counted); nothing waits on this worker for them.
            self._on_written([report.lease for report in batch])
            with self._pending_lock:
                self._pending -= len(batch)

    def _write_batch(self, batch: list[Report]) -> None:
        now = self._clock()
        # All completions (the usual batch): one statement, atomic alone, on the held autocommit
        # connection. With a failure or snooze among them, one transaction, so a retry of the
        # batch after an error never finds its own completions done and reports them fenced.
        completions = [
            queries.Completion(r.lease, r.outcome.result_json)
            for r in batch
            if isinstance(r.outcome, Completed)
        ]
        only_completions = len(completions) == len(batch)
        with self._connection.use() if only_completions else self._engine.begin() as conn:
            done = set(queries.mark_completed(conn, completions, now=now))
            written: list[RecordedOutcome] = []
            for report in batch:
                if isinstance(report.outcome, Completed):
                    held = report.lease.id in done
                    outcome = JobOutcome.COMPLETED if held else JobOutcome.FENCED
                else:
                    outcome = self._write_other(conn, report, report.outcome, now)
                if outcome is JobOutcome.FENCED:
                    log.warning("lease lost; outcome discarded", extra=_context(report))
                written.append((report.job_type, outcome, report.run_seconds, report.since))
        if self._metrics is not None:  # counted once committed, never before
            self._metrics.record_outcomes(written)

    def _write_alone(self, report: Report) -> None:
        try:
            self._write_batch([report])
        except sa.exc.DBAPIError:
            if not isinstance(report.outcome, Completed) or report.outcome.result_json is None:
                log.exception(
                    "outcome not written; the job will be rescued", extra=_context(report)
                )
                return
            log.exception("result refused; completing without it", extra=_context(report))
            self._write_alone(report._replace(outcome=Completed(None)))

    def _write_other(
        self, conn: sa.Connection, report: Report, outcome: Failed | Snoozed, now: datetime | None
    ) -> JobOutcome:
        lease = report.lease
        if isinstance(outcome, Snoozed):
            held = queries.snooze(conn, lease, run_in=outcome.run_in, now=now)
            return JobOutcome.SNOOZED if held else JobOutcome.FENCED
        context = _context(report) | {"error": outcome.error}
        if outcome.permanent or report.attempt >= report.max_attempts:
            log.warning("job dead", extra=context)
            held = queries.dead_letter(
                conn, lease, error=outcome.error, traceback=outcome.traceback, now=now
            )
            return JobOutcome.DEAD if held else JobOutcome.FENCED
        delay = self._backoff_for(report.job_type).delay(report.attempt)
        log.info("job failed; retry scheduled", extra=context | {"retry_in": delay.total_seconds()})
        held = queries.schedule_retry(
            conn, lease, retry_in=delay, error=outcome.error, traceback=outcome.traceback, now=now
        )
        if not held:
            return JobOutcome.FENCED
        return JobOutcome.TIMED_OUT if outcome.timed_out else JobOutcome.RETRIED


def _context(report: Report) -> dict[str, object]:
    return {"job_id": report.job_id, "type": report.job_type, "attempt": report.attempt}
