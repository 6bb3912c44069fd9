"""The peers' drains: pgqueuer and procrastinate, beside which the outbox worker is measured.

Each peer gets an empty fresh database and installs its own schema there, enqueues the backlog
in 1,000-job batches through its own batch API (timed, but outside the drain's clock), then
drains it under the same :class:`~bench.drains.Stopwatch` as the outbox worker and checks that
every job finished exactly once. Both drive PostgreSQL with psycopg 3. A peer that is not
installed (the ``bench`` extra) is :class:`~bench.drains.NotRun`, not a failure.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, LiteralString

import psycopg

from bench.databases import fresh_database, settle
from bench.drains import (
    FILL_BATCH,
    Drained,
    DrainFailed,
    NotRun,
    Setup,
    Stopwatch,
    timed_drain_async,
)
from outbox.database import libpq_conninfo

PEER_NOOP = "noop"
NOT_INSTALLED = "{} is not installed (make bench-worker installs the bench extra)"


async def count_rows(conn: psycopg.AsyncConnection[Any], query: LiteralString) -> int:
    cursor = await conn.execute(query)
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def drain_pgqueuer(url: str, jobs_expected: int, concurrency: int) -> Drained:
    """Enqueue through pgqueuer's batch enqueue, then time a worker in drain mode."""
    try:
        from pgqueuer import Queries, QueueManager
        from pgqueuer.models import Job as PgqJob
        from pgqueuer.types import QueueExecutionMode
    except ImportError as exc:
        raise NotRun(NOT_INSTALLED.format(exc.name)) from None
    conninfo = libpq_conninfo(url)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        loader = Queries.from_psycopg_connection(conn)
        await loader.install()
        enqueue_started = time.perf_counter()
        for start in range(0, jobs_expected, FILL_BATCH):
            size = min(FILL_BATCH, jobs_expected - start)
            payloads: list[bytes | None] = [b'{"i": %d}' % (start + i) for i in range(size)]
            await loader.enqueue([PEER_NOOP] * size, payloads, [0] * size)
        enqueue_seconds = time.perf_counter() - enqueue_started
    settle(url)
    watch = Stopwatch(jobs_expected)
    async with (
        await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn,
        await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as probe,
    ):
        manager = QueueManager(Queries.from_psycopg_connection(conn))

        @manager.entrypoint(PEER_NOOP)
        async def noop(job: PgqJob) -> None:
            watch.call()

        run = asyncio.create_task(manager.run(
            batch_size=max(1, concurrency // 2), max_concurrent_tasks=max(2, concurrency),
            mode=QueueExecutionMode.drain,
        ))  # fmt: skip
        successful = "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"
        done = functools.partial(count_rows, probe, successful)
        seconds = await timed_drain_async(watch, done, run, jobs_expected)
        queued = await count_rows(probe, "SELECT count(*) FROM pgqueuer")
        distinct = await count_rows(probe, "SELECT count(DISTINCT job_id) FROM pgqueuer_log "
                                           "WHERE status = 'successful'")  # fmt: skip
        failed = await count_rows(probe, "SELECT count(*) FROM pgqueuer_log WHERE status "
                                         "NOT IN ('queued', 'picked', 'successful')")  # fmt: skip
    if (queued, distinct, failed, watch.calls) != (0, jobs_expected, 0, jobs_expected):
        raise DrainFailed(f"pgqueuer: {queued} left queued, {distinct} successful, "
                          f"{failed} failed, {watch.calls} handler calls; "
                          f"{jobs_expected} expected")  # fmt: skip
    return Drained(seconds, watch.calls, enqueue_seconds)


class _QuietMainModuleWarning(logging.Filter):
    """procrastinate warns when its App is built in ``__main__``: that only matters to a worker
    process importing tasks by path, and this worker runs in the process that defined them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "action", None) != "app_defined_in___main__"


async def drain_procrastinate(url: str, jobs_expected: int, concurrency: int) -> Drained:
    """Defer through ``batch_defer_async``, then time a ``wait=False`` worker."""
    try:
        import procrastinate
    except ImportError as exc:
        raise NotRun(NOT_INSTALLED.format(exc.name)) from None
    logging.getLogger("procrastinate.blueprints").addFilter(_QuietMainModuleWarning())
    conninfo = libpq_conninfo(url)
    watch = Stopwatch(jobs_expected)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    @app.task(name=PEER_NOOP, queue="bench")
    async def noop(i: int) -> None:
        watch.call()

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        enqueue_started = time.perf_counter()
        for start in range(0, jobs_expected, FILL_BATCH):
            end = min(jobs_expected, start + FILL_BATCH)
            arguments: list[dict[str, Any]] = [{"i": i} for i in range(start, end)]
            await noop.batch_defer_async(*arguments)
        enqueue_seconds = time.perf_counter() - enqueue_started
        settle(url)
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as probe:
            run = asyncio.create_task(app.run_worker_async(
                queues=["bench"], concurrency=concurrency, wait=False, listen_notify=False,
                install_signal_handlers=False,
            ))  # fmt: skip
            succeeded = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
            done = functools.partial(count_rows, probe, succeeded)
            seconds = await timed_drain_async(watch, done, run, jobs_expected)
            finished = await done()
            total = await count_rows(probe, "SELECT count(*) FROM procrastinate_jobs")
    if (finished, total, watch.calls) != (jobs_expected,) * 3:
        raise DrainFailed(f"procrastinate: {finished} succeeded of {total} jobs, {watch.calls} "
                          f"handler calls; {jobs_expected} expected")  # fmt: skip
    return Drained(seconds, watch.calls, enqueue_seconds)


def run_peer(
    setup: Setup, drain: Callable[[str, int, int], Coroutine[Any, Any, Drained]]
) -> Drained:
    """A peer in an empty fresh database, where it installs its own schema."""
    with fresh_database(setup.admin_url) as url:
        return asyncio.run(drain(url, setup.jobs, setup.concurrency))
