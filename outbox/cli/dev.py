"""``outbox dev``: the whole system on the embedded default, with no external service.

It starts an embedded PostgreSQL, migrates it, runs a worker with the example reservation
handlers of seed 004 (some payment attempts fail and retry, a few are refused for good), and
submits a stream of demo jobs in business transactions, one of them rolled back to show it
leaves no job. A progress bar follows the jobs to the end; the summary gives jobs per state,
throughput and latency percentiles. Ctrl-C stops everything cleanly and still summarises.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, timedelta

import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import Engine

import gateway
import worker
from outbox import migrations_runner, queries
from outbox.backoff import BackoffPolicy
from outbox.cli import render
from outbox.database import create_engine, libpq_conninfo
from outbox.embedded_servers import embedded_postgres
from outbox.schema import jobs
from outbox.states import FINISHED_STATES

DEMO_TYPES = ("reservation.expired", "payment.approved", "payment.failed")
JOBS_PER_TRANSACTION = 10


def demo_registry(rng: random.Random) -> worker.HandlerRegistry:
    """The reservation handlers: fast, flaky, or refusing, as real integrations are."""
    registry = worker.HandlerRegistry()
    lock = threading.Lock()  # random.Random is not meant to be shared between threads

    def chance(p: float) -> bool:
        with lock:
            return rng.random() < p

    @registry.handler("reservation.expired")
    def release_seats(job: worker.Job) -> dict[str, object]:
        return {"released": job.payload["seats"]}

    @registry.handler("payment.approved")
    def confirm(job: worker.Job) -> None:
        if chance(0.2):
            raise ConnectionError("payment provider timed out")  # retried with backoff

    @registry.handler("payment.failed", max_attempts=3)
    def notify_customer(job: worker.Job) -> None:
        if chance(0.05):
            raise worker.PermanentError("customer has no contact address")  # DEAD at once
        if job.attempt == 1 and chance(0.5):
            raise RuntimeError("mail server refused the connection")

    return registry


@dataclass(frozen=True)
class Summary:
    counts: dict[str, int]
    seconds: float
    p50_ms: float | None
    p99_ms: float | None
    retried: int


def run_dev(out: Console, *, demo_jobs: int, rate: float = 500.0, seed: int = 4) -> None:
    """Start everything, submit ``demo_jobs`` at ``rate`` jobs/s, follow them, summarise."""
    out.print("[bold]outbox dev[/bold]: embedded PostgreSQL and a worker, no Docker, no services")
    # The summary counts failures and dead letters; one log line per retry would drown it.
    logging.getLogger("worker").setLevel(logging.ERROR)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    with embedded_postgres() as pg:
        out.print(f"PostgreSQL up at {pg.url}")
        migrations_runner.upgrade(pg.url)
        engine = create_engine(pg.url, pool_size=8)
        rng = random.Random(seed)  # demo data, not security
        running = worker.Worker(
            engine,
            demo_registry(rng),
            worker.WorkerConfig(
                concurrency=8,
                lease=timedelta(seconds=10),
                # Short delays, so the demo shows retries within seconds.
                backoff=BackoffPolicy(base_seconds=0.2, cap_seconds=2.0, jitter_seconds=0.1),
                promote_interval=0.2,
                shutdown_grace=5.0,
            ),
            listen_conninfo=libpq_conninfo(pg.url),
            scheduler=BackgroundScheduler(timezone=UTC),
        )
        thread = threading.Thread(target=running.run, name="worker")
        started = time.perf_counter()
        # Everything after the worker starts sits inside the try: a Ctrl-C at any line must
        # still stop the worker, or its thread would keep the process alive forever.
        try:
            thread.start()
            out.print(
                f"worker started; submitting {demo_jobs} demo jobs at {rate:g} jobs/s"
                " (Ctrl-C stops)"
            )
            _follow(out, engine, rng, demo_jobs, rate)
        except KeyboardInterrupt:
            out.print("interrupted; stopping the worker")
        finally:
            running.stop()
            thread.join(30)
        summary = _summarise(engine, time.perf_counter() - started)
        _print_summary(out, engine, summary)
        engine.dispose()
    out.print("stopped; the embedded database was deleted")


def _follow(out: Console, engine: Engine, rng: random.Random, count: int, rate: float) -> None:
    columns = (TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=out) as progress:
        submitted = progress.add_task("submitted", total=count)
        finished = progress.add_task("finished", total=count)
        start = time.monotonic()
        sent = 0
        while sent < count:
            # Open loop at the offered rate; the worker runs meanwhile.
            wait = start + sent / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            size = min(JOBS_PER_TRANSACTION, count - sent)
            with engine.begin() as conn:
                gateway.enqueue_many(conn, [_demo_job(rng) for _ in range(size)])
            sent += size
            progress.update(submitted, completed=sent)
            progress.update(finished, completed=_finished(engine))
        _business_transaction_rolled_back(engine)
        while (done := _finished(engine)) < count:
            progress.update(finished, completed=done)
            time.sleep(0.1)  # a progress display refreshing, not synchronisation
        progress.update(finished, completed=count)


def _demo_job(rng: random.Random) -> gateway.JobSpec:
    return gateway.JobSpec(
        type=rng.choice(DEMO_TYPES),
        payload={"reservation_id": str(uuid.uuid4()), "seats": rng.randint(1, 4)},
        key=f"event-{rng.randint(1, 20)}",
    )


def _business_transaction_rolled_back(engine: Engine) -> None:
    with engine.connect() as conn, conn.begin() as transaction:
        gateway.enqueue(conn, "reservation.expired", {"seats": 1}, key="rolled-back")
        transaction.rollback()


def _finished(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    jobs.c.status.in_([s.value for s in FINISHED_STATES])
                )
            ).scalar_one()
        )


def _summarise(engine: Engine, seconds: float) -> Summary:
    latency_ms = sa.func.extract("epoch", jobs.c.finished_at - jobs.c.created_at) * 1000
    with engine.connect() as conn:
        by_status = sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
        counts: dict[str, int] = dict(conn.execute(by_status).tuples().all())
        p50, p99 = conn.execute(
            sa.select(
                sa.func.percentile_cont(0.5).within_group(latency_ms),
                sa.func.percentile_cont(0.99).within_group(latency_ms),
            ).where(jobs.c.status == "COMPLETED")
        ).one()
        retried = conn.execute(sa.select(sa.func.count()).where(jobs.c.attempts > 1)).scalar_one()
    return Summary(counts, seconds, p50, p99, retried)


def _print_summary(out: Console, engine: Engine, summary: Summary) -> None:
    with engine.connect() as conn:
        out.print(render.stats_table(queries.backlog_stats(conn)))
        leaked = queries.list_jobs(conn, queries.JobFilter(key="rolled-back"), limit=1)
    finished = sum(summary.counts.get(s.value, 0) for s in FINISHED_STATES)
    rate = finished / summary.seconds if summary.seconds > 0 else 0.0
    out.print(f"finished {finished} jobs in {summary.seconds:.1f} s ({rate:,.0f} jobs/s); "
              f"{summary.retried} needed more than one attempt")  # fmt: skip
    if summary.p50_ms is not None and summary.p99_ms is not None:
        out.print(
            f"enqueue to completion: p50 {summary.p50_ms:.0f} ms, p99 {summary.p99_ms:.0f} ms"
        )
    out.print(f"jobs left by the rolled-back transaction: {len(leaked)}")
