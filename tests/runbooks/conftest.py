"""Fixtures and helpers of the runbook scenarios: a stack per test, jobs in and out of the table."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import gateway
from outbox.schema import jobs
from tests.runbooks.runbook_stack import Stack
from tests.waiting import wait_until

MakeStack = Callable[..., Stack]


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[MakeStack]:
    """``make_stack(database_url, **OUTBOX_settings)``; whatever still runs is killed afterwards."""
    missing = [tool for tool in ("bash", "psql", "curl", "jq") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the runbooks need {', '.join(missing)} on PATH")
    stacks: list[Stack] = []

    def make(database_url: str, **settings: str) -> Stack:
        stack = Stack.create(tmp_path, database_url, **settings)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.kill_all()


def enqueue(engine: Engine, specs: Sequence[gateway.JobSpec]) -> list[str]:
    with engine.begin() as conn:
        return gateway.enqueue_many(conn, specs)


def statuses(engine: Engine, job_ids: Sequence[str]) -> list[str]:
    with engine.connect() as conn:
        picked = sa.select(jobs.c.job_id, jobs.c.status).where(jobs.c.job_id.in_(job_ids))
        rows = conn.execute(picked)
        found = dict(rows.all())
    return [found.get(j, "gone") for j in job_ids]


def wait_for(engine: Engine, job_ids: Sequence[str], status: str, timeout: float = 30) -> None:
    """Until every job is in ``status``; else fail saying where they are."""
    reached = wait_until(lambda: set(statuses(engine, job_ids)) == {status}, timeout, every=0.1)
    assert reached, f"expected {status}: {statuses(engine, job_ids)}"


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status))
        return dict(rows.all())


def database_now(engine: Engine) -> str:
    """The database clock (not the transaction's start) as ISO 8601 with its zone."""
    with engine.connect() as conn:
        return str(conn.execute(sa.select(sa.func.clock_timestamp())).scalar_one().isoformat())
