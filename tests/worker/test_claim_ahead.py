"""Claiming ahead: with handlers short next to a claim's round trip, a worker whose threads are
all busy claims the next round's jobs anyway (they wait for a thread), never past twice its
concurrency in hand; with slow handlers it claims nothing its threads will not reach soon; and
at shutdown a job still waiting for a thread is given back without running."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from outbox.job_record import Lease
from outbox.schema import jobs
from outbox.states import JobStatus
from tests.waiting import wait_until
from tests.worker.conftest import FAST, Runs, StartWorker, enqueue, went_round
from worker import HandlerRegistry, Job, Worker
from worker.handlers import HandlerSpec
from worker.running import RunningJob, RunningJobs

S = JobStatus
TWO_THREADS = replace(FAST, concurrency=2, batch_size=2)


def statuses(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        query = sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
        return {row[0]: row[1] for row in conn.execute(query)}


class Gates:
    """Handlers that hold both threads until released."""

    def __init__(self, registry: HandlerRegistry) -> None:
        self.running = threading.Barrier(3)
        self.release = threading.Event()

        @registry.handler("gate")
        def gate(job: Job) -> None:
            self.running.wait(10)
            self.release.wait(10)


def start_paced(
    engine: Engine, start_worker: StartWorker, run_seconds: float, config: object = TWO_THREADS
) -> tuple[Worker, Runs, Gates]:
    """A worker whose handlers were timed: ten jobs of ``run_seconds`` each, all completed."""
    registry = HandlerRegistry()
    runs = Runs()
    gates = Gates(registry)

    @registry.handler("quick")
    def quick(job: Job) -> None:
        runs.record(job)
        time.sleep(run_seconds)  # the handler's own work, of this length (not synchronisation)

    for n in range(10):
        enqueue(engine, "quick", {"n": n})
    worker = start_worker(registry, config)  # type: ignore[arg-type]
    assert wait_until(lambda: statuses(engine) == {S.COMPLETED: 10}, timeout=20)
    return worker, runs, gates


def hold_both_threads_then_offer(engine: Engine, gates: Gates, quick_jobs: int) -> None:
    for n in range(2):
        enqueue(engine, "gate", {"n": n}, priority=5)  # claimed before any quick job
    gates.running.wait(10)
    for n in range(quick_jobs):
        enqueue(engine, "quick", {"later": n})


def test_short_handlers_the_next_round_is_claimed_while_every_thread_is_busy(
    engine: Engine, start_worker: StartWorker
) -> None:
    worker, runs, gates = start_paced(engine, start_worker, run_seconds=0.0)
    hold_both_threads_then_offer(engine, gates, quick_jobs=6)

    # Two gates running and two quick jobs claimed ahead, waiting for a thread: in hand, twice
    # the concurrency, and no more however often the loop goes round.
    assert wait_until(lambda: statuses(engine).get(S.PROCESSING) == 4, timeout=10)
    for _ in range(3):
        assert wait_until(went_round(worker), timeout=10)
    assert statuses(engine) == {S.COMPLETED: 10, S.PROCESSING: 4, S.PENDING: 4}
    assert len(runs.calls) == 10  # the jobs claimed ahead have not run: no thread was free

    gates.release.set()
    assert wait_until(lambda: statuses(engine) == {S.COMPLETED: 18}, timeout=20)
    assert len(runs.calls) == len(set(runs.calls)) == 16  # every quick job ran, once


def test_slow_handlers_nothing_is_claimed_past_the_free_threads(
    engine: Engine, start_worker: StartWorker
) -> None:
    worker, _, gates = start_paced(engine, start_worker, run_seconds=0.3)
    hold_both_threads_then_offer(engine, gates, quick_jobs=6)

    for _ in range(3):
        assert wait_until(went_round(worker), timeout=10)
    assert statuses(engine) == {S.COMPLETED: 10, S.PROCESSING: 2, S.PENDING: 6}

    gates.release.set()
    assert wait_until(lambda: statuses(engine) == {S.COMPLETED: 18}, timeout=20)


def test_at_shutdown_jobs_claimed_ahead_are_given_back_and_never_run(
    engine: Engine, start_worker: StartWorker
) -> None:
    worker, runs, gates = start_paced(
        engine, start_worker, run_seconds=0.0, config=replace(TWO_THREADS, shutdown_grace=0.2)
    )
    hold_both_threads_then_offer(engine, gates, quick_jobs=2)
    assert wait_until(lambda: statuses(engine).get(S.PROCESSING) == 4, timeout=10)

    worker.stop()  # the gates outlast the grace: all four are given back
    assert wait_until(lambda: statuses(engine) == {S.COMPLETED: 10, S.PENDING: 4}, timeout=10)
    gates.release.set()
    # Every thread has come back: from its gate, then from the job it found waiting.
    assert wait_until(lambda: worker._running.busy() == 0, timeout=10)
    assert len(runs.calls) == 10


def test_a_thread_never_starts_a_job_settled_while_it_waited() -> None:
    running = RunningJobs(on_free=lambda: None)
    lease = Lease(1, uuid.uuid4())
    job = Job(1, "j", "t", {}, "k", 1, 3, {})
    waiting = RunningJob(job=job, spec=None, lease=lease)  # type: ignore[arg-type]
    running.add_all([waiting])
    assert running.settle_the_rest() == [waiting]  # shutdown gives it back
    assert running.start(waiting) is False
    running.returned(waiting)  # the thread still hands its slot back
    assert running.busy() == 0
    assert job.cancelled.is_set()


def test_a_shutdown_waiting_for_an_empty_hand_wakes_when_the_last_job_is_freed() -> None:
    running = RunningJobs(on_free=lambda: None)
    no_spec: HandlerSpec = None  # type: ignore[assignment]  # never run here
    jobs = [Job(n, f"j{n}", "t", {}, "k", 1, 3, {}) for n in (1, 2)]
    held = [RunningJob(job=job, spec=no_spec, lease=Lease(job.id, f"t{job.id}")) for job in jobs]
    running.add_all(held)
    emptied: list[bool] = []
    done = threading.Event()

    def shutdown() -> None:
        emptied.append(running.wait_until_empty(30))
        done.set()

    threading.Thread(target=shutdown, daemon=True).start()
    for job in held:
        running.returned(job)
    running.written([held[0].lease])
    assert running.wait_until_empty(0) is False  # one still in hand
    running.written([held[1].lease])
    assert done.wait(10), "the waiter was not woken when the hand emptied"
    assert emptied == [True]
