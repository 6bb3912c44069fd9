"""The reservations example's handlers, run by the container images' worker with
``outbox worker --handlers examples.reservations.handlers``.

``reservation.expired`` (enqueued by :func:`~examples.reservations.domain.hold_seats`, due when
the hold ends) releases a hold nobody confirmed: its seats become free and the reservation is
marked EXPIRED. Running it twice changes nothing the second time, as at-least-once delivery needs.

The example's tables live in the outbox database (``OUTBOX_DATABASE_URL``). The engine is built
on the first job, never at import time, and creates the example's tables if they are missing, so
the container images can run this module against a database that only ``outbox migrate`` touched.
Under the least-privilege roles of ``deploy/sql/roles.sql`` the worker's login may not create
tables: create them as the owner first and grant the worker SELECT, UPDATE and DELETE on them.
"""

from __future__ import annotations

import functools

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

import worker
from examples.reservations.domain import EXPIRE_JOB_TYPE, create_tables, reservations, seats
from outbox.database import create_engine
from outbox.settings import load_settings


def release_hold(conn: Connection, reservation_id: str) -> bool:
    """Free the seats of a reservation still HELD and mark it EXPIRED; False if it was not held.

    Runs in the caller's transaction and never commits.
    """
    expired = conn.execute(
        sa.update(reservations)
        .where(reservations.c.reservation_id == reservation_id, reservations.c.status == "HELD")
        .values(status="EXPIRED")
    )
    if expired.rowcount == 0:
        return False
    conn.execute(sa.delete(seats).where(seats.c.reservation_id == reservation_id))
    return True


@functools.cache
def example_engine() -> Engine:
    """The engine on OUTBOX_DATABASE_URL, built once, on first use, with the example's tables."""
    engine = create_engine(load_settings().database_url, pool_size=2)
    create_tables(engine)
    return engine


@worker.handler(EXPIRE_JOB_TYPE)
def expire_reservation(job: worker.Job) -> dict[str, object]:
    """Release the hold named in the job's payload (a reservation confirmed meanwhile stays)."""
    reservation_id = job.payload.get("reservation_id") if isinstance(job.payload, dict) else None
    if not isinstance(reservation_id, str):
        raise worker.PermanentError("payload has no reservation_id")
    with example_engine().begin() as conn:
        released = release_hold(conn, reservation_id)
    return {"reservation_id": reservation_id, "released": released}
