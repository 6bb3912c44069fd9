"""Worker drain throughput beside pgqueuer, procrastinate and the raw SQL limit, in one run.

    .venv/bin/python bench/worker_bench.py [--jobs 50000] [--runs 3] [--concurrency 100]
                                           [--slow-jobs 2000]

Each row drains a backlog of no-op jobs from a fresh database (``CREATE DATABASE`` per run) on
one embedded PostgreSQL; the backlog is inserted, then ``ANALYZE`` and ``CHECKPOINT``, before the
clock starts. Rows: the raw claim+complete loop (the worker's own claim and completion statements,
one transaction per batch, no handler, no threads: the baseline of the ratios); the outbox worker
as ``outbox worker`` wires it (``build_worker``) on the table (``OUTBOX_BROKER=none``), on Redis
Streams and on Kafka (tansu); pgqueuer; procrastinate. For Redis and Kafka the relay publishes the
whole backlog *before* the clock starts (not concurrently), so those rows time the worker alone.

Clock: from the first handler call (raw: its first claim) until the database shows all N jobs
finished (outbox: COMPLETED; pgqueuer: a ``successful`` log row; procrastinate: ``succeeded``),
polled only once the handler has run N times. Startup (a Kafka group join, schema checks) is
outside it. Then each row is checked: every job finished exactly once, none lost, N handler
calls; anything else stops the bench with exit 1.

Concurrency, one worker process each, at most C (``--concurrency``) jobs in flight: outbox C
handler threads, claims of up to C; pgqueuer ``max_concurrent_tasks=C``, ``batch_size=C/2`` (its
rule: the cap is at least twice the batch); procrastinate ``concurrency=C`` (it fetches one job
per query); raw claims of C. Both peers drive PostgreSQL with psycopg 3. The rows that drain only
a few hundred jobs/s here (Kafka, procrastinate) get ``--slow-jobs`` (2,000) so a default run
stays within minutes; the "jobs" column says so. Peers not installed (``make bench-worker``
installs the ``bench`` extra) or failing print "not run: <reason>".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import logging
import os
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, LiteralString

import psycopg
import redis
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine

import gateway
from outbox import migrations_runner, queries
from outbox.cli.services import build_relay, build_worker
from outbox.database import create_engine, libpq_conninfo
from outbox.embedded_servers import embedded_kafka, embedded_postgres, embedded_redis
from outbox.job_record import Lease
from outbox.schema import jobs
from outbox.settings import Settings
from outbox.states import JobStatus
from worker import HandlerRegistry, Job

NOOP = "bench.noop"
PEER_NOOP = "noop"
FILL_BATCH = 1000
TEMPLATE = "outbox_bench_template"
# tansu finishes a consumer-group join in about half the session timeout (outside the clock).
KAFKA_GROUP_CONFIG: dict[str, str | int | float | bool] = {
    "session.timeout.ms": 2000,
    "heartbeat.interval.ms": 300,
}
LEASE = timedelta(seconds=30)
NOT_INSTALLED = "{} is not installed (make bench-worker installs the bench extra)"
_database_numbers = itertools.count()


class DrainFailed(Exception):
    """A drain lost, repeated or left jobs: its figure would be wrong, so the bench stops."""


class NotRun(Exception):
    """A row that cannot run here (a peer not installed, a server that did not start)."""


@dataclass(frozen=True)
class Setup:
    """What every run gets: the server, the backlog, the in-flight cap and the brokers."""

    admin_url: str
    jobs: int
    concurrency: int
    template: str = TEMPLATE
    redis_url: str | None = None
    kafka_bootstrap: str | None = None


@dataclass(frozen=True)
class Drained:
    """One timed drain: its seconds, and how often the handler ran (None: no handler)."""

    seconds: float
    handler_calls: int | None = None
    enqueue_seconds: float | None = None
    """How long enqueueing the backlog took, in 1,000-job batches (peers; outside the clock)."""


class Stopwatch:
    """Counts handler calls from any thread; the clock starts at the first one."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.calls = 0
        self.first: float | None = None
        self.all_called = threading.Event()
        self._lock = threading.Lock()

    def call(self) -> None:
        with self._lock:
            self.calls += 1
            if self.first is None:
                self.first = time.perf_counter()
            if self.calls == self.target:
                self.all_called.set()

    def elapsed(self) -> float:
        if self.first is None:
            raise DrainFailed("no handler ran")
        return time.perf_counter() - self.first


def deadline_for(jobs: int) -> float:
    """A generous bound on one drain (100 jobs/s, at least two minutes): a hang fails the run."""
    return time.monotonic() + max(120.0, jobs / 100)


def timed_drain(
    watch: Stopwatch, finished: Callable[[], int], alive: Callable[[], bool], jobs: int
) -> float:
    """Seconds from the first handler call until ``finished()`` reaches ``jobs``."""
    deadline = deadline_for(jobs)
    while not watch.all_called.wait(0.05):
        if not alive() or time.monotonic() > deadline:
            raise DrainFailed(f"the handler ran {watch.calls} of {jobs} jobs, then stopped")
    while (done := finished()) < jobs:  # the last outcome writes trail the last call briefly
        if time.monotonic() > deadline:
            raise DrainFailed(f"only {done} of {jobs} jobs finished")
        time.sleep(0.002)
    return watch.elapsed()


async def timed_drain_async(
    watch: Stopwatch, finished: Callable[[], Awaitable[int]], run: asyncio.Task[Any], jobs: int
) -> float:
    """:func:`timed_drain` for a peer's worker running as ``run``; waits for it to end."""
    deadline = deadline_for(jobs)
    try:
        while not watch.all_called.is_set():
            if run.done() or time.monotonic() > deadline:
                run.result()  # a worker that crashed says why
                raise DrainFailed(f"the handler ran {watch.calls} of {jobs} jobs, then stopped")
            await asyncio.sleep(0.005)
        while (done := await finished()) < jobs:
            if time.monotonic() > deadline:
                raise DrainFailed(f"only {done} of {jobs} jobs finished")
            await asyncio.sleep(0.002)
        seconds = watch.elapsed()
    except BaseException:
        run.cancel()
        raise
    await asyncio.wait_for(run, 60)  # both peers' workers end by themselves once drained
    return seconds


# --- databases ------------------------------------------------------------------------------------


def execute_autocommit(url: str, *statements: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    engine.dispose()


def database_url(admin_url: str, name: str) -> str:
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def make_template(admin_url: str) -> None:
    """The outbox schema at head, migrated once; each outbox run clones it."""
    drop, create = f"DROP DATABASE IF EXISTS {TEMPLATE}", f"CREATE DATABASE {TEMPLATE}"
    execute_autocommit(admin_url, drop, create)
    migrations_runner.upgrade(database_url(admin_url, TEMPLATE))


@contextlib.contextmanager
def fresh_database(admin_url: str, template: str | None = None) -> Iterator[str]:
    """A new database (a clone of ``template``, or empty) for one run; dropped afterwards."""
    name = f"bench_{os.getpid()}_{next(_database_numbers)}"
    clone = f" TEMPLATE {template}" if template else ""
    execute_autocommit(admin_url, f"CREATE DATABASE {name}{clone}")
    try:
        yield database_url(admin_url, name)
    finally:
        execute_autocommit(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def settle(url: str) -> None:
    """Planner statistics and a checkpoint, so no run starts with the previous one's debt."""
    execute_autocommit(url, "ANALYZE", "CHECKPOINT")


# --- the outbox -----------------------------------------------------------------------------------


def fill_outbox(engine: Engine, jobs: int) -> None:
    """``jobs`` PENDING no-op jobs through ``gateway.enqueue_many``, 1,000 per transaction."""
    for start in range(0, jobs, FILL_BATCH):
        specs = [gateway.JobSpec(NOOP, {"i": i}, key=f"k{i % 64}")
                 for i in range(start, min(jobs, start + FILL_BATCH))]  # fmt: skip
        with engine.begin() as conn:
            gateway.enqueue_many(conn, specs, notify=False)


def count_status(engine: Engine, status: JobStatus) -> int:
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(jobs.c.status == status.value)
        return int(conn.execute(query).scalar_one())


def outcomes(engine: Engine) -> dict[str, tuple[int, int, int]]:
    """Per status: how many jobs, and their fewest and most attempts."""
    attempts = jobs.c.attempts
    query = sa.select(jobs.c.status, sa.func.count(), sa.func.min(attempts),
                      sa.func.max(attempts)).group_by(jobs.c.status)  # fmt: skip
    with engine.connect() as conn:
        return {row[0]: (row[1], row[2], row[3]) for row in conn.execute(query)}


def verify_outbox(engine: Engine, jobs_expected: int, handler_calls: int | None) -> None:
    """Every job COMPLETED after exactly one attempt, and (with a handler) one call per job."""
    found = outcomes(engine)
    if found != {JobStatus.COMPLETED.value: (jobs_expected, 1, 1)}:
        raise DrainFailed(f"expected {jobs_expected} jobs COMPLETED after one attempt each; "
                          f"found (jobs, min and max attempts) by status: {found}")  # fmt: skip
    if handler_calls is not None and handler_calls != jobs_expected:
        raise DrainFailed(f"{jobs_expected} jobs, but the handler ran {handler_calls} times")


def drain_raw(engine: Engine, batch: int) -> tuple[int, float]:
    """Claim ``batch`` jobs and complete them in one transaction until none is left."""
    done = 0
    with engine.connect() as conn:
        started = time.perf_counter()
        while True:
            with conn.begin():
                claimed = queries.claim_batch(conn, worker_id="raw", limit=batch, lease=LEASE,
                                              default_max_attempts=5)  # fmt: skip
                if not claimed:
                    return done, time.perf_counter() - started
                completions = [queries.Completion(Lease(j.id, j.lease_token)) for j in claimed]
                done += len(queries.mark_completed(conn, completions))


def run_raw(setup: Setup) -> Drained:
    with fresh_database(setup.admin_url, setup.template) as url:
        engine = create_engine(url)
        try:
            fill_outbox(engine, setup.jobs)
            settle(url)
            done, seconds = drain_raw(engine, setup.concurrency)
            if done != setup.jobs:
                raise DrainFailed(f"the raw loop completed {done} of {setup.jobs} jobs")
            verify_outbox(engine, setup.jobs, None)
        finally:
            engine.dispose()
    return Drained(seconds)


def worker_settings(setup: Setup, url: str, broker: str) -> Settings:
    """What ``outbox worker`` would read from OUTBOX_*, at the bench's concurrency."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"  # a new stream or topic, and group, per run
    return Settings(
        database_url=url, broker=broker, default_topic=topic, worker_group=topic,
        redis_url=setup.redis_url or "redis://127.0.0.1:6379/0", redis_maxlen=0,
        kafka_bootstrap_servers=setup.kafka_bootstrap or "127.0.0.1:9092",
        kafka_config=KAFKA_GROUP_CONFIG if broker == "kafka" else {},
        worker_concurrency=setup.concurrency, worker_batch_size=setup.concurrency,
    )  # fmt: skip


def publish_all(settings: Settings, jobs_expected: int) -> None:
    """The relay, as ``outbox relay`` builds it, publishes the whole backlog (before the clock)."""
    # The group settings are the consumer's; a producer would warn about each of them.
    relay = build_relay(settings.model_copy(update={"kafka_config": {}}))
    published = 0
    try:
        while (result := relay.run_once()).fetched:
            published += result.published
    finally:
        relay.close()
        relay.publisher.close()
        relay.engine.dispose()
    if published != jobs_expected:
        raise DrainFailed(f"the relay published {published} of {jobs_expected} jobs")


def drain_outbox_worker(engine: Engine, settings: Settings, jobs_expected: int) -> Drained:
    """Run ``build_worker(settings)`` with a no-op handler until every job is COMPLETED."""
    watch = Stopwatch(jobs_expected)
    registry = HandlerRegistry()

    @registry.handler(NOOP)
    def noop(job: Job) -> None:
        watch.call()

    worker = build_worker(settings, registry)
    thread = threading.Thread(target=worker.run, name="bench-worker", daemon=True)
    thread.start()
    completed = functools.partial(count_status, engine, JobStatus.COMPLETED)
    try:
        seconds = timed_drain(watch, completed, thread.is_alive, jobs_expected)
    finally:
        worker.stop()
        thread.join(60)
        worker.engine.dispose()
    if thread.is_alive():
        raise DrainFailed("the worker did not stop within 60 s")
    return Drained(seconds, watch.calls)


def run_outbox(setup: Setup, broker: str) -> Drained:
    """Fill a fresh outbox (and for a broker, publish it all), then time the worker's drain."""
    server = {"redis": setup.redis_url, "kafka": setup.kafka_bootstrap}.get(broker, "table")
    if not server:
        raise NotRun(f"the embedded {broker} server did not start")
    with fresh_database(setup.admin_url, setup.template) as url:
        engine = create_engine(url)
        try:
            fill_outbox(engine, setup.jobs)
            settings = worker_settings(setup, url, broker)
            if broker != "none":
                publish_all(settings, setup.jobs)
            settle(url)
            drained = drain_outbox_worker(engine, settings, setup.jobs)
            verify_outbox(engine, setup.jobs, drained.handler_calls)
        finally:
            engine.dispose()
            if broker == "redis" and setup.redis_url:
                flush_redis(setup.redis_url)
    return drained


def flush_redis(url: str) -> None:
    """The bench's own Redis: drop the run's stream and the relay's dedup keys."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


# --- peers ----------------------------------------------------------------------------------------


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


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Row:
    """One row of the table: how to run it once, and what its runs gave."""

    name: str
    jobs: int
    run: Callable[[], Drained]
    rates: list[float] = field(default_factory=list)
    enqueue_rates: list[float] = field(default_factory=list)
    not_run: str | None = None

    def run_once(self) -> None:
        if self.not_run is not None:
            return
        try:
            drained = self.run()
        except DrainFailed:
            raise
        except NotRun as exc:
            self.not_run = str(exc)
        except Exception as exc:  # a row that cannot run here says so, rather than crash
            self.not_run = f"{type(exc).__name__}: {exc}"
        else:
            self.rates.append(self.jobs / drained.seconds)
            if drained.enqueue_seconds:
                self.enqueue_rates.append(self.jobs / drained.enqueue_seconds)


RAW = "raw claim+complete (no handler)"


def build_rows(setup: Setup, slow_jobs: int) -> list[Row]:
    """The rows in the order they run; the slow ones drain ``slow_jobs`` each."""
    slow = replace(setup, jobs=slow_jobs)
    return [
        Row(RAW, setup.jobs, lambda: run_raw(setup)),
        Row("outbox, table source", setup.jobs, lambda: run_outbox(setup, "none")),
        Row("outbox, Redis Streams source", setup.jobs, lambda: run_outbox(setup, "redis")),
        Row("outbox, Kafka source (tansu)", slow.jobs, lambda: run_outbox(slow, "kafka")),
        Row("pgqueuer 1.6 (psycopg)", setup.jobs, lambda: run_peer(setup, drain_pgqueuer)),
        Row("procrastinate 3.10 (psycopg)", slow.jobs, lambda: run_peer(slow, drain_procrastinate)),
    ]


def show(rows: list[Row], args: argparse.Namespace) -> None:
    raw = statistics.median(rows[0].rates) if rows[0].rates else None
    table = Table(title=f"worker drain of no-op jobs, at most {args.concurrency} in flight, "
                        f"median of {args.runs}")  # fmt: skip
    for column in ("row", "jobs", "jobs/s", "min..max", "vs raw"):
        table.add_column(column, justify="left" if column == "row" else "right")
    for row in rows:
        if row.not_run is not None or not row.rates:
            table.add_row(row.name, f"{row.jobs:,}", "not run", "", "")
            continue
        median, low, high = statistics.median(row.rates), min(row.rates), max(row.rates)
        ratio = f"{median / raw:.2f}x" if raw else "-"
        table.add_row(row.name, f"{row.jobs:,}", f"{median:,.0f}", f"{low:,.0f}..{high:,.0f}",
                      ratio)  # fmt: skip
    console = Console()
    console.print(table)
    for row in rows:
        if row.not_run is not None:  # too long for a cell: one line each, below the table
            console.print(f"{row.name}: not run: {row.not_run}", highlight=False)


def optional_server(
    stack: contextlib.ExitStack, start: Callable[[], contextlib.AbstractContextManager[Any]]
) -> int | None:
    """The port of an embedded broker, or None (its rows then say "not run") if it won't start."""
    try:
        return int(stack.enter_context(start()).port)
    except Exception as exc:
        Console(stderr=True).print(f"[yellow]{start.__name__} did not start:[/] {exc}")
        return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=50_000, help="backlog per run")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs per row")
    parser.add_argument("--concurrency", type=int, default=100, help="jobs in flight (C)")
    slow = "backlog of the rows that drain a few hundred jobs/s here (Kafka, procrastinate)"
    parser.add_argument("--slow-jobs", type=int, default=2_000, help=f"{slow}; at most --jobs")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(embedded_postgres())
        redis_port = optional_server(stack, embedded_redis)
        kafka_port = optional_server(stack, embedded_kafka)
        make_template(pg.url)
        setup = Setup(
            admin_url=pg.url, jobs=args.jobs, concurrency=args.concurrency,
            redis_url=f"redis://127.0.0.1:{redis_port}/0" if redis_port else None,
            kafka_bootstrap=f"127.0.0.1:{kafka_port}" if kafka_port else None,
        )  # fmt: skip
        rows = build_rows(setup, min(args.jobs, args.slow_jobs))
        try:
            for _ in range(args.runs):  # interleaved, so machine noise hits every row alike
                for row in rows:
                    row.run_once()
        except DrainFailed as exc:
            Console(stderr=True).print(f"[bold red]drain failed, no figures:[/] {exc}")
            raise SystemExit(1) from None
    show(rows, args)


if __name__ == "__main__":
    main()
