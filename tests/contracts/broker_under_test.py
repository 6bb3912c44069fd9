"""The brokers the publisher contract runs against, each behind one small interface.

A broker under test builds publishers on a real server, hands out fresh topics, and reads back
what the server holds as :class:`Record` values, the shape every broker shares. The contract
tests never branch on the broker except where the contract itself allows a difference
(:attr:`BrokerUnderTest.deduplicates`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import redis
from confluent_kafka import Consumer, Message, TopicPartition

from outbox.embedded_servers import free_port
from relay.kafka_publisher import KafkaPublisher
from relay.publisher import Publisher
from relay.redis_publisher import RedisPublisher
from tests.kafka_topics import DEADLINE_S, fresh_topic

# fresh_topic() has several partitions: a publisher dropping the key scatters a key's messages.
# After the expected count has arrived, one more fetch round for copies beyond it.
EXTRA_FETCH_S = 0.5


@dataclass(frozen=True)
class Record:
    """One message as a consumer reads it back; ``where`` names its place as a receipt does."""

    key: str
    headers: dict[str, str]
    payload: str
    job_id: str
    where: dict[str, Any]


class BrokerUnderTest(Protocol):
    """What the contract suite needs from each broker."""

    # Whether publishing the same (job_id, attempt) again adds nothing at the broker.
    deduplicates: bool

    def make_publisher(self, timeout_seconds: float = 10.0) -> Publisher: ...

    def make_unreachable_publisher(self, timeout_seconds: float) -> Publisher: ...

    def fresh_topic(self) -> str: ...

    def receipt_topic(self, receipt: Mapping[str, Any]) -> str:
        """The topic a receipt names (without any broker-side prefix)."""
        ...

    def read_back(self, topic: str, expected_count: int) -> list[Record]:
        """Everything in ``topic``, in broker order (Kafka: offset order per partition)."""
        ...

    def close(self) -> None: ...


class KafkaUnderTest:
    """The Kafka publisher on the session's Kafka-protocol broker."""

    deduplicates = False  # a new producer's resend is a new message; consumers drop the copy

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._publishers: list[Publisher] = []

    def make_publisher(self, timeout_seconds: float = 10.0) -> Publisher:
        return self._keep(KafkaPublisher(self._bootstrap, timeout_seconds=timeout_seconds))

    def make_unreachable_publisher(self, timeout_seconds: float) -> Publisher:
        address = f"127.0.0.1:{free_port()}"
        return self._keep(KafkaPublisher(address, timeout_seconds=timeout_seconds))

    def _keep(self, publisher: Publisher) -> Publisher:
        self._publishers.append(publisher)
        return publisher

    def fresh_topic(self) -> str:
        return fresh_topic(self._bootstrap)

    def receipt_topic(self, receipt: Mapping[str, Any]) -> str:
        return str(receipt["topic"])

    def read_back(self, topic: str, expected_count: int) -> list[Record]:
        consumer = Consumer({"bootstrap.servers": self._bootstrap,
                             "group.id": f"contract-{uuid.uuid4().hex}",  # assign() joins none
                             "enable.auto.commit": False})  # fmt: skip
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            received: list[Message] = []
            deadline = time.monotonic() + DEADLINE_S
            while len(received) < expected_count and time.monotonic() < deadline:
                received += _consume(consumer, timeout=0.5)
            received += _consume(consumer, timeout=EXTRA_FETCH_S)
        finally:
            consumer.close()
        received.sort(key=lambda m: (m.partition(), m.offset()))
        return [_kafka_record(m) for m in received]

    def close(self) -> None:
        for publisher in self._publishers:
            publisher.close()


def _consume(consumer: Consumer, *, timeout: float) -> list[Message]:
    messages: list[Message] = consumer.consume(num_messages=1000, timeout=timeout)
    assert all(m.error() is None for m in messages), [m.error() for m in messages]
    return messages


def _text(value: str | bytes | None) -> str:
    assert value is not None
    return value.decode() if isinstance(value, bytes) else value


def _kafka_record(message: Message) -> Record:
    pairs = message.headers() or []
    # A consumed message carries a list (names may repeat); the dict form is for producing.
    assert isinstance(pairs, list), pairs
    headers = {name: _text(value) for name, value in pairs}
    assert len(headers) == len(pairs), f"a header name is repeated: {pairs}"
    return Record(
        key=_text(message.key()),
        headers=headers,
        payload=_text(message.value()),
        job_id=headers.get("job_id", ""),
        where={"topic": message.topic(), "partition": message.partition(),
               "offset": message.offset()},
    )  # fmt: skip


class RedisUnderTest:
    """The Redis publisher on the session's Redis, under a key prefix of this test's own."""

    deduplicates = True  # the dedup key answers a resend with the first entry's id

    def __init__(self, url: str) -> None:
        self._url = url
        self._prefix = f"contract:{uuid.uuid4().hex}:"
        self._client = redis.Redis.from_url(url, decode_responses=True)
        self._publishers: list[Publisher] = []

    def make_publisher(self, timeout_seconds: float = 10.0) -> Publisher:
        return self._build(self._url, timeout_seconds)

    def make_unreachable_publisher(self, timeout_seconds: float) -> Publisher:
        return self._build(f"redis://127.0.0.1:{free_port()}/0", timeout_seconds)

    def _build(self, url: str, timeout_seconds: float) -> Publisher:
        publisher = RedisPublisher(url, stream_prefix=self._prefix, dedup_ttl_seconds=3600,
                                   timeout_seconds=timeout_seconds)  # fmt: skip
        self._publishers.append(publisher)
        return publisher

    def fresh_topic(self) -> str:
        return f"contract-{uuid.uuid4().hex}"

    def receipt_topic(self, receipt: Mapping[str, Any]) -> str:
        stream = str(receipt["stream"])
        assert stream.startswith(self._prefix), f"{stream} is outside {self._prefix}"
        return stream.removeprefix(self._prefix)

    def read_back(self, topic: str, expected_count: int) -> list[Record]:
        # XADD has returned before the publisher does, so the stream is complete already.
        stream = self._prefix + topic
        entries = cast(list[tuple[str, dict[str, str]]], self._client.xrange(stream))
        return [_redis_record(stream, entry_id, fields) for entry_id, fields in entries]

    def close(self) -> None:
        for publisher in self._publishers:
            publisher.close()
        keys = list(self._client.scan_iter(match=f"{self._prefix}*", count=1000))
        if keys:
            self._client.delete(*keys)
        self._client.close()


def _redis_record(stream: str, entry_id: str, fields: dict[str, str]) -> Record:
    # A consumer rebuilds the headers as Kafka carries them: the job's own, then the top-level
    # job_id, type and attempt fields.
    authoritative: dict[str, str] = {
        name: fields[name] for name in ("job_id", "type", "attempt") if name in fields
    }
    return Record(
        key=fields.get("key", ""),
        headers={**json.loads(fields.get("headers", "{}")), **authoritative},
        payload=fields.get("payload", ""),
        job_id=fields.get("job_id", ""),
        where={"stream": stream, "entry_id": entry_id},
    )
