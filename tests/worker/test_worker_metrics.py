"""The worker's metrics: each committed outcome counted once, under its outcome; nothing before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from outbox import queries
from outbox.backoff import BackoffPolicy
from outbox.database import create_engine
from outbox.job_record import ClaimedJob, Lease
from outbox.states import JobStatus
from tests.waiting import wait_until
from tests.worker.conftest import FAST, FakeClock, StartWorker, enqueue, job
from worker import HandlerRegistry, Job, PermanentError, Retry, WorkerMetrics
from worker.attempt import Completed, Failed
from worker.duties import Maintenance
from worker.metrics import JobOutcome
from worker.outcome_writer import OutcomeWriter, Report

S = JobStatus


def counted(metrics: WorkerMetrics, job_type: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "outbox_worker_jobs_total", {"type": job_type, "outcome": outcome}
    )
    return value or 0.0


def sample(metrics: WorkerMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    assert value is not None, f"{name} {labels} not exported"
    return value


def outcome_registry() -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.handler("m.ok")
    def ok(job: Job) -> None:
        pass

    @registry.handler("m.flaky")
    def flaky(job: Job) -> None:
        raise RuntimeError("try again")

    @registry.handler("m.doomed")
    def doomed(job: Job) -> None:
        raise PermanentError("never")

    @registry.handler("m.later")
    def later(job: Job) -> None:
        raise Retry(after=60)

    @registry.handler("m.slow", timeout_seconds=0.1)
    def slow(job: Job) -> None:
        job.cancelled.wait(10)  # set by the timeout; its late return is discarded

    return registry


def test_each_committed_outcome_is_counted_once_under_its_type_and_outcome(
    engine: Engine, start_worker: StartWorker
) -> None:
    metrics = WorkerMetrics()
    expected = {
        "m.ok": ("completed", S.COMPLETED),
        "m.flaky": ("retried", S.FAILED),
        "m.doomed": ("dead", S.DEAD),
        "m.later": ("snoozed", S.PENDING),
        "m.slow": ("timed_out", S.FAILED),
    }
    job_ids = {job_type: enqueue(engine, job_type) for job_type in expected}
    start_worker(outcome_registry(), FAST, metrics=metrics)
    for job_type, (outcome, status) in expected.items():
        assert wait_until(lambda t=job_type, o=outcome: counted(metrics, t, o) == 1), job_type
        # Counted after the commit: the row already shows the outcome.
        assert job(engine, job_ids[job_type]).status is status, job_type
    for job_type, (outcome, _) in expected.items():
        others = [o.value for o in JobOutcome if o.value != outcome]
        assert all(counted(metrics, job_type, o) == 0 for o in others), job_type
        duration = {"type": job_type}
        assert sample(metrics, "outbox_worker_job_duration_seconds_count", duration) == 1
    timed_out = sample(metrics, "outbox_worker_job_duration_seconds_sum", {"type": "m.slow"})
    assert timed_out >= 0.1
    # Only the jobs that finished (completed, dead) observe publish-to-finish.
    assert sample(metrics, "outbox_worker_publish_to_finish_seconds_count") == 2
    assert sample(metrics, "outbox_worker_concurrency") == FAST.concurrency
    assert sample(metrics, "outbox_worker_last_loop_timestamp_seconds") > 0
    assert wait_until(lambda: sample(metrics, "outbox_worker_in_flight") == 0)


def claim_one(engine: Engine, job_type: str) -> ClaimedJob:
    enqueue(engine, job_type)
    with engine.begin() as conn:
        (claimed,) = queries.claim_batch(
            conn, worker_id="w", limit=1, lease=timedelta(seconds=30), default_max_attempts=5
        )
    return claimed


def writer(engine: Engine, metrics: WorkerMetrics, patience: float = 5.0) -> OutcomeWriter:
    return OutcomeWriter(
        engine, clock=lambda: None, backoff_for=lambda _: BackoffPolicy(),
        on_written=lambda _: None, outage_patience_seconds=patience, metrics=metrics,
    )  # fmt: skip


def report(claimed: ClaimedJob, lease: Lease, outcome: Completed | Failed) -> Report:
    return Report(lease, claimed.job_id, claimed.type, claimed.attempt, claimed.max_attempts,
                  outcome, claimed.since, 0.01)  # fmt: skip


def test_an_outcome_refused_for_a_lost_lease_counts_as_fenced(engine: Engine) -> None:
    metrics = WorkerMetrics()
    claimed = claim_one(engine, "m.fenced")
    stale = Lease(claimed.id, queries.new_lease_token())  # the lease a rescued job's zombie holds

    writer(engine, metrics).write([report(claimed, stale, Completed(None))])
    writer(engine, metrics).write([report(claimed, stale, Failed("boom"))])

    assert counted(metrics, "m.fenced", "fenced") == 2
    assert counted(metrics, "m.fenced", "completed") == 0
    assert counted(metrics, "m.fenced", "retried") == 0
    assert job(engine, claimed.job_id).status is S.PROCESSING
    assert metrics.registry.get_sample_value("outbox_worker_publish_to_finish_seconds_count") == 0


def test_publish_to_finish_runs_from_the_enqueue_when_the_job_was_never_published(
    engine: Engine,
) -> None:
    metrics = WorkerMetrics()
    claimed = claim_one(engine, "m.latency")
    stored = job(engine, claimed.job_id)
    assert (stored.published_at, claimed.since) == (None, stored.created_at)
    assert claimed.since is not None
    lease = Lease(claimed.id, claimed.lease_token)
    before = datetime.now(UTC)

    writer(engine, metrics).write([report(claimed, lease, Completed(None))])

    assert counted(metrics, "m.latency", "completed") == 1
    assert sample(metrics, "outbox_worker_publish_to_finish_seconds_count") == 1
    seconds = sample(metrics, "outbox_worker_publish_to_finish_seconds_sum")
    assert 0 <= seconds <= (datetime.now(UTC) - claimed.since).total_seconds()
    assert seconds >= (before - claimed.since).total_seconds()


def test_an_outcome_whose_transaction_never_committed_is_not_counted(
    engine: Engine, database_url: str
) -> None:
    metrics = WorkerMetrics()
    claimed = claim_one(engine, "m.lost")
    missing = sa.make_url(database_url).set(database="no_such_database")
    gone = create_engine(missing.render_as_string(hide_password=False))
    try:
        lost_writer = writer(gone, metrics, patience=0.2)
        lease = Lease(claimed.id, claimed.lease_token)
        lost_writer.write([report(claimed, lease, Completed(None))])  # logs, never raises
    finally:
        gone.dispose()

    assert all(counted(metrics, "m.lost", o.value) == 0 for o in JobOutcome)
    assert job(engine, claimed.job_id).status is S.PROCESSING  # left for the rescuer


def test_rescued_leases_are_counted_by_the_rescue_duty(engine: Engine) -> None:
    metrics = WorkerMetrics()
    for _ in range(2):
        enqueue(engine, "m.abandoned")
    clock = FakeClock(datetime.now(UTC) + timedelta(seconds=1))  # the jobs are due
    with engine.begin() as conn:
        claimed = queries.claim_batch(conn, worker_id="dead", limit=2,
                                      lease=timedelta(seconds=30), default_max_attempts=5,
                                      now=clock())  # fmt: skip
    assert len(claimed) == 2
    maintenance = Maintenance(engine, clock=clock, metrics=metrics)

    assert maintenance.rescue_once() == 0  # leases still valid
    assert sample(metrics, "outbox_worker_lease_rescues_total") == 0
    clock.advance(timedelta(minutes=1))
    assert maintenance.rescue_once() == 2
    assert maintenance.rescue_once() == 0
    assert sample(metrics, "outbox_worker_lease_rescues_total") == 2


def test_a_result_the_database_refuses_completes_its_job_without_sinking_the_batch(
    engine: Engine,
) -> None:
    metrics = WorkerMetrics()
    claimed = [claim_one(engine, f"m.batch{i}") for i in range(3)]
    # jsonb refuses \u0000; to_json_text keeps handlers from sending it, a bug could not.
    results = ['{"a":1}', '{"bad":"\\u0000"}', "[2]"]
    batch = [
        report(c, Lease(c.id, c.lease_token), Completed(r))
        for c, r in zip(claimed, results, strict=True)
    ]

    writer(engine, metrics).write(batch)  # logs the refusal, never raises

    stored = [job(engine, c.job_id) for c in claimed]
    assert [j.status for j in stored] == [S.COMPLETED] * 3
    assert [j.result for j in stored] == [{"a": 1}, None, [2]]
    assert sum(counted(metrics, f"m.batch{i}", "completed") for i in range(3)) == 3
