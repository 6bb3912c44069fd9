"""The relay on Redis Streams: a re-publish of the same attempt adds no second entry."""

from __future__ import annotations

import uuid

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import gateway
from outbox import queries
from outbox.schema import jobs
from relay.redis_publisher import RedisPublisher
from relay.relay_loop import Relay
from relay.routing import Router

pytestmark = pytest.mark.redis


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


def test_republishing_after_a_lost_mark_adds_no_entry_and_keeps_the_receipt(
    engine: Engine, redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    publisher = RedisPublisher(redis_url, stream_prefix=prefix)
    relay = Relay(engine, publisher, Router("jobs"))
    with engine.begin() as conn:
        job_ids = gateway.enqueue_many(
            conn, [gateway.JobSpec("t", {"i": i}, key="k") for i in range(10)]
        )
    try:
        assert relay.run_once().published == 10
        with engine.connect() as conn:
            first = [r.publish_receipt for r in (queries.get_job(conn, j) for j in job_ids) if r]
        with engine.begin() as conn:  # as if the relay died after the broker acked, before commit
            conn.execute(sa.update(jobs).values(status="PENDING", publish_receipt=None))
        assert relay.run_once().published == 10
    finally:
        publisher.close()

    stream = f"{prefix}jobs"
    assert redis_client.xlen(stream) == 10
    with engine.connect() as conn:
        again = [r.publish_receipt for r in (queries.get_job(conn, j) for j in job_ids) if r]
    assert again == first
    entries = redis_client.xrange(stream)
    assert [e[1]["job_id"] for e in entries] == job_ids  # one key's jobs in id order
    assert {e[1]["attempt"] for e in entries} == {"1"}
