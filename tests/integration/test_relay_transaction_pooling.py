"""Behind a transaction-pooling proxy a relay must leave nothing on the server session.

PgBouncer in ``pool_mode=transaction`` gives the next transaction of any client whichever
server session is free, so anything a relay leaves on a session (an advisory lock, a prepared
statement) lands on another client. Each test runs the relay both ways: with session state
allowed, the state is there (so the check can see it), and with transaction pooling, it is not.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import gateway
from outbox.cli.services import listen_conninfo
from outbox.database import create_engine
from outbox.schema import jobs
from outbox.settings import Settings
from relay.relay_loop import Relay
from relay.routing import Router
from relay.shards import SHARD_LOCK_CLASS
from tests.acking_publisher import AckingPublisher

SHARDS = 8


@pytest.fixture(params=[False, True], ids=["session", "transaction-pooling"])
def relay(request: pytest.FixtureRequest, database_url: str) -> Iterator[Relay]:
    transaction_pooling: bool = request.param
    engine = create_engine(database_url, pool_size=1, transaction_pooling=transaction_pooling)
    relay = Relay(
        engine,
        AckingPublisher(),
        Router("jobs"),
        batch_size=10,
        shard_count=SHARDS,
        transaction_pooling=transaction_pooling,
    )
    yield relay
    relay.close()
    engine.dispose()


def pooled(relay: Relay) -> bool:
    return relay._batch_locks is not None


def enqueue(engine: Engine, count: int) -> None:
    with engine.begin() as conn:
        gateway.enqueue_many(
            conn, [gateway.JobSpec("t", {"n": n}, key=f"k{n}") for n in range(count)]
        )


def shard_locks_held(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_locks"
                " WHERE locktype = 'advisory' AND classid = CAST(:c AS bigint)::oid"
            ),
            {"c": SHARD_LOCK_CLASS},
        ).scalar_one()


def test_no_shard_lock_outlives_a_batch_behind_transaction_pooling(
    relay: Relay, engine: Engine
) -> None:
    enqueue(engine, 25)
    for _ in range(4):
        relay.run_once()
    with engine.connect() as conn:
        published = conn.execute(
            sa.select(sa.func.count()).where(jobs.c.status == "PUBLISHED")
        ).scalar_one()
    assert published == 25
    assert shard_locks_held(engine) == (0 if pooled(relay) else SHARDS)


def test_no_statement_is_prepared_on_the_server_behind_transaction_pooling(
    relay: Relay, engine: Engine
) -> None:
    # psycopg prepares a statement on the server after its fifth execution on a session.
    for _ in range(8):
        enqueue(engine, 3)
        relay.run_once()
    prepared = (
        relay._connection()
        .exec_driver_sql("SELECT count(*) FROM pg_prepared_statements")
        .scalar_one()
    )
    relay.close()
    assert (prepared == 0) == pooled(relay)


@pytest.mark.parametrize("transaction_pooling", [False, True])
def test_services_poll_instead_of_listening_behind_transaction_pooling(
    transaction_pooling: bool,
) -> None:
    settings = Settings(
        database_url="postgresql+psycopg://u@db/outbox", transaction_pooling=transaction_pooling
    )
    assert (listen_conninfo(settings) is None) == transaction_pooling
