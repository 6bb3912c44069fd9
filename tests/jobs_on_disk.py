"""Test helpers that put job rows in any state directly, and read them back whole."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from outbox import queries
from outbox.job_record import JobRecord, Lease
from outbox.schema import jobs
from outbox.states import FINISHED_STATES, JobStatus

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
"""A fixed 'now' for tests that drive time through the ``now`` parameter."""


@dataclass(frozen=True)
class PlacedJob:
    id: int
    job_id: str
    lease_token: str | None


def place_job(
    conn: sa.Connection,
    status: JobStatus,
    *,
    attempts: int = 1,
    max_attempts: int | None = 3,
    run_at: datetime = T0 - timedelta(minutes=5),
    locked_until: datetime | None = None,
    **columns: Any,
) -> PlacedJob:
    """Insert one job already in ``status``, as the system would have left it there."""
    job_id = columns.pop("job_id", str(uuid.uuid4()))
    token = str(uuid.uuid4()) if status is JobStatus.PROCESSING else None
    values: dict[str, Any] = {
        "job_id": job_id,
        "type": "test.job",
        "payload": {"n": 1},
        "key": job_id,
        "status": status.value,
        "attempts": attempts,
        "max_attempts": max_attempts,
        "run_at": run_at,
        "created_at": T0 - timedelta(hours=1),
    }
    if status is JobStatus.PROCESSING:
        values |= {"locked_by": "worker-a", "lease_token": token,
                   "locked_until": locked_until or T0 - timedelta(seconds=1)}  # fmt: skip
    if status in FINISHED_STATES:
        values["finished_at"] = T0 - timedelta(days=30)
    values |= columns
    row_id = conn.execute(sa.insert(jobs).values(values).returning(jobs.c.id)).scalar_one()
    return PlacedJob(row_id, job_id, token)


def read_row(conn: sa.Connection, row_id: int) -> dict[str, Any] | None:
    row = conn.execute(sa.select(jobs).where(jobs.c.id == row_id)).mappings().first()
    return None if row is None else dict(row)


def status_of(conn: sa.Connection, row_id: int) -> JobStatus | None:
    row = read_row(conn, row_id)
    return None if row is None else JobStatus(row["status"])


def lease_of(job: PlacedJob) -> Lease:
    """The job's lease; a job not in PROCESSING has no token, so a fresh one stands in for
    whatever a caller holds."""
    return Lease(job.id, job.lease_token or str(uuid.uuid4()))


def stored_job(engine: Engine, job_id: str) -> JobRecord:
    """The job as it is on disk now; it must exist."""
    with engine.connect() as conn:
        record = queries.get_job(conn, job_id)
    assert record is not None, f"no job {job_id}"
    return record
