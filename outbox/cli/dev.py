"""``outbox dev``: the whole system on the embedded default, with no external service.

Today it starts an embedded PostgreSQL, migrates it, writes demo reservation jobs in business
transactions (one of them rolled back, to show it leaves no job), and prints the backlog.
The relay and worker issues add them here.
"""

from __future__ import annotations

import random
import time
import uuid

from rich.console import Console
from rich.progress import Progress
from sqlalchemy.engine import Engine

import gateway
from outbox import migrations_runner, queries
from outbox.cli import render
from outbox.database import create_engine
from outbox.embedded_servers import embedded_postgres

DEMO_TYPES = ("reservation.expired", "payment.approved", "payment.failed")
BATCH = 50


def run_dev(out: Console, *, demo_jobs: int) -> None:
    """Start, migrate, enqueue demo jobs, show the backlog, stop."""
    out.print("[bold]outbox dev[/bold]: embedded PostgreSQL, no Docker, no external services")
    with embedded_postgres() as pg:
        out.print(f"PostgreSQL up at {pg.url}")
        migrations_runner.upgrade(pg.url)
        engine = create_engine(pg.url)
        try:
            started = time.perf_counter()
            _enqueue_demo_jobs(out, engine, demo_jobs)
            elapsed = time.perf_counter() - started
            with engine.connect() as conn:
                leaked = queries.list_jobs(conn, queries.JobFilter(key="rolled-back"), limit=1)
                backlog = queries.backlog_stats(conn)
        finally:
            engine.dispose()
        out.print(render.stats_table(backlog))
        rate = demo_jobs / elapsed if elapsed > 0 else 0.0
        out.print(f"enqueued {demo_jobs} jobs in {elapsed:.2f} s ({rate:,.0f} jobs/s)")
        out.print(f"jobs left by the rolled-back transaction: {len(leaked)}")
    out.print("stopped; the embedded database was deleted")


def _enqueue_demo_jobs(out: Console, engine: Engine, count: int) -> None:
    rng = random.Random(4)  # demo data, not security
    with Progress(console=out, transient=True) as progress:
        task = progress.add_task("enqueueing demo jobs", total=count)
        for start in range(0, count, BATCH):
            specs = [
                gateway.JobSpec(
                    type=rng.choice(DEMO_TYPES),
                    payload={"reservation_id": str(uuid.uuid4()), "seats": rng.randint(1, 4)},
                    key=f"event-{rng.randint(1, 20)}",
                )
                for _ in range(min(BATCH, count - start))
            ]
            with engine.begin() as conn:
                gateway.enqueue_many(conn, specs)
            progress.advance(task, len(specs))
        with engine.connect() as conn, conn.begin() as transaction:
            gateway.enqueue(conn, "reservation.expired", {"demo": True}, key="rolled-back")
            transaction.rollback()
