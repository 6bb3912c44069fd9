"""Moving jobs through their states with the real core statements, as the relay and worker do."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from outbox import queries
from outbox.job_record import Lease
from outbox.schema import audit, jobs


def job_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one()


def audit_rows(engine: Engine) -> list[sa.Row[tuple[object, ...]]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(audit).order_by(audit.c.id)))


def claim(engine: Engine, job_id: str) -> Lease:
    with engine.begin() as conn:
        [claimed] = queries.claim_by_job_ids(
            conn, job_ids=[job_id], worker_id="w-1", lease=timedelta(seconds=30),
            default_max_attempts=3,
        )  # fmt: skip
    return Lease(claimed.id, claimed.lease_token)


def publish(engine: Engine, job_id: str, receipt: dict[str, object]) -> None:
    with engine.begin() as conn:
        record = queries.get_job(conn, job_id)
        assert record is not None
        queries.mark_published(conn, [queries.PublishReceipt(record.id, receipt)])


def complete(engine: Engine, job_id: str, result_json: str = '{"ok": true}') -> None:
    lease = claim(engine, job_id)
    with engine.begin() as conn:
        assert queries.mark_completed(conn, [queries.Completion(lease, result_json)])


def kill(engine: Engine, job_id: str, error: str = "boom") -> None:
    """Claim and dead-letter the job (a permanent error)."""
    lease = claim(engine, job_id)
    with engine.begin() as conn:
        assert queries.dead_letter(conn, lease, error=error)
