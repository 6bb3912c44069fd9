"""The worker loop: claim jobs up to free capacity from a source, run them, record outcomes.

The source (:mod:`worker.source`) is the table itself (:class:`~worker.table_source.TableSource`,
``OUTBOX_BROKER=none``) or a broker's consumer group (``worker.redis_source``,
``worker.kafka_source``); every claim is one guarded statement on the rows all the same. Every
change to a job is one statement: the claim (which counts the attempt and takes a lease), then
one fenced write of the outcome, after which the source may ack the delivery. A crash anywhere
leaves each job either claimable, or PROCESSING under a lease that expires and is rescued; none
completes twice, because completing needs the current lease token.

Threads: the caller's runs the claim loop, and every ``backlog_interval`` samples the backlog
(the gauge an HPA or KEDA scales on, and the input of the autoscaler, which resizes the handler
threads between its bounds); ``concurrency`` daemon threads run handlers, and one event loop
the ``async def`` ones; one each writes outcomes, beats the heartbeat, watches timeouts and
(table source) listens for NOTIFY; the scheduler (when given) runs the periodic duties and cron
firings.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import sqlalchemy as sa
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy.engine import Engine

from outbox import queries, tracing
from outbox.backoff import BackoffPolicy
from outbox.failpoints import failpoint
from outbox.job_record import ClaimedJob, Lease
from outbox.wakeup import Waker
from worker.async_executor import AsyncExecutor
from worker.attempt import (
    Outcome,
    Snoozed,
    no_handler,
    run_attempt,
    run_attempt_async,
    timed_out,
)
from worker.capacity import Capacity
from worker.claim_pace import ClaimPace, claim_budget
from worker.claim_plan import plan_claims
from worker.cron_enqueuer import CronEnqueuer
from worker.duties import Maintenance, schedule_duties
from worker.handlers import HandlerRegistry
from worker.heartbeat import Heartbeat
from worker.job import Job
from worker.metrics import WorkerMetrics
from worker.outcome_writer import OutcomeWriter, Report
from worker.policy import TypePolicies, WorkerConfig
from worker.rate_limits import RateLimiter
from worker.running import RunningJob, RunningJobs
from worker.source import ClaimRequest, ClaimTerms, JobSource, SourceUnavailable
from worker.table_source import TableSource
from worker.watchdog import Watchdog

log = logging.getLogger(__name__)

Clock = Callable[[], datetime | None]

OUTAGE_BACKOFF = BackoffPolicy(base_seconds=0.5, cap_seconds=30.0)
"""A database or broker outage: the loop waits this long between tries (and goes round)."""


def _database_clock() -> datetime | None:
    return None


def new_worker_id() -> str:
    """``host:pid:random``: unique per process, and readable in ``locked_by``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True)
class ClaimRound:
    """What one :meth:`Worker.run_once` did: jobs claimed, and whether more may be waiting."""

    claimed: int
    more: bool


class Worker:
    """Runs the handlers of ``registry`` on jobs claimed from ``source`` until stopped.

    ``source`` defaults to the table itself. ``clock`` gives the ``now`` of every statement
    (default: the database's clock); tests pass one to move time. ``scheduler`` (APScheduler 3,
    built by the caller) runs the periodic duties and cron schedules; without one, call
    :attr:`maintenance` and :attr:`cron` yourself.
    """

    def __init__(
        self,
        engine: Engine,
        registry: HandlerRegistry,
        config: WorkerConfig = WorkerConfig(),  # noqa: B008 - frozen
        *,
        listen_conninfo: str | None = None,
        scheduler: BaseScheduler | None = None,
        clock: Clock = _database_clock,
        worker_id: str | None = None,
        notify: bool = True,
        source: JobSource | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self.worker_id = worker_id or new_worker_id()
        self._registry = registry
        self._config = config
        self._policies = TypePolicies.build(registry, config)
        self._source: JobSource = source if source is not None else TableSource(engine)
        self._terms = ClaimTerms(
            worker_id=self.worker_id,
            lease=config.lease,
            default_max_attempts=config.default_max_attempts,
            max_attempts_by_type=self._policies.max_attempts,
        )
        self._listen_conninfo = listen_conninfo
        self._scheduler = scheduler
        self._clock = clock
        self.stop_event = threading.Event()
        self.idle = threading.Event()
        """Set while the worker waits with nothing in hand and nothing claimable in sight."""
        self._wake = threading.Event()  # a slot freed, a notification came, or stop
        self._running = RunningJobs(on_free=self._wake_loop)
        self._pace = ClaimPace()
        self._limiter = RateLimiter(self._policies.rate_limits)
        self._capacity = Capacity(
            engine, types=list(registry.handlers), config=config, running=self._running,
            metrics=self.metrics, clock=clock, on_grow=self._wake.set,
        )  # fmt: skip
        self._writer = OutcomeWriter(
            engine,
            clock=clock,
            backoff_for=self._policies.backoff_for,
            on_written=self._written,
            outage_patience_seconds=config.lease.total_seconds(),
            metrics=self.metrics,
        )
        self._heartbeat = Heartbeat(engine, self._running, lease=config.lease, clock=clock)
        self._async_executor = AsyncExecutor(lambda: self._capacity.size)
        self._watchdog: Watchdog[RunningJob] = Watchdog(self._on_timeout)
        self._listener: threading.Thread | None = None
        self.maintenance = Maintenance(engine, clock=clock, metrics=self.metrics)
        self.cron = CronEnqueuer(engine, registry.crons, notify=notify)
        self.last_loop = time.monotonic()
        """When the loop last went round (monotonic); a stalled loop fails the health probe."""
        self.metrics.in_flight.set_function(self._running.count)

    # --- the loop ---------------------------------------------------------------------------

    def run(self, on_started: Callable[[], None] | None = None) -> None:
        """Claim and run jobs until :attr:`stop_event` is set, then shut down gracefully.

        ``on_started`` runs once the source is connected and every thread is up, before the
        first claim (``outbox worker`` serves its probes from there); if it raises, the worker
        shuts down and the error propagates.
        """
        self._start()
        try:
            if on_started is not None:
                on_started()
            self._loop()
        finally:
            self._shutdown()

    def stop(self) -> None:
        self.stop_event.set()
        self._wake.set()

    @property
    def concurrency(self) -> int:
        """Handler slots now (the autoscaler changes it between its bounds)."""
        return self._capacity.size

    @property
    def config(self) -> WorkerConfig:
        """What the worker was told (an autoscaled one started at ``concurrency``)."""
        return self._config

    def health(self, stall_after: float | None = None) -> str | None:
        """None while the loop goes round; the reason once it has stalled for ``stall_after`` s
        (default: twice the longest round, a poll interval plus an outage's wait, plus 10 s)."""
        if stall_after is None:
            longest = self._config.poll_interval + OUTAGE_BACKOFF.cap_seconds
            stall_after = 2 * longest + 10
        stalled = time.monotonic() - self.last_loop
        return None if stalled < stall_after else f"worker loop stalled for {stalled:.0f} s"

    def _loop(self) -> None:
        failures = 0
        while not self.stop_event.is_set():
            self.last_loop = time.monotonic()
            self.metrics.loop_heartbeat.set_to_current_time()
            self._wake.clear()  # before looking, so a wake-up during the round is kept
            try:
                claimed = self.run_once()
                self._capacity.sample_if_due()
            except (sa.exc.OperationalError, SourceUnavailable):
                failures += 1
                log.warning("database or broker unavailable; backing off", exc_info=True)
                self.stop_event.wait(OUTAGE_BACKOFF.delay(failures).total_seconds())
                continue
            failures = 0
            if claimed.claimed == 0 and self._running.count() == 0 and not self._writer.pending:
                self.idle.set()
            else:
                self.idle.clear()
            if claimed.more:
                continue  # a full claim, or a broker read (which itself waited for work)
            self._wake.wait(self._wait_seconds())

    def run_once(self) -> ClaimRound:
        """Claim what free capacity allows (with short handlers, also the next round's worth:
        :mod:`worker.claim_pace`), in one transaction, and start each job.

        With no free capacity the source is still asked (for nothing): a broker source commits
        what is done and keeps its consumer alive meanwhile.
        """
        size = self._capacity.size
        budget = claim_budget(
            concurrency=size, busy=self._running.busy(), in_hand=self._running.count(),
            batch=self._config.batch_size, ahead=self._pace.ahead(size),
        )  # fmt: skip
        groups = plan_claims(
            handled=self._registry.handlers.keys(),
            concurrency_limits=self._policies.concurrency_limits,
            running=self._running.count_by_type(),
            tokens={t: self._limiter.tokens(t) for t in self._limiter.type_limited},
        )
        request = ClaimRequest(
            limit=budget, groups=groups, handled=frozenset(self._registry.handlers),
            terms=self._terms, now=self._clock(), wait_seconds=self._wait_seconds(),
        )  # fmt: skip
        asked = time.monotonic()
        claimed = self._source.claim(request)
        if claimed.jobs:
            failpoint("worker.after_claim")
        if budget > 0 and len(claimed.jobs) == budget:  # full: it did not wait for work to come
            self._pace.claimed(time.monotonic() - asked)
        # Once per round that claimed anything: asking costs an environment lookup.
        traced = bool(claimed.jobs) and tracing.recording()
        started = [r for r in (self._prepare(c, traced) for c in claimed.jobs) if r is not None]
        self._running.add_all(started)  # before any thread can return one
        awaited = []
        for running in started:
            if running.spec.is_async:
                awaited.append(partial(self._run_async_job, running))
            else:
                self._capacity.executor.submit(partial(self._run_job, running))
        if awaited:
            self._async_executor.submit_all(awaited)  # one hand-off to the loop per round
        return ClaimRound(len(claimed.jobs), claimed.more)

    def sample_backlog(self) -> int:
        """Count the due backlog, set its gauge, let the autoscaler resize; the concurrency now."""
        return self._capacity.sample()

    def _wake_loop(self) -> None:
        # Every job's return comes here; while the loop is busy the flag is already up, and
        # setting an Event takes its lock. Skipping loses no wake-up: the caller changed what
        # the loop reads before looking, and the loop clears the flag before it reads.
        if not self._wake.is_set():
            self._wake.set()

    def _wait_seconds(self) -> float:
        # A type held back by an empty bucket is worth a look as soon as a token is free.
        refills = [self._limiter.next_token_in(t) for t in self._limiter.type_limited]
        return min([self._config.poll_interval, *(r for r in refills if r > 0)])

    # --- one job ----------------------------------------------------------------------------

    def _prepare(self, claimed: ClaimedJob, traced: bool) -> RunningJob | None:
        """The job to run; None when its outcome is decided here (no handler, rate limited)."""
        lease = Lease(claimed.id, claimed.lease_token)
        since = claimed.since
        job = Job.claimed(claimed, partial(self._write_progress, lease))
        spec = self._registry.get(claimed.type)
        if spec is None:
            outcome = no_handler(job.type, list(self._registry.handlers))
            self._writer.put(_report(job, lease, outcome, since))
            return None
        wait = self._limiter.acquire(job.type, job.key)
        if wait > 0:
            self._writer.put(_report(job, lease, Snoozed(timedelta(seconds=wait)), since))
            return None
        return RunningJob(job, spec, lease, since, traced)

    def _run_job(self, running: RunningJob) -> None:
        outcome = None
        try:
            if self._began(running):
                outcome = run_attempt(running.spec, running.job, traced=running.traced)
        finally:
            self._ended(running, outcome)

    async def _run_async_job(self, running: RunningJob) -> None:
        task = asyncio.current_task()
        assert task is not None  # always a task: the async executor made it
        running.interrupt = partial(task.get_loop().call_soon_threadsafe, task.cancel)
        outcome = None
        try:
            if self._began(running):
                outcome = await run_attempt_async(running.spec, running.job, traced=running.traced)
        finally:
            self._ended(running, outcome)

    def _began(self, running: RunningJob) -> bool:
        """The handler may start: False when shutdown gave the job back while it waited (a job
        claimed ahead waits for a thread or room on the loop). Its timeout starts here."""
        if not self._running.start(running):
            return False
        if running.spec.timeout_seconds is not None:
            self._watchdog.watch(running, running.spec.timeout_seconds)
        return True

    def _ended(self, running: RunningJob, outcome: Outcome | None) -> None:
        """The handler's thread or task is back: report ``outcome`` unless the job was settled
        meanwhile; the job counts as returned whatever happens (None: the handler never ran)."""
        finishing = False
        try:
            if outcome is None:
                return
            run_seconds = time.monotonic() - running.started
            self._pace.ran(run_seconds)
            failpoint("worker.after_handler")
            report = _report(running.job, running.lease, outcome, running.since, run_seconds)
            finishing = True  # finish counts the job returned, whatever happens inside
            if not self._running.finish(running, partial(self._writer.put, report)):
                log.warning(
                    "handler returned after its timeout or shutdown; its outcome is discarded",
                    extra={"job_id": running.job.job_id, "type": running.job.type},
                )
        finally:
            if not finishing:
                self._running.returned(running)

    def _on_timeout(self, running: RunningJob) -> None:
        seconds = running.spec.timeout_seconds or 0.0
        report = _running_report(running, timed_out(seconds))
        if self._running.settle(running, partial(self._writer.put, report)):
            running.cancel()
            log.warning("job timed out", extra={"job_id": running.job.job_id, "seconds": seconds})

    def _written(self, leases: list[Lease]) -> None:
        # The source first: by the time the freed slot wakes the loop, a broker source's
        # bookkeeping already counts these deliveries as done.
        self._source.acknowledge(leases)
        self._running.written(leases)

    def _write_progress(self, lease: Lease, progress_json: str) -> bool:
        with self.engine.begin() as conn:
            return queries.report_progress(conn, lease, progress_json, now=self._clock())

    # --- start and stop ---------------------------------------------------------------------

    def _start(self) -> None:
        self._source.start()  # first: a broker that cannot be reached stops us before any thread
        self._capacity.executor.start()
        if any(spec.is_async for spec in self._registry.handlers.values()):
            self._async_executor.start()  # else on first use: a loop thread only if needed
        self._writer.start()
        self._heartbeat.start()
        self._watchdog.start()
        if self._source.wakes_on_notify:
            self._listener = threading.Thread(target=self._listen, name="listener", daemon=True)
            self._listener.start()
        if self._scheduler is not None:
            config = self._config
            duties = self.maintenance.duties(
                promote_interval=config.promote_interval, rescue_interval=config.rescue_interval,
                prune_interval=config.prune_interval, retention=config.retention,
            )  # fmt: skip
            schedule_duties(self._scheduler, self.maintenance, duties)
            self.cron.schedule(self._scheduler)
            self._scheduler.start()
        types = sorted(self._registry.handlers)
        log.info("worker started", extra={"worker_id": self.worker_id, "types": types})

    def _listen(self) -> None:
        waker = Waker(self._listen_conninfo, queries.NOTIFY_CHANNEL, self.stop_event)
        try:
            while not self.stop_event.is_set():
                if waker.wait(self._config.poll_interval):
                    self._wake.set()
        finally:
            waker.close()
            self._wake.set()  # the claim loop waits on _wake only: carry the stop to it

    def _shutdown(self) -> None:
        self.stop_event.set()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        grace = self._config.shutdown_grace
        running = self._running.count()
        log.info("worker stopping", extra={"running": running, "grace_seconds": grace})
        unfinished: list[RunningJob] = []
        if not self._running.wait_until_empty(grace):
            unfinished = self._running.settle_the_rest()
        self._watchdog.stop()
        self._writer.stop()  # writes every outcome already reported
        self._give_back(unfinished)
        self._heartbeat.stop()
        self._capacity.executor.stop()
        self._async_executor.stop()
        if self._listener is not None:
            self._listener.join()
            self._listener = None
        self._source.stop()  # after the last outcome: acks and commits everything done
        log.info("worker stopped", extra={"worker_id": self.worker_id})

    def _give_back(self, unfinished: list[RunningJob]) -> None:
        if not unfinished:
            return
        leases = [r.lease for r in unfinished]
        try:
            with self.engine.begin() as conn:
                released = queries.release_leases(conn, leases, now=self._clock())
        except sa.exc.SQLAlchemyError:
            log.warning("could not give leases back; they expire and are rescued", exc_info=True)
            return
        finally:
            # Given back (PENDING, published anew) or left to the rescuer: no delivery is needed.
            self._source.acknowledge(leases)
        log.warning(
            "grace period over; running jobs given back",
            extra={"given_back": len(released), "job_ids": [r.job.job_id for r in unfinished]},
        )


def _report(
    job: Job, lease: Lease, outcome: Outcome, since: datetime | None, run: float | None = None
) -> Report:
    return Report(lease, job.job_id, job.type, job.attempt, job.max_attempts, outcome, since, run)


def _running_report(running: RunningJob, outcome: Outcome) -> Report:
    run = time.monotonic() - running.started
    return _report(running.job, running.lease, outcome, running.since, run)
