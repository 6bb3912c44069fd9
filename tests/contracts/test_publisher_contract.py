"""Every publisher keeps the Publisher contract, checked on the real servers (River's driver suite).

Each test runs once per broker (see ``broker``); what differs between brokers lives in
``broker_under_test``, and the one difference the contract allows is resending the same attempt.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence

import pytest

from relay.publisher import Delivery, OutgoingMessage
from tests.contracts.broker_under_test import (
    BrokerUnderTest,
    KafkaUnderTest,
    Record,
    RedisUnderTest,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(
    params=[
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerUnderTest]:
    """One broker under test; its server fixture is started only when its param runs."""
    under_test: BrokerUnderTest
    if request.param == "kafka":
        under_test = KafkaUnderTest(request.getfixturevalue("kafka_bootstrap"))
    else:
        under_test = RedisUnderTest(request.getfixturevalue("redis_url"))
    yield under_test
    under_test.close()


def messages(topics: Sequence[str], count: int, *, keys: int = 5) -> list[OutgoingMessage]:
    """``count`` messages, round-robin over ``topics`` and ``keys``, attempts 1 to 3.

    Row ids descend, so a publisher that answers in id order rather than batch order fails.
    """
    return [
        OutgoingMessage(
            id=1_000_000 - i,
            job_id=str(uuid.uuid4()),
            type="orders.created",
            key=f"customer-{i % keys}",
            topic=topics[i % len(topics)],
            payload_json=json.dumps({"n": i, "note": "café ✓"}, ensure_ascii=False),
            attempt=1 + i % 3,
            headers={"traceparent": TRACEPARENT, "tenant": "acme"},
        )
        for i in range(count)
    ]


def acked(deliveries: list[Delivery], batch: Sequence[OutgoingMessage]) -> list[Delivery]:
    """Check one acked delivery per message, in batch order; return them."""
    assert [d.id for d in deliveries] == [m.id for m in batch]
    assert [(d.error, d.acked) for d in deliveries] == [(None, True)] * len(batch), deliveries
    return deliveries


def by_job_id(records: list[Record]) -> dict[str, Record]:
    found = {r.job_id: r for r in records}
    assert len(found) == len(records), "a job was read back twice"
    return found


def test_each_message_gets_an_acked_delivery_in_order_naming_where_it_went(
    broker: BrokerUnderTest,
) -> None:
    topics = [broker.fresh_topic(), broker.fresh_topic()]
    batch = messages(topics, 30)

    deliveries = acked(broker.make_publisher().publish(batch), batch)

    records = {t: by_job_id(broker.read_back(t, 15)) for t in topics}
    for message, delivery in zip(batch, deliveries, strict=True):
        assert delivery.receipt is not None
        assert broker.receipt_topic(delivery.receipt) == message.topic
        # The receipt names the very place the broker holds this job.
        assert dict(delivery.receipt) == records[message.topic][message.job_id].where


def test_the_broker_holds_the_key_headers_and_unchanged_payload(broker: BrokerUnderTest) -> None:
    topic = broker.fresh_topic()
    batch = messages([topic], 12)

    acked(broker.make_publisher().publish(batch), batch)

    records = by_job_id(broker.read_back(topic, len(batch)))
    assert set(records) == {m.job_id for m in batch}
    for message in batch:
        record = records[message.job_id]
        assert record.key == message.key
        assert record.headers == {"traceparent": TRACEPARENT, "tenant": "acme",
                                  "job_id": message.job_id, "type": "orders.created",
                                  "attempt": str(message.attempt)}  # fmt: skip
        assert record.payload == message.payload_json


def test_messages_of_one_key_are_read_back_in_the_order_given(broker: BrokerUnderTest) -> None:
    topics = [broker.fresh_topic(), broker.fresh_topic()]
    # 2 topics x 5 keys: every (topic, key) gets 8 messages, interleaved with the others.
    batch = messages(topics, 80, keys=5)

    acked(broker.make_publisher().publish(batch), batch)

    given: dict[tuple[str, str], list[str]] = defaultdict(list)
    for message in batch:
        given[message.topic, message.key].append(message.job_id)
    read: dict[tuple[str, str], list[str]] = defaultdict(list)
    for topic in topics:
        for record in broker.read_back(topic, 40):
            read[topic, record.key].append(record.job_id)
    assert read == given


def test_publishing_the_same_attempt_again_leaves_one_job_id_per_copy(
    broker: BrokerUnderTest,
) -> None:
    topic = broker.fresh_topic()
    batch = messages([topic], 10)
    first = acked(broker.make_publisher().publish(batch), batch)

    # As after a crash between the broker's ack and the row update: a new publisher, same rows.
    again = acked(broker.make_publisher().publish(batch), batch)

    copies = 1 if broker.deduplicates else 2
    records = broker.read_back(topic, copies * len(batch))
    if broker.deduplicates:
        assert [d.receipt for d in again] == [d.receipt for d in first]
    counts = Counter(r.job_id for r in records)
    assert counts == {m.job_id: copies for m in batch}
    # Every copy is the job's message, so a consumer can drop it by job_id...
    sent = {m.job_id: m for m in batch}
    for record in records:
        message = sent[record.job_id]
        assert (record.key, record.payload) == (message.key, message.payload_json)
        assert record.headers == message.broker_headers()
    # ...and every receipt, first or again, names a place holding a copy of its own job.
    held = {json.dumps(r.where, sort_keys=True): r.job_id for r in records}
    for message, delivery in [*zip(batch, first, strict=True), *zip(batch, again, strict=True)]:
        assert held[json.dumps(delivery.receipt, sort_keys=True)] == message.job_id


def test_an_unreachable_broker_fails_every_message_in_bounded_time_without_raising(
    broker: BrokerUnderTest,
) -> None:
    publisher = broker.make_unreachable_publisher(timeout_seconds=1.0)
    batch = messages(["contract-unreachable-a", "contract-unreachable-b"], 6)

    started = time.monotonic()
    deliveries = publisher.publish(batch)
    elapsed = time.monotonic() - started

    assert [d.id for d in deliveries] == [m.id for m in batch]
    assert [(d.acked, d.receipt) for d in deliveries] == [(False, None)] * len(batch)
    assert all(isinstance(d.error, str) and d.error.strip() for d in deliveries), deliveries
    assert elapsed < 15.0, f"publish took {elapsed:.1f} s with a 1 s timeout"


def test_an_empty_batch_returns_nothing_and_close_is_safe_twice(broker: BrokerUnderTest) -> None:
    publisher = broker.make_publisher()

    assert publisher.publish([]) == []

    publisher.close()
    publisher.close()


def test_a_batch_of_a_thousand_is_fully_acked_and_read_back(broker: BrokerUnderTest) -> None:
    topic = broker.fresh_topic()
    batch = messages([topic], 1000, keys=50)

    acked(broker.make_publisher(timeout_seconds=30.0).publish(batch), batch)

    records = broker.read_back(topic, len(batch))
    assert Counter(r.job_id for r in records) == Counter(m.job_id for m in batch)
