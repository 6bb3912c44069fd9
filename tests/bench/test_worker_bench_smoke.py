"""Smoke test of bench/worker_bench.py: its outbox drain, on a tiny backlog, with no peers.

The peers (pgqueuer, procrastinate) are the ``bench`` extra, which ``.[dev]`` does not install;
this runs only the bench's own table-source drain and its checks.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bench import drains, worker_bench
from outbox.schema import jobs

JOBS = 300


@pytest.mark.parametrize("awaited", [False, True], ids=["def", "async def"])
def test_bench_table_drain_completes_every_job_exactly_once(
    engine: Engine, database_url: str, awaited: bool
) -> None:
    worker_bench.fill_outbox(engine, JOBS)
    setup = drains.Setup(admin_url=database_url, jobs=JOBS, concurrency=20)
    settings = worker_bench.worker_settings(setup, database_url, "none")

    drained = worker_bench.drain_outbox_worker(engine, settings, JOBS, awaited=awaited)

    assert drained.seconds > 0
    assert drained.handler_calls == JOBS
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(jobs.c.status, jobs.c.attempts, sa.func.count()).group_by(
                jobs.c.status, jobs.c.attempts
            )
        ).all()
    assert [tuple(row) for row in rows] == [("COMPLETED", 1, JOBS)]
    worker_bench.verify_outbox(engine, JOBS, drained.handler_calls)  # the bench's check agrees
