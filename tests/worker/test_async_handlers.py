"""``async def`` handlers, awaited on the worker's event loop: the real worker and database."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from datetime import timedelta

from sqlalchemy.engine import Engine

from outbox.states import JobStatus
from tests.waiting import wait_until
from tests.worker.conftest import (
    FAST,
    FakeClock,
    Gauge,
    StartWorker,
    enqueue,
    job,
    wait_for_status,
    went_round,
)
from worker import HandlerRegistry, Job, PermanentError, Retry
from worker.attempt import Failed, run_attempt
from worker.handlers import HandlerSpec

S = JobStatus


class Gate:
    """Async handlers wait here until the test opens it (from its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._opened = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._opened:
                return
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, future))
        await future

    def open(self) -> None:
        with self._lock:
            self._opened = True
            for loop, future in self._waiters:
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def test_an_async_handler_is_awaited_and_its_result_stored(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    threads: list[str] = []

    @registry.handler("greet")
    async def greet(job: Job) -> dict[str, str]:
        await asyncio.sleep(0)  # a real suspension: the body runs past an await
        threads.append(threading.current_thread().name)
        return {"hello": job.payload["name"]}

    job_id = enqueue(engine, "greet", {"name": "ada"})
    start_worker(registry)

    record = wait_for_status(engine, job_id, S.COMPLETED)
    assert (record.result, record.attempts) == ({"hello": "ada"}, 1)
    assert threads == ["async-handlers"]


def test_an_async_handler_ends_as_a_sync_one_does_by_raising(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()

    @registry.handler("flaky", retry_base_seconds=7)
    async def flaky(job: Job) -> None:
        await asyncio.sleep(0)
        raise ConnectionError("smtp down")

    @registry.handler("refused")
    async def refused(job: Job) -> None:
        raise PermanentError("no such customer")

    @registry.handler("later")
    async def later(job: Job) -> None:
        raise Retry(after=60)

    clock = FakeClock()
    flaky_id = enqueue(engine, "flaky", run_at=clock.now)
    refused_id = enqueue(engine, "refused", run_at=clock.now)
    later_id = enqueue(engine, "later", run_at=clock.now)
    start_worker(registry, clock=clock)

    failed = wait_for_status(engine, flaky_id, S.FAILED)
    assert (failed.last_error, failed.run_at) == (
        "ConnectionError: smtp down", clock.now + timedelta(seconds=7),
    )  # fmt: skip
    assert failed.last_traceback is not None
    assert 'raise ConnectionError("smtp down")' in failed.last_traceback
    dead = wait_for_status(engine, refused_id, S.DEAD)
    assert dead.last_error == "PermanentError: no such customer"
    assert wait_until(lambda: job(engine, later_id).run_at == clock.now + timedelta(seconds=60))
    snoozed = job(engine, later_id)
    assert (snoozed.status, snoozed.attempts) == (S.PENDING, 0)  # the attempt is given back


def test_no_more_async_handlers_run_at_once_than_the_concurrency(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    gate, running = Gate(), Gauge()

    @registry.handler("wait")
    async def wait(job: Job) -> None:
        with running:
            await gate.wait()

    job_ids = [enqueue(engine, "wait") for _ in range(9)]
    worker = start_worker(registry, replace(FAST, concurrency=3))

    assert wait_until(lambda: running.now == 3)
    for _ in range(3):  # claimed ahead or not, the others wait for room
        assert wait_until(went_round(worker))
    assert (running.now, running.most) == (3, 3)
    gate.open()
    for job_id in job_ids:
        wait_for_status(engine, job_id, S.COMPLETED)
    assert running.most == 3


def test_a_timeout_cancels_an_async_handler_and_frees_its_slot_at_once(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    cancelled = threading.Event()
    never = Gate()

    @registry.handler("stuck", timeout_seconds=0.2)
    async def stuck(job: Job) -> str:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "too late"

    @registry.handler("quick")
    async def quick(job: Job) -> str:
        return "done"

    clock = FakeClock()
    stuck_id = enqueue(engine, "stuck", run_at=clock.now, priority=1)
    start_worker(registry, replace(FAST, concurrency=1), clock=clock)
    record = wait_for_status(engine, stuck_id, S.FAILED)
    assert record.last_error == "timed out after 0.2 s"
    assert cancelled.wait(5)
    assert record.attempts == 1

    # The one slot is free again though the gate never opened: a sync handler would hold it.
    quick_id = enqueue(engine, "quick", run_at=clock.now)
    assert wait_for_status(engine, quick_id, S.COMPLETED).result == "done"


def test_shutdown_cancels_an_async_handler_past_the_grace_and_gives_its_job_back(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    started, cancelled = threading.Event(), threading.Event()

    @registry.handler("long")
    async def long(job: Job) -> None:
        started.set()
        try:
            await Gate().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job_id = enqueue(engine, "long")
    worker = start_worker(registry, replace(FAST, shutdown_grace=0.2))
    assert started.wait(10)

    worker.stop()
    record = wait_for_status(engine, job_id, S.PENDING)
    assert (record.attempts, record.locked_by) == (0, None)  # given back, the attempt not counted
    assert cancelled.wait(5)


def test_sync_and_async_handlers_run_side_by_side_in_one_worker(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    threads: dict[str, set[str]] = {"sync": set(), "async": set()}

    @registry.handler("sync")
    def sync_handler(job: Job) -> int:
        threads["sync"].add(threading.current_thread().name)
        return int(job.payload["n"])

    @registry.handler("async")
    async def async_handler(job: Job) -> int:
        threads["async"].add(threading.current_thread().name)
        return int(job.payload["n"]) * 10

    ids = {(kind, n): enqueue(engine, kind, {"n": n}) for kind in threads for n in range(5)}
    start_worker(registry)

    for (kind, n), job_id in ids.items():
        expected = n if kind == "sync" else n * 10
        assert wait_for_status(engine, job_id, S.COMPLETED).result == expected
    assert threads["async"] == {"async-handlers"}
    assert threads["sync"]
    assert all(name.startswith("handler-") for name in threads["sync"])


class AsyncCallable:
    async def __call__(self, job: Job) -> None:
        return None


def test_registration_tells_async_handlers_from_sync_ones() -> None:
    async def coroutine_function(job: Job) -> None:
        return None

    def plain(job: Job) -> None:
        return None

    assert HandlerSpec("a", coroutine_function).is_async
    assert HandlerSpec("b", AsyncCallable()).is_async
    assert not HandlerSpec("c", plain).is_async


def test_a_sync_handler_that_returns_a_coroutine_fails_the_job_permanently_saying_why() -> None:
    async def work(job: Job) -> str:
        return "never run"

    spec = HandlerSpec("wrapped", lambda job: work(job))  # not itself a coroutine function
    assert not spec.is_async
    outcome = run_attempt(spec, Job(1, "j1", "wrapped", {}, "k", 1, 3, {}))

    assert isinstance(outcome, Failed)
    assert outcome.permanent
    assert outcome.error.startswith("the handler returned coroutine <coroutine object")
    assert "declare it `async def`" in outcome.error


def test_an_async_handler_registered_after_the_worker_started_still_runs(
    engine: Engine, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()

    @registry.handler("first")
    def first(job: Job) -> str:
        return "sync"

    worker = start_worker(registry)  # no async handler yet: no event loop started
    assert wait_until(lambda: worker.idle.is_set())

    @registry.handler("later")
    async def later(job: Job) -> str:
        return "async"

    job_id = enqueue(engine, "later")
    assert wait_for_status(engine, job_id, S.COMPLETED).result == "async"
