"""The reservation domain: hold seats for an event, and schedule the hold's expiry as a job."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

import gateway

EXPIRE_JOB_TYPE = "reservation.expired"

metadata = sa.MetaData()

reservations = sa.Table(
    "reservations",
    metadata,
    sa.Column("reservation_id", sa.Text, primary_key=True),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("qty", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="HELD"),
    sa.Column("expires_at", sa.TIMESTAMP(timezone=True), nullable=False),
)

# One row per held seat: the primary key is what makes a seat impossible to hold twice.
seats = sa.Table(
    "reservation_seats",
    metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("seat_id", sa.Text, primary_key=True),
    sa.Column(
        "reservation_id", sa.Text, sa.ForeignKey(reservations.c.reservation_id), nullable=False
    ),
)


class SeatTaken(Exception):
    """A seat asked for is held already; the caller's transaction must be rolled back."""


@dataclass(frozen=True)
class Hold:
    reservation_id: str
    event_id: str
    seat_ids: tuple[str, ...]
    expires_at: datetime
    expiry_job_id: str


def create_tables(engine: Engine) -> None:
    """The example's own tables (the outbox migrations know nothing of them)."""
    metadata.create_all(engine)


def hold_seats(
    conn: Connection,
    *,
    event_id: str,
    seat_ids: Sequence[str],
    hold_for: timedelta,
    now: datetime | None = None,
) -> Hold:
    """Hold seats, in the caller's open transaction, with the job that releases them later.

    The job is added before the seats on purpose: when a seat is taken, the failing insert
    takes the already-written job down with it. Never commits.
    """
    reservation_id = f"rsv_{uuid.uuid4().hex[:12]}"
    expires_at = (now or datetime.now(UTC)) + hold_for
    conn.execute(
        sa.insert(reservations).values(
            reservation_id=reservation_id, event_id=event_id, qty=len(seat_ids),
            expires_at=expires_at,
        )
    )  # fmt: skip
    job_id = gateway.enqueue(
        conn,
        EXPIRE_JOB_TYPE,
        {"reservation_id": reservation_id, "event_id": event_id, "qty": len(seat_ids),
         "seat_ids": list(seat_ids)},
        job_id=f"expire-{reservation_id}",
        key=f"event-{event_id}",  # one event's jobs run in order
        run_at=expires_at,
    )  # fmt: skip
    held = [
        {"event_id": event_id, "seat_id": s, "reservation_id": reservation_id} for s in seat_ids
    ]
    try:
        conn.execute(sa.insert(seats), held)
    except sa.exc.IntegrityError:
        raise SeatTaken(f"one of {list(seat_ids)} is held already for {event_id}") from None
    return Hold(reservation_id, event_id, tuple(seat_ids), expires_at, job_id)
