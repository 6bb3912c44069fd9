"""The session's brokers are real servers that do what the relay and worker will rely on.

Kafka: the ``kafka_bootstrap`` fixture (tansu, memory only, unless OUTBOX_TEST_KAFKA_BOOTSTRAP).
Tansu's watermarks are wrong for multi-record batches, so these tests count messages instead.
Redis: the ``redis_url`` fixture.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator

import pytest
import redis
from confluent_kafka import KafkaError, Message, Producer

from tests.kafka_topics import (
    DEADLINE_S,
    PARTITIONS,
    consume_exactly,
    fresh_topic,
    topic_partitions,
)

MESSAGES = 200
KEYS = 20


@pytest.mark.kafka
def test_idempotent_producer_round_trips_keys_and_headers(kafka_bootstrap: str) -> None:
    topic = fresh_topic(kafka_bootstrap)
    partitions = topic_partitions(kafka_bootstrap, topic)
    assert partitions == list(range(PARTITIONS))

    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
    )
    reports: list[tuple[KafkaError | None, Message]] = []
    sent: dict[str, tuple[str, int]] = {}  # job_id -> (key, sequence number within its key)
    for i in range(MESSAGES):
        key = f"key-{i % KEYS}"
        job_id = str(uuid.uuid4())
        sent[job_id] = (key, i // KEYS)
        producer.produce(
            topic,
            key=key.encode(),
            value=f"{i // KEYS}".encode(),
            headers=[("job_id", job_id.encode()), ("type", b"harness.ping")],
            on_delivery=lambda err, msg: reports.append((err, msg)),
        )
    assert producer.flush(DEADLINE_S) == 0, "messages still queued after flush"

    assert len(reports) == MESSAGES
    assert [err for err, _ in reports if err is not None] == []
    delivered_partition: dict[str, set[int]] = defaultdict(set)
    for _, msg in reports:
        delivered_partition[msg.key().decode()].add(msg.partition())

    received = consume_exactly(kafka_bootstrap, topic, partitions, MESSAGES)

    received_job_ids: list[str] = []
    consumed_partition: dict[str, set[int]] = defaultdict(set)
    sequences: dict[str, list[int]] = defaultdict(list)
    for msg in sorted(received, key=lambda m: (m.partition(), m.offset())):
        headers = dict(msg.headers() or [])
        assert set(headers) == {"job_id", "type"}
        job_id = headers["job_id"].decode()
        assert headers["type"] == b"harness.ping"
        key = msg.key().decode()
        assert sent[job_id] == (key, int(msg.value()))
        received_job_ids.append(job_id)
        consumed_partition[key].add(msg.partition())
        sequences[key].append(int(msg.value()))

    assert sorted(received_job_ids) == sorted(sent), "lost or duplicated messages"
    # The same key always lands on the same partition, as the producer was told...
    assert all(len(p) == 1 for p in delivered_partition.values()), delivered_partition
    assert consumed_partition == delivered_partition
    # ...the keys are really spread (a one-partition topic would make the check above vacuous)...
    assert len(set().union(*consumed_partition.values())) > 1
    # ...and within a key the idempotent producer kept the order it was given.
    assert all(seq == list(range(MESSAGES // KEYS)) for seq in sequences.values()), sequences


@pytest.mark.kafka
def test_a_message_produced_to_an_unknown_topic_can_be_read_back(kafka_bootstrap: str) -> None:
    # Tansu creates topics on first produce; the relay must not depend on that, but the harness
    # may, and real Kafka does it too by default.
    topic = f"harness-auto-{uuid.uuid4().hex}"
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    reports: list[KafkaError | None] = []
    producer.produce(topic, key=b"k", value=b"v", on_delivery=lambda err, _: reports.append(err))
    assert producer.flush(DEADLINE_S) == 0
    assert reports == [None]

    received = consume_exactly(
        kafka_bootstrap, topic, topic_partitions(kafka_bootstrap, topic), count=1
    )
    assert (received[0].key(), received[0].value()) == (b"k", b"v")


ENQUEUE_ONCE = """
-- KEYS[1]: dedup key, KEYS[2]: stream; ARGV: job_id, ttl seconds, type, payload
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return redis.call('XADD', KEYS[2], '*', 'job_id', ARGV[1], 'type', ARGV[3], 'payload', ARGV[4])
end
return false
"""


@pytest.fixture
def namespace(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"harness:{uuid.uuid4().hex}"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}:*"))
    if keys:
        redis_client.delete(*keys)


@pytest.mark.redis
def test_lua_dedup_script_adds_a_job_to_the_stream_only_once(
    redis_client: redis.Redis, namespace: str
) -> None:
    stream = f"{namespace}:jobs"
    enqueue_once = redis_client.register_script(ENQUEUE_ONCE)

    def enqueue(job_id: str) -> str | None:
        dedup_key = f"{namespace}:dedup:{job_id}"
        return enqueue_once(keys=[dedup_key, stream], args=[job_id, 3600, "harness.ping", "{}"])

    first = enqueue("job-1")
    second = enqueue("job-1")

    assert first is not None
    assert second is None
    assert redis_client.xlen(stream) == 1
    [(entry_id, fields)] = redis_client.xrange(stream)
    assert entry_id == first
    assert fields == {"job_id": "job-1", "type": "harness.ping", "payload": "{}"}
    assert 0 < redis_client.ttl(f"{namespace}:dedup:job-1") <= 3600

    # A different job id is not caught by the first one's dedup key.
    assert enqueue("job-2") is not None
    assert redis_client.xlen(stream) == 2


@pytest.mark.redis
def test_consumer_group_reads_and_acknowledges_a_stream_entry(
    redis_client: redis.Redis, namespace: str
) -> None:
    stream = f"{namespace}:jobs"
    group = "workers"
    assert redis_client.xgroup_create(stream, group, id="0", mkstream=True)
    entry_id = redis_client.xadd(stream, {"job_id": "job-1", "type": "harness.ping"})

    # BLOCK waits for the entry with a deadline; it is already there, so this returns at once.
    response = redis_client.xreadgroup(group, "worker-1", {stream: ">"}, count=10, block=5000)

    assert response == [[stream, [(entry_id, {"job_id": "job-1", "type": "harness.ping"})]]]
    assert redis_client.xpending(stream, group)["pending"] == 1
    # Delivered entries are not handed out again to the group.
    assert redis_client.xreadgroup(group, "worker-2", {stream: ">"}, count=10) == []

    assert redis_client.xack(stream, group, entry_id) == 1
    assert redis_client.xpending(stream, group)["pending"] == 0
    assert redis_client.xack(stream, group, entry_id) == 0
