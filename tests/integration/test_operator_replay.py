"""`outbox replay` through the real relay to a real Redis: a same-id replay is a new stream entry
(its due time is new, so the publisher's dedup lets it through) and is claimable again; --as-new
enqueues new jobs that name the original in ``replay_of``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import gateway
from outbox import queries
from outbox.job_record import Lease
from outbox.schema import jobs
from relay.redis_publisher import RedisPublisher
from relay.relay_loop import Relay
from relay.routing import Router
from tests.jobs_on_disk import stored_job
from tests.operator_cli import audit_rows, invoke, statuses

pytestmark = pytest.mark.redis
LEASE = timedelta(seconds=30)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def relay(engine: Engine, redis_url: str, prefix: str) -> Iterator[Relay]:
    publisher = RedisPublisher(redis_url, stream_prefix=prefix)
    try:
        yield Relay(engine, publisher, Router("jobs"))
    finally:
        publisher.close()


def claim_and_complete(engine: Engine, job_ids: list[str]) -> None:
    """What a broker-fed worker does with a delivery: claim the row, run, complete."""
    with engine.begin() as conn:
        claimed = queries.claim_by_job_ids(
            conn, job_ids=job_ids, worker_id="w", lease=LEASE, default_max_attempts=3
        )
        completions = [queries.Completion(Lease(c.id, c.lease_token)) for c in claimed]
        assert len(queries.mark_completed(conn, completions)) == len(job_ids)


def enqueue(engine: Engine, *job_ids: str) -> None:
    with engine.begin() as conn:
        specs = [gateway.JobSpec("mail", {"to": j}, job_id=j, key="k") for j in job_ids]
        gateway.enqueue_many(conn, specs)


def test_a_same_id_replay_reaches_redis_again_and_is_claimable_again(
    database_url: str, engine: Engine, relay: Relay, redis_client: redis.Redis, prefix: str
) -> None:
    enqueue(engine, "a", "b", "c")
    assert relay.run_once().published == 3
    claim_and_complete(engine, ["a", "b"])  # c stays PUBLISHED: no worker took it yet

    preview = invoke(database_url, "replay", "--key", "k", "--reason", "consumer lost its db")
    assert "replay would take 3 jobs" in preview.stdout
    assert "Same job_id" in preview.stdout
    assert "--as-new" in preview.stdout
    assert statuses(engine, ["a", "b", "c"]) == ["COMPLETED", "COMPLETED", "PUBLISHED"]

    result = invoke(database_url, "replay", "--id", "a", "--id", "b", "--reason",
                    "consumer lost its db", "--yes")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "replay: changed 2 of 2 matched jobs in 1 audited batches" in result.stdout
    assert "Same job_id" in result.stdout
    replayed = stored_job(engine, "a")
    assert (replayed.status, replayed.attempts, replayed.result) == ("PENDING", 0, None)
    assert statuses(engine, ["c"]) == ["PUBLISHED"]

    assert relay.run_once().published == 2
    entries = redis_client.xrange(f"{prefix}jobs")
    assert [e[1]["job_id"] for e in entries] == ["a", "b", "c", "a", "b"]
    assert {e[1]["attempt"] for e in entries} == {"1"}  # fresh attempts: the dedup key's due
    assert statuses(engine, ["a", "b"]) == ["PUBLISHED", "PUBLISHED"]  # time made them new
    claim_and_complete(engine, ["a", "b"])  # a worker runs them again: the row decides
    [row] = audit_rows(engine)
    assert (row.action, row.count, row.filter["job_ids"]) == ("replay", 2, ["a", "b"])


def test_a_replay_to_another_topic_goes_to_that_stream(
    database_url: str, engine: Engine, relay: Relay, redis_client: redis.Redis, prefix: str
) -> None:
    enqueue(engine, "a")
    relay.run_once()
    result = invoke(database_url, "replay", "--id", "a", "--to-topic", "audit-copy",
                    "--reason", "r", "--yes")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert relay.run_once().published == 1
    assert [e[1]["job_id"] for e in redis_client.xrange(f"{prefix}audit-copy")] == ["a"]
    assert stored_job(engine, "a").topic == "audit-copy"


def test_replay_as_new_enqueues_copies_naming_the_original_and_keeps_it(
    database_url: str, engine: Engine, relay: Relay, redis_client: redis.Redis, prefix: str
) -> None:
    enqueue(engine, "a", "b")
    relay.run_once()
    claim_and_complete(engine, ["a"])
    result = invoke(database_url, "replay", "--key", "k", "--as-new", "--batch-size", "1",
                    "--reason", "rebuild the search index", "--yes")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "replay-as-new: created 2 of 2 matched jobs in 2 audited batches" in result.stdout
    assert statuses(engine, ["a", "b"]) == ["COMPLETED", "PUBLISHED"]
    with engine.connect() as conn:
        copies = conn.execute(
            sa.select(jobs).where(jobs.c.headers.has_key("replay_of")).order_by(jobs.c.id)
        ).all()
    assert [(c.headers["replay_of"], c.type, c.payload, c.key, c.status) for c in copies] == [
        ("a", "mail", {"to": "a"}, "k", "PENDING"), ("b", "mail", {"to": "b"}, "k", "PENDING"),
    ]  # fmt: skip
    assert not {c.job_id for c in copies} & {"a", "b"}
    assert [(r.action, r.count) for r in audit_rows(engine)] == [("replay-as-new", 1)] * 2

    assert relay.run_once().published == 2
    new_entries = redis_client.xrange(f"{prefix}jobs")[2:]
    assert [json.loads(e[1]["headers"])["replay_of"] for e in new_entries] == ["a", "b"]
    again = invoke(database_url, "replay", "--key", "k", "--as-new", "--reason", "r")
    assert "replay-as-new would take 4 jobs" in again.stdout  # copies are PUBLISHED now


def test_replay_leaves_jobs_that_were_never_published_or_are_live(
    database_url: str, engine: Engine
) -> None:
    enqueue(engine, "pending")
    result = invoke(database_url, "replay", "--id", "pending", "--reason", "r", "--yes")
    assert result.exit_code == 0, result.output
    assert "changed 0 of 0 matched" in result.stdout
    assert statuses(engine, ["pending"]) == ["PENDING"]
    assert audit_rows(engine) == []
