"""The capped backlog counts (the gateway's backlog bound, every worker's backlog gauge): what
they count, and that no plan of theirs reads the whole table, finished rows included."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from outbox import queries
from outbox.states import JobStatus
from tests.jobs_on_disk import T0, place_job

S = JobStatus
Count = Callable[[Connection], int]


@pytest.fixture
def mixed(engine: Engine) -> Engine:
    """test.job: 3 PENDING due, 2 PUBLISHED due, 1 PENDING due later, one in every other
    state; other.job: 2 PENDING due."""
    with engine.begin() as conn:
        for status in (S.PENDING, S.PENDING, S.PENDING, S.PUBLISHED, S.PUBLISHED):
            place_job(conn, status)
        place_job(conn, S.PENDING, run_at=T0 + timedelta(hours=1))
        for status in (S.PROCESSING, S.FAILED, S.COMPLETED, S.DEAD, S.CANCELLED):
            place_job(conn, status)
        for _ in range(2):
            place_job(conn, S.PENDING, type="other.job")
    return engine


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (lambda c: queries.count_backlog(c, "test.job", limit=100), 6),  # due later counts too
        (lambda c: queries.count_backlog(c, "other.job", limit=100), 2),
        (lambda c: queries.count_backlog(c, "test.job", limit=4), 4),  # capped
        (lambda c: queries.count_backlog(c, "test.job", limit=2), 2),  # capped within a state
        (lambda c: queries.count_runnable(c, ["test.job"], limit=100, now=T0), 5),  # due only
        (lambda c: queries.count_runnable(c, ["test.job", "other.job"], limit=100, now=T0), 7),
        (lambda c: queries.count_runnable(c, ["test.job"], limit=4, now=T0), 4),
        (lambda c: queries.count_runnable(c, ["none.such"], limit=100, now=T0), 0),
    ],
)
def test_counts(mixed: Engine, count: Count, expected: int) -> None:
    with mixed.connect() as conn:
        assert count(conn) == expected


def plan_of(engine: Engine, count: Count) -> str:
    """The plan of the statement ``count`` runs, with sequential scans priced out: one shows
    only where no index can answer."""
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        sent.append((statement, parameters))

    with engine.connect() as conn:
        sa.event.listen(conn, "before_cursor_execute", capture)
        count(conn)
        sa.event.remove(conn, "before_cursor_execute", capture)
        [(statement, parameters)] = sent
        conn.exec_driver_sql("SET enable_seqscan = off")
        return "\n".join(conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars())


@pytest.mark.parametrize(
    "count",
    [
        lambda c: queries.count_backlog(c, "test.job", limit=100),
        lambda c: queries.count_runnable(c, ["test.job", "other.job"], limit=100),
    ],
    ids=["gateway backlog bound", "worker backlog gauge"],
)
def test_counting_the_backlog_never_reads_the_whole_table(mixed: Engine, count: Count) -> None:
    plan = plan_of(mixed, count)
    assert "Seq Scan on outbox_jobs" not in plan, plan
