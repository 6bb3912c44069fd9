"""A drain beside finished rows ends when nothing of its own is left unfinished.

The bench times a drain until its end check passes; beside 10M finished rows a count of COMPLETED
read all of them inside the timed span. The unfinished count must see every state a drained job
can still be in, and none it cannot.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from bench.worker_bench import count_unfinished
from outbox.states import JobStatus
from tests.jobs_on_disk import place_job

S = JobStatus


def test_the_unfinished_count_is_every_job_not_finished_and_no_other(engine: Engine) -> None:
    with engine.begin() as conn:
        for status in (S.PENDING, S.PENDING, S.PUBLISHED, S.PROCESSING, S.FAILED):
            place_job(conn, status)
        for status in (S.COMPLETED, S.COMPLETED, S.DEAD):
            place_job(conn, status)

    assert count_unfinished(engine) == 5
