"""What each way a handler ends does to its job, through the real worker loop and database."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from outbox import queries
from outbox.schema import jobs
from outbox.states import JobStatus
from tests.waiting import wait_until
from tests.worker.conftest import FAST, FakeClock, StartWorker, enqueue, job, wait_for_status
from worker import HandlerRegistry, Job, PermanentError, Retry

S = JobStatus


def test_returning_completes_the_job_and_stores_its_result(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    seen: list[Job] = []

    @registry.handler("greet")
    def greet(job: Job) -> dict[str, str]:
        seen.append(job)
        return {"hello": job.payload["name"]}

    job_id = enqueue(engine, "greet", {"name": "ada"}, key="k1", headers={"trace": "t1"})
    start_worker(registry)

    record = wait_for_status(engine, job_id, S.COMPLETED)
    assert record.result == {"hello": "ada"}
    assert (record.attempts, record.locked_by, record.finished_at is not None) == (1, None, True)
    [ran] = seen
    assert (ran.job_id, ran.key, ran.attempt, ran.max_attempts, ran.headers) == (
        job_id, "k1", 1, FAST.default_max_attempts, {"trace": "t1"},
    )  # fmt: skip


def test_raising_schedules_a_retry_at_the_policy_delay_and_keeps_error_and_traceback(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()

    @registry.handler("flaky", retry_base_seconds=7)
    def flaky(job: Job) -> None:
        raise ConnectionError("smtp down")

    clock = FakeClock()
    job_id = enqueue(engine, "flaky", run_at=clock.now)
    start_worker(registry, clock=clock)

    record = wait_for_status(engine, job_id, S.FAILED)
    assert record.run_at == clock.now + timedelta(seconds=7)  # base 7 s, no jitter in FAST
    assert record.last_error == "ConnectionError: smtp down"
    assert record.last_traceback is not None
    assert 'raise ConnectionError("smtp down")' in record.last_traceback
    assert (record.attempts, record.locked_by) == (1, None)


def test_permanent_error_sends_the_job_to_dead_at_once(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()

    @registry.handler("bad-input", max_attempts=5)
    def refuse(job: Job) -> None:
        raise PermanentError("no such customer")

    job_id = enqueue(engine, "bad-input")
    start_worker(registry)

    record = wait_for_status(engine, job_id, S.DEAD)
    assert (record.attempts, record.max_attempts) == (1, 5)
    assert record.last_error == "PermanentError: no such customer"


def test_retry_after_snoozes_the_job_without_counting_the_attempt(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()

    @registry.handler("not-yet")
    def later(job: Job) -> None:
        raise Retry(after=timedelta(minutes=3))

    clock = FakeClock()
    job_id = enqueue(engine, "not-yet", run_at=clock.now)
    start_worker(registry, clock=clock)

    def snoozed() -> bool:
        record = job(engine, job_id)
        return record.status is S.PENDING and record.run_at > clock.now

    assert wait_until(snoozed)
    record = job(engine, job_id)
    assert record.run_at == clock.now + timedelta(minutes=3)
    assert (record.attempts, record.locked_by, record.last_error) == (0, None, None)


def test_a_job_of_a_type_this_worker_does_not_handle_is_left_for_a_worker_that_does(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    registry.handler("known")(lambda job: None)

    other = enqueue(engine, "unknown.type")
    known = enqueue(engine, "known")
    start_worker(registry)

    wait_for_status(engine, known, S.COMPLETED)
    record = job(engine, other)
    assert (record.status, record.attempts, record.locked_by) == (S.PENDING, 0, None)


def test_a_poison_job_is_dead_after_exactly_max_attempts_with_the_policy_delays(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    runs: list[int] = []

    @registry.handler("poison", max_attempts=4, retry_base_seconds=10, retry_max_seconds=25)
    def poison(job: Job) -> None:
        runs.append(job.attempt)
        raise ValueError("always")

    clock = FakeClock()
    job_id = enqueue(engine, "poison", run_at=clock.now)
    worker = start_worker(registry, clock=clock)

    delays = []
    for attempt in (1, 2, 3):
        record = wait_for_status(engine, job_id, S.FAILED, attempts=attempt)
        delays.append(record.run_at - clock.now)
        # Just before the backoff ends nothing moves; at its end the retry is due again.
        clock.advance(record.run_at - clock.now - timedelta(seconds=1))
        assert worker.maintenance.promote_once() == 0
        clock.advance(timedelta(seconds=1))
        assert worker.maintenance.promote_once() == 1

    record = wait_for_status(engine, job_id, S.DEAD, attempts=4)
    assert delays == [timedelta(seconds=10), timedelta(seconds=20), timedelta(seconds=25)]
    assert runs == [1, 2, 3, 4]
    assert record.last_error == "ValueError: always"


def test_operator_max_attempts_beat_the_decorator(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    registry.handler("capped", max_attempts=9)(lambda job: None)
    config = replace(FAST, max_attempts_by_type={"capped": 2})

    job_id = enqueue(engine, "capped")
    start_worker(registry, config)

    assert wait_for_status(engine, job_id, S.COMPLETED).max_attempts == 2


def test_progress_is_stored_while_the_job_runs_and_refused_once_the_lease_is_gone(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    reported = threading.Event()
    go_on = threading.Event()
    answers: list[bool] = []

    @registry.handler("long")
    def long_job(job: Job) -> None:
        answers.append(job.report_progress({"done": 1, "of": 3}))
        reported.set()
        assert go_on.wait(10)
        answers.append(job.report_progress({"done": 2, "of": 3}))

    job_id = enqueue(engine, "long")
    start_worker(registry)
    assert reported.wait(10)
    assert job(engine, job_id).progress == {"done": 1, "of": 3}

    with engine.begin() as conn:  # meanwhile it is rescued and claimed by another worker
        stolen = sa.update(jobs).where(jobs.c.job_id == job_id)
        conn.execute(stolen.values(lease_token=queries.new_lease_token()))
    go_on.set()

    assert wait_until(lambda: len(answers) == 2)
    assert answers == [True, False]
    assert job(engine, job_id).progress == {"done": 1, "of": 3}


@pytest.mark.parametrize("bad", [float("nan"), "nul\x00", {1, 2}])
def test_progress_jsonb_cannot_store_is_refused_in_the_handler(bad: object) -> None:
    with pytest.raises(ValueError):
        Job(1, "j", "t", {}, "k", 1, 5, {}).report_progress(bad)
