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

import sys
from pathlib import Path

if not __package__:  # run as `python bench/worker_bench.py`: the repository root holds `bench`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import functools
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta

import redis
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine

import gateway
from bench.databases import fresh_database, make_template, settle
from bench.drains import FILL_BATCH, Drained, DrainFailed, NotRun, Setup, Stopwatch, timed_drain
from bench.peer_drains import drain_pgqueuer, drain_procrastinate, run_peer
from bench.servers import optional_server
from outbox import queries
from outbox.cli.services import build_relay, build_worker
from outbox.database import create_engine
from outbox.embedded_servers import embedded_kafka, embedded_postgres, embedded_redis
from outbox.job_record import Lease
from outbox.schema import jobs
from outbox.settings import Settings
from outbox.states import JobStatus
from worker import HandlerRegistry, Job

NOOP = "bench.noop"
# tansu finishes a consumer-group join in about half the session timeout (outside the clock).
KAFKA_GROUP_CONFIG: dict[str, str | int | float | bool] = {
    "session.timeout.ms": 2000,
    "heartbeat.interval.ms": 300,
}
LEASE = timedelta(seconds=30)


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


def count_unfinished(engine: Engine) -> int:
    """Jobs not finished (PENDING, PUBLISHED, PROCESSING, FAILED), each state counted on its own
    partial index: as fast beside 10M finished rows as beside none (a count of COMPLETED reads
    every finished row)."""

    def counted(status: JobStatus) -> sa.ScalarSelect[int]:
        return sa.select(sa.func.count()).where(jobs.c.status == status.value).scalar_subquery()

    with engine.connect() as conn:
        states = (JobStatus.PENDING, JobStatus.PUBLISHED, JobStatus.PROCESSING, JobStatus.FAILED)
        pending, published, processing, failed = map(counted, states)
        query = sa.select(pending + published + processing + failed)
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


def drain_outbox_worker(
    engine: Engine,
    settings: Settings,
    jobs_expected: int,
    *,
    beside_finished: bool = False,
    awaited: bool = False,
) -> Drained:
    """Run ``build_worker(settings)`` with a no-op handler until every job is COMPLETED.

    ``beside_finished``: the table holds finished rows of earlier drains, so the end is read
    as no job left unfinished; counting COMPLETED rows would time a read of all of them.
    ``awaited``: the no-op is an ``async def`` handler, as the peers' are.
    """
    watch = Stopwatch(jobs_expected)
    registry = HandlerRegistry()

    def noop(job: Job) -> None:
        watch.call()

    async def async_noop(job: Job) -> None:
        watch.call()

    registry.handler(NOOP)(async_noop if awaited else noop)

    worker = build_worker(settings, registry)
    thread = threading.Thread(target=worker.run, name="bench-worker", daemon=True)
    thread.start()

    def none_left_unfinished() -> int:
        return jobs_expected - count_unfinished(engine)

    completed: Callable[[], int] = (
        none_left_unfinished
        if beside_finished
        else functools.partial(count_status, engine, JobStatus.COMPLETED)
    )
    try:
        seconds = timed_drain(watch, completed, thread.is_alive, jobs_expected)
    finally:
        worker.stop()
        thread.join(60)
        worker.engine.dispose()
    if thread.is_alive():
        raise DrainFailed("the worker did not stop within 60 s")
    return Drained(seconds, watch.calls)


def run_outbox(setup: Setup, broker: str, *, awaited: bool = False) -> Drained:
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
            drained = drain_outbox_worker(engine, settings, setup.jobs, awaited=awaited)
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
        Row(
            "outbox, table source, async def no-op",
            setup.jobs,
            lambda: run_outbox(setup, "none", awaited=True),
        ),
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
