"""The database goes away under a running relay: it backs off, reconnects, and carries on.

"Down" here is the relay's database refusing connections and every session on it killed, the
way a restart or a failover looks from the client: the relay's batch connection breaks and the
reconnects are refused until the database is back.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import gateway
from outbox.backoff import BackoffPolicy
from outbox.database import create_engine
from outbox.schema import jobs
from relay.relay_loop import Relay
from relay.routing import Router
from tests.acking_publisher import AckingPublisher
from tests.waiting import wait_until

BACKOFF = BackoffPolicy(base_seconds=0.2, cap_seconds=1.0, jitter_seconds=0.0)


class OutageWarnings(logging.Handler):
    """Counts the relay's "database unavailable" warnings, one per failed round."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("database unavailable"):
            self.times.append(time.monotonic())


@pytest.fixture
def outage_warnings() -> Iterator[OutageWarnings]:
    handler = OutageWarnings()
    logger = logging.getLogger("relay.relay_loop")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def published(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(jobs.c.status == "PUBLISHED")
        ).scalar_one()


def enqueue(engine: Engine, count: int) -> None:
    with engine.begin() as conn:
        gateway.enqueue_many(conn, [gateway.JobSpec("t", {"n": n}) for n in range(count)])


def set_database_up(postgres_admin_url: str, database: str, up: bool) -> None:
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"ALTER DATABASE {database} ALLOW_CONNECTIONS {str(up).lower()}")
        if not up:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"
                ),
                {"d": database},
            )
    admin.dispose()


def test_the_relay_backs_off_while_the_database_is_down_and_publishes_once_it_is_back(
    database_url: str, postgres_admin_url: str, outage_warnings: OutageWarnings
) -> None:
    database = sa.make_url(database_url).database
    assert database is not None
    writer = create_engine(database_url)
    relay_engine = create_engine(database_url, pool_size=1)
    relay = Relay(
        relay_engine, AckingPublisher(), Router("jobs"), poll_interval=0.05, outage_backoff=BACKOFF
    )
    thread = threading.Thread(target=relay.run)
    thread.start()
    try:
        enqueue(writer, 10)
        assert wait_until(lambda: published(writer) == 10)

        set_database_up(postgres_admin_url, database, up=False)
        writer.dispose()
        assert wait_until(lambda: len(outage_warnings.times) >= 4, timeout=15)
        gaps = [b - a for a, b in itertools.pairwise(outage_warnings.times)]
        # Backoff, not a busy loop: the waits grow 0.2, 0.4, 0.8 s (no jitter here).
        assert gaps[0] >= 0.15, gaps
        assert gaps[2] >= 0.6, gaps
        assert thread.is_alive()

        set_database_up(postgres_admin_url, database, up=True)
        enqueue(writer, 20)
        assert wait_until(lambda: published(writer) == 30, timeout=15)
        assert relay.ownership.owns_all
    finally:
        set_database_up(postgres_admin_url, database, up=True)
        relay.stop()
        thread.join(10)
        writer.dispose()
        relay_engine.dispose()
    assert not thread.is_alive()
