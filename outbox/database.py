"""Engines for the outbox database: one place that decides pool and driver options."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

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


def execute_autocommit(database_url: str, *statements: str) -> None:
    """Run statements outside any transaction (CREATE or DROP DATABASE, ANALYZE, CHECKPOINT) on
    a connection of their own; the benchmarks and the tests make their databases with it."""
    engine = sa.create_engine(
        database_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def libpq_conninfo(database_url: str) -> str:
    """The URL in libpq's spelling, for raw psycopg connections (LISTEN needs one of its own)."""
    return (
        sa.make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


class HeldConnection:
    """One autocommit connection a hot loop keeps between its statements.

    A pooled ``engine.begin()`` costs three round trips besides the statement: the pre-ping,
    BEGIN and COMMIT. A single guarded statement (a claim, a batch of completions) is atomic on
    its own, so the worker's claim loop and outcome writer run theirs on a connection held in
    autocommit: one round trip each, and psycopg's prepared statements stay on it. After any
    error the connection is dropped; the next use checks a fresh one out of the pool, pinged.
    One thread uses a held connection.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: sa.Connection | None = None

    @contextmanager
    def use(self) -> Iterator[sa.Connection]:
        if self._connection is None:
            connection = self._engine.connect()
            self._connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        try:
            yield self._connection
            self._connection.commit()  # ends SQLAlchemy's bookkeeping; autocommit sends nothing
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Give the connection back (the pool discards it if the error invalidated it)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with suppress(sa.exc.SQLAlchemyError):
                connection.close()
