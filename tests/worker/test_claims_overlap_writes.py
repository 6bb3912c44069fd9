"""A handler thread freed takes the next job while outcomes wait to be written, within a bound.

The outcome writer is held up by row locks a test transaction takes on the first jobs' rows:
with concurrency 2 the worker must go on to claim 4 more (in hand: three times its
concurrency), and no more than that while the writes cannot finish; released, every job
completes once.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from outbox.schema import jobs
from outbox.states import JobStatus
from tests.waiting import wait_until
from tests.worker.conftest import FAST, Runs, StartWorker, count, enqueue, went_round
from worker import HandlerRegistry, Job

S = JobStatus


def test_freed_threads_claim_while_outcomes_wait_but_at_most_thrice_the_concurrency_in_hand(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    runs = Runs()
    first_two_running = threading.Barrier(3)
    release_first_two = threading.Event()

    @registry.handler("work")
    def work(job: Job) -> None:
        runs.record(job)
        if len(runs.calls) <= 2:
            first_two_running.wait(10)
            release_first_two.wait(10)

    for n in range(10):
        enqueue(engine, "work", {"n": n})
    worker = start_worker(registry, replace(FAST, concurrency=2, batch_size=2))
    first_two_running.wait(10)  # two claimed and running: the worker is at its concurrency

    with engine.connect() as blocker, blocker.begin():
        # Their completions will wait for these locks: the writer is stuck on its first batch.
        locked = blocker.execute(
            sa.select(jobs.c.id).where(jobs.c.status == S.PROCESSING).with_for_update()
        ).all()
        assert len(locked) == 2
        release_first_two.set()
        assert wait_until(lambda: len(runs.calls) == 6, timeout=10), runs.calls
        # Two more full rounds of the claim loop with the writer still stuck: nothing more taken.
        for _ in range(2):
            assert wait_until(went_round(worker), timeout=10)
        assert len(runs.calls) == 6
        assert count(engine, S.PROCESSING) == 6
        assert count(engine, S.COMPLETED) == 0

    assert wait_until(lambda: count(engine, S.COMPLETED) == 10, timeout=20)
    assert len(runs.calls) == len({job_id for job_id, _ in runs.calls}) == 10  # each ran once


def test_a_returning_handler_wakes_the_claim_loop_rather_than_leaving_it_to_the_next_poll(
    engine: Engine, start_worker: StartWorker
) -> None:
    # One thread, one job a claim, a poll of a minute, and no notification after the start:
    # only each handler's return (and its written outcome) can send the loop for the next job.
    registry = HandlerRegistry()
    runs = Runs()

    @registry.handler("work")
    def work(job: Job) -> None:
        runs.record(job)

    for n in range(5):
        enqueue(engine, "work", {"n": n})
    start_worker(registry, replace(FAST, concurrency=1, batch_size=1, poll_interval=60.0))

    assert wait_until(lambda: count(engine, S.COMPLETED) == 5, timeout=10), runs.calls
    assert len(runs.calls) == 5
