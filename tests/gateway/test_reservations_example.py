"""The reservations example: the business row and its job commit together or not at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from examples.reservations import (
    EXPIRE_JOB_TYPE,
    SeatTaken,
    create_tables,
    hold_seats,
    reservations,
    reservations_app,
    seats,
)
from outbox import queries
from tests.gateway.jobs_in_db import job_count


def _count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


@pytest.fixture
def shop(engine: Engine) -> Engine:
    create_tables(engine)
    return engine


def test_a_committed_hold_leaves_exactly_one_expiry_job_due_when_the_hold_ends(
    shop: Engine,
) -> None:
    now = datetime(2031, 1, 1, 12, 0, tzinfo=UTC)
    with shop.begin() as conn:
        hold = hold_seats(conn, event_id="evt-1", seat_ids=["A-12", "A-13"],
                          hold_for=timedelta(minutes=10), now=now)  # fmt: skip
    assert job_count(shop) == 1
    with shop.connect() as conn:
        job = queries.get_job(conn, hold.expiry_job_id)
    assert job is not None
    assert (job.type, job.key, job.run_at) == (
        EXPIRE_JOB_TYPE, "event-evt-1", now + timedelta(minutes=10),
    )  # fmt: skip
    assert job.payload == {"reservation_id": hold.reservation_id, "event_id": "evt-1", "qty": 2,
                           "seat_ids": ["A-12", "A-13"]}  # fmt: skip


def test_a_failed_business_write_leaves_no_job(shop: Engine) -> None:
    with shop.begin() as conn:
        hold_seats(conn, event_id="evt-1", seat_ids=["A-13"], hold_for=timedelta(minutes=5))
    with pytest.raises(SeatTaken), shop.begin() as conn:
        # The job is added before the seat insert fails: the rollback must take it away too.
        hold_seats(conn, event_id="evt-1", seat_ids=["A-14", "A-13"], hold_for=timedelta(1))
    assert job_count(shop) == 1
    assert _count(shop, reservations) == 1
    assert _count(shop, seats) == 1


def test_the_http_endpoint_commits_one_job_per_hold_and_none_for_a_refused_one(
    shop: Engine,
) -> None:
    with TestClient(reservations_app(shop)) as client:
        held = client.post("/reservations", json={"event_id": "evt-2", "seat_ids": ["B-1"]})
        taken = client.post("/reservations", json={"event_id": "evt-2", "seat_ids": ["B-2", "B-1"]})
    assert (held.status_code, taken.status_code) == (201, 409)
    assert job_count(shop) == 1
    with shop.connect() as conn:
        job = queries.get_job(conn, held.json()["expiry_job_id"])
    assert job is not None
    assert job.payload["reservation_id"] == held.json()["reservation_id"]
    assert _count(shop, reservations) == 1
