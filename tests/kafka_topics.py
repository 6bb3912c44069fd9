"""Kafka topics of one test: create one, and read back exactly what reached it."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 4
DEADLINE_S = 20.0


def fresh_topic(bootstrap: str, partitions: int = PARTITIONS) -> str:
    """Create a topic of its own for one test and return its name."""
    name = f"harness-{uuid.uuid4().hex}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)], operation_timeout=10
    )
    futures[name].result(timeout=DEADLINE_S)
    return name


def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        metadata = admin.list_topics(topic=topic, timeout=5)
        found = metadata.topics.get(topic)
        if found is not None and found.error is None and found.partitions:
            return sorted(found.partitions)
    pytest.fail(f"topic {topic} has no partitions after {DEADLINE_S} s")


def consume_exactly(bootstrap: str, topic: str, partitions: list[int], count: int) -> list[Message]:
    """Read ``count`` messages from offset 0 of every partition, then check none follow."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            # The client wants a group id; assign() never joins the group.
            "group.id": f"harness-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        received: list[Message] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(received) < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=count, timeout=0.5):
                assert message.error() is None, message.error()
                received.append(message)
        assert len(received) == count, f"got {len(received)} of {count} in {DEADLINE_S} s"
        # Anything more would be a duplicate; give it one fetch round to show up.
        extra = [m for m in consumer.consume(num_messages=count, timeout=1.0) if m.error() is None]
        assert extra == []
        return received
    finally:
        consumer.close()


def consume_all(bootstrap: str, topic: str, *, quiet_seconds: float = 2.0) -> list[Message]:
    """Every message from offset 0 of every partition, read until none came for a while."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"all-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in topic_partitions(bootstrap, topic)])
        received: list[Message] = []
        while batch := consumer.consume(num_messages=1000, timeout=quiet_seconds):
            received += [m for m in batch if m.error() is None]
        return received
    finally:
        consumer.close()
