"""Engines for the outbox database: one place that decides pool and driver options."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine


def create_engine(
    database_url: str, *, pool_size: int = 5, transaction_pooling: bool = False
) -> Engine:
    """An engine on psycopg 3 that checks connections before use (a restarted server is normal).

    Behind a transaction-pooling proxy, consecutive transactions may run on different server
    sessions, so psycopg must not prepare statements on one session and use them on another.
    """
    connect_args = {"prepare_threshold": None} if transaction_pooling else {}
    return sa.create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


def libpq_conninfo(database_url: str) -> str:
    """The URL in libpq's spelling, for raw psycopg connections (LISTEN needs one of its own)."""
    return (
        sa.make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
