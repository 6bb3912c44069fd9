"""``outbox relay`` killed (SIGKILL) at each crash point, then restarted: nothing lost.

The failpoints (``OUTBOX_FAILPOINTS``) kill the process at an exact line. Afterwards every job
is published, Redis holds no duplicate, and Kafka's only duplicates are the batch that was in
flight, each copy carrying its job's ``job_id``. A second scenario kills one of two relays and
times how long its shards take to find a new owner.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import gateway
from outbox.schema import jobs
from relay.shards import SHARD_LOCK_CLASS
from tests.kafka_topics import consume_all, consume_exactly, fresh_topic, topic_partitions
from tests.waiting import wait_until

OUTBOX = str(Path(sys.executable).parent / "outbox")
JOBS = 30
BATCH = 10


@dataclass
class Broker:
    name: str
    env: dict[str, str]
    topic: str


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("kafka", marks=pytest.mark.kafka)])  # fmt: skip
def broker(request: pytest.FixtureRequest) -> Broker:
    if request.param == "redis":
        prefix = f"c{uuid.uuid4().hex[:8]}:"
        url = request.getfixturevalue("redis_url")
        env = {"OUTBOX_BROKER": "redis", "OUTBOX_REDIS_URL": url,
               "OUTBOX_REDIS_STREAM_PREFIX": prefix}  # fmt: skip
        return Broker("redis", env, "jobs")
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    env = {"OUTBOX_BROKER": "kafka", "OUTBOX_KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    return Broker("kafka", env, fresh_topic(bootstrap))


def relay_env(database_url: str, broker: Broker, **extra: str) -> dict[str, str]:
    return (
        os.environ
        | broker.env
        | {
            "OUTBOX_DATABASE_URL": database_url,
            "OUTBOX_DEFAULT_TOPIC": broker.topic,
            "OUTBOX_RELAY_BATCH_SIZE": str(BATCH),
            "OUTBOX_POLL_INTERVAL_SECONDS": "0.1",
            "OUTBOX_PROBE_PORT": "0",
            **extra,
        }
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def start_relay(
    started: list[subprocess.Popen[bytes]], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([OUTBOX, "relay"], env=env, stderr=subprocess.DEVNULL)
    started.append(process)
    return process


def count_by_status(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(dict(conn.execute(
            sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
        ).all()))  # fmt: skip


def job_ids_at_broker(broker: Broker, expected: int) -> list[str]:
    """Every message's ``job_id`` as the broker holds it; exactly ``expected`` of them."""
    if broker.name == "redis":
        client = redis.Redis.from_url(broker.env["OUTBOX_REDIS_URL"], decode_responses=True)
        try:
            entries = client.xrange(broker.env["OUTBOX_REDIS_STREAM_PREFIX"] + broker.topic)
        finally:
            client.close()
        assert len(entries) == expected
        return [fields["job_id"] for _, fields in entries]
    bootstrap = broker.env["OUTBOX_KAFKA_BOOTSTRAP_SERVERS"]
    partitions = topic_partitions(bootstrap, broker.topic)
    messages = consume_exactly(bootstrap, broker.topic, partitions, expected)
    return [dict(m.headers() or [])["job_id"].decode() for m in messages]


# (failpoint, rows PUBLISHED after the crash, Kafka copies of the batch in flight)
CRASH_POINTS = [
    ("relay.after_publish", 0, BATCH),  # acked, never marked: the batch goes out again
    ("relay.after_mark", 0, BATCH),  # marked, never committed: the same
    ("relay.after_commit", BATCH, 0),  # committed: nothing to redo
]


@pytest.mark.parametrize(("failpoint", "published_at_crash", "kafka_duplicates"), CRASH_POINTS)
def test_a_relay_killed_at_a_crash_point_loses_nothing_and_duplicates_only_the_batch_in_flight(
    engine: Engine,
    database_url: str,
    broker: Broker,
    processes: list[subprocess.Popen[bytes]],
    failpoint: str,
    published_at_crash: int,
    kafka_duplicates: int,
) -> None:
    with engine.begin() as conn:
        job_ids = gateway.enqueue_many(conn, [gateway.JobSpec("t", {"i": i}) for i in range(JOBS)])

    crashing = start_relay(processes, relay_env(database_url, broker,
                                                OUTBOX_FAILPOINTS=f"{failpoint}=kill"))  # fmt: skip
    assert crashing.wait(30) == -signal.SIGKILL
    # Counters compare missing states as zero.
    expected = Counter({"PENDING": JOBS - published_at_crash, "PUBLISHED": published_at_crash})
    assert count_by_status(engine) == expected

    start_relay(processes, relay_env(database_url, broker))
    assert wait_until(lambda: count_by_status(engine) == Counter({"PUBLISHED": JOBS}), timeout=30)

    duplicates = kafka_duplicates if broker.name == "kafka" else 0
    copies = Counter(job_ids_at_broker(broker, JOBS + duplicates))
    assert set(copies) == set(job_ids)  # nothing lost, nothing foreign
    assert sum(n - 1 for n in copies.values()) == duplicates


@pytest.mark.kafka
def test_a_relay_killed_between_produce_and_delivery_report_loses_nothing(
    engine: Engine, database_url: str, kafka_bootstrap: str,
    processes: list[subprocess.Popen[bytes]],
) -> None:  # fmt: skip
    """librdkafka may or may not have sent the batch when the process dies: at most one batch of
    copies, never a loss, and nothing marked PUBLISHED before a delivery report."""
    env = {"OUTBOX_BROKER": "kafka", "OUTBOX_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    broker = Broker("kafka", env, fresh_topic(kafka_bootstrap))
    with engine.begin() as conn:
        job_ids = gateway.enqueue_many(conn, [gateway.JobSpec("t", {"i": i}) for i in range(JOBS)])
    killed_there = relay_env(database_url, broker, OUTBOX_FAILPOINTS="relay.after_produce=kill")
    crashing = start_relay(processes, killed_there)
    assert crashing.wait(30) == -signal.SIGKILL
    assert count_by_status(engine) == Counter({"PENDING": JOBS})

    start_relay(processes, relay_env(database_url, broker))
    assert wait_until(lambda: count_by_status(engine) == Counter({"PUBLISHED": JOBS}), timeout=30)
    copies = Counter(dict(m.headers() or [])["job_id"].decode()
                     for m in consume_all(kafka_bootstrap, broker.topic))  # fmt: skip
    assert set(copies) == set(job_ids)  # nothing lost, nothing foreign
    assert sum(n - 1 for n in copies.values()) <= BATCH


@pytest.mark.redis
def test_the_shards_of_a_killed_relay_are_taken_over_within_seconds(
    engine: Engine, database_url: str, redis_url: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    prefix = f"s{uuid.uuid4().hex[:8]}:"
    broker = Broker("redis", {"OUTBOX_BROKER": "redis", "OUTBOX_REDIS_URL": redis_url,
                              "OUTBOX_REDIS_STREAM_PREFIX": prefix}, "jobs")  # fmt: skip
    env = relay_env(database_url, broker, OUTBOX_RELAY_SHARDS="8")
    relays = [start_relay(processes, env) for _ in range(2)]

    def shards_by_pid() -> Counter[int]:
        with engine.connect() as conn:
            return Counter(conn.execute(sa.text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid = CAST(:c AS bigint)::oid"
            ), {"c": SHARD_LOCK_CLASS}).scalars())  # fmt: skip

    assert wait_until(lambda: sorted(shards_by_pid().values()) == [4, 4], timeout=20)
    with engine.begin() as conn:
        first = gateway.enqueue_many(
            conn, [gateway.JobSpec("t", {}, key=f"k{i}") for i in range(JOBS)]
        )
    assert wait_until(lambda: count_by_status(engine) == Counter({"PUBLISHED": JOBS}), timeout=20)

    relays[0].kill()
    killed_at = time.monotonic()
    assert wait_until(lambda: list(shards_by_pid().values()) == [8], timeout=20)
    takeover_seconds = time.monotonic() - killed_at
    assert takeover_seconds < 5

    with engine.begin() as conn:
        second = gateway.enqueue_many(
            conn, [gateway.JobSpec("t", {}, key=f"k{i}") for i in range(JOBS)]
        )
    assert wait_until(lambda: count_by_status(engine) == Counter({"PUBLISHED": 2 * JOBS}), 20)
    assert sorted(job_ids_at_broker(broker, 2 * JOBS)) == sorted(first + second)
    assert relays[1].poll() is None
