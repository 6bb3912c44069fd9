"""A seat-reservation service (seed 004) that writes its reservation and the job that will expire
it in one transaction, through ``gateway.enqueue``: if the reservation fails, no job exists.

Its tables belong to the example, not to the outbox migrations: ``create_tables(engine)``.
"""

from examples.reservations.domain import (
    EXPIRE_JOB_TYPE,
    Hold,
    SeatTaken,
    create_tables,
    hold_seats,
    reservations,
    seats,
)
from examples.reservations.http import reservations_app

__all__ = [
    "EXPIRE_JOB_TYPE",
    "Hold",
    "SeatTaken",
    "create_tables",
    "hold_seats",
    "reservations",
    "reservations_app",
    "seats",
]
