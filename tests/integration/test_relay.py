"""The relay on real brokers: publish only what committed, mark only what was acked."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy.engine import Engine

import gateway
from outbox import queries
from outbox.database import libpq_conninfo
from outbox.embedded_servers import free_port
from outbox.schema import jobs
from relay.kafka_publisher import KafkaPublisher
from relay.publisher import Delivery, OutgoingMessage, Publisher
from relay.relay_loop import Relay
from relay.routing import Router
from tests.waiting import wait_until

pytestmark = pytest.mark.kafka


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[object]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        got: list[object] = []
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if message.error() is None:
                    got.append(message)
        return got
    finally:
        consumer.close()


def statuses(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(jobs.c.status).order_by(jobs.c.id)).scalars())


@pytest.fixture
def topic() -> str:
    return f"jobs-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def kafka_publisher(kafka_bootstrap: str) -> Iterator[KafkaPublisher]:
    publisher = KafkaPublisher(kafka_bootstrap, timeout_seconds=10)
    yield publisher
    publisher.close()


def make_relay(engine: Engine, publisher: Publisher, topic: str, **options: object) -> Relay:
    return Relay(engine, publisher, Router(topic), **options)  # type: ignore[arg-type]


def test_relay_publishes_committed_jobs_and_stores_the_receipt(
    engine: Engine, kafka_publisher: KafkaPublisher, kafka_bootstrap: str, topic: str
) -> None:
    with engine.begin() as conn:
        specs = [gateway.JobSpec("email.send", {"i": i}, key=f"user-{i % 4}") for i in range(20)]
        job_ids = gateway.enqueue_many(conn, specs, notify=False)

    result = make_relay(engine, kafka_publisher, topic).run_once()

    assert (result.fetched, result.published, result.failed) == (20, 20, 0)
    assert statuses(engine) == ["PUBLISHED"] * 20
    with engine.connect() as conn:
        record = queries.get_job(conn, job_ids[0])
    assert record is not None
    assert record.publish_receipt is not None
    assert record.publish_receipt["topic"] == topic
    assert record.publish_receipt["offset"] >= 0
    assert record.published_at is not None
    messages = consume_all(kafka_bootstrap, topic, 20)
    by_job = {dict(m.headers())["job_id"].decode(): m for m in messages}  # type: ignore[attr-defined]
    assert set(by_job) == set(job_ids)
    first = by_job[job_ids[0]]
    headers = {k: v.decode() for k, v in first.headers()}  # type: ignore[attr-defined]
    assert (headers["type"], headers["attempt"], first.key()) == ("email.send", "1", b"user-0")  # type: ignore[attr-defined]


def test_a_rolled_back_job_is_never_published(
    engine: Engine, kafka_publisher: KafkaPublisher, topic: str
) -> None:
    with engine.connect() as conn:
        gateway.enqueue(conn, "t", {"rolled": "back"})
        conn.rollback()
    with engine.begin() as conn:
        gateway.enqueue(conn, "t", {"committed": True})
    assert make_relay(engine, kafka_publisher, topic).run_once().published == 1


def test_an_open_transaction_holds_later_commits_back_and_nothing_is_skipped(
    engine: Engine, kafka_publisher: KafkaPublisher, kafka_bootstrap: str, topic: str
) -> None:
    relay = make_relay(engine, kafka_publisher, topic)
    with engine.connect() as slow:
        slow.begin()
        early = gateway.enqueue(slow, "t", {"n": 1}, key="order-1")  # lower id, commits late
        with engine.begin() as fast:
            late = gateway.enqueue(fast, "t", {"n": 2}, key="order-1")

        assert relay.run_once().published == 0
        with engine.connect() as conn:
            held = queries.horizon_delay_seconds(
                conn, now=datetime.now(UTC) + timedelta(seconds=10)
            )
        assert held >= 10
        slow.commit()

    assert relay.run_once().published == 2
    order = [dict(m.headers())["job_id"].decode() for m in consume_all(kafka_bootstrap, topic, 2)]  # type: ignore[attr-defined]
    assert order == [early, late]


def test_a_failed_delivery_leaves_the_job_pending_with_its_attempts_unused(
    engine: Engine, topic: str
) -> None:
    with engine.begin() as conn:
        gateway.enqueue_many(conn, [gateway.JobSpec("t", {"i": i}) for i in range(3)])
    dead_broker = KafkaPublisher(f"127.0.0.1:{free_port()}", timeout_seconds=1)
    try:
        result = make_relay(engine, dead_broker, topic).run_once()
    finally:
        dead_broker.close()
    assert (result.published, result.failed) == (0, 3)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(jobs.c.status, jobs.c.attempts, jobs.c.published_at)).all()
    assert rows == [("PENDING", 0, None)] * 3


class CrashAfterPublish:
    """Publishes for real, then dies before the relay can mark anything."""

    def __init__(self, inner: Publisher) -> None:
        self.inner = inner

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[Delivery]:
        self.inner.publish(messages)
        raise SystemExit("killed after produce, before mark")

    def close(self) -> None:
        self.inner.close()


def test_a_crash_after_produce_before_mark_loses_nothing_and_resends_the_same_job_id(
    engine: Engine, kafka_publisher: KafkaPublisher, kafka_bootstrap: str, topic: str
) -> None:
    with engine.begin() as conn:
        job_ids = gateway.enqueue_many(conn, [gateway.JobSpec("t", {"i": i}) for i in range(5)])
    with pytest.raises(SystemExit):
        make_relay(engine, CrashAfterPublish(kafka_publisher), topic).run_once()
    assert statuses(engine) == ["PENDING"] * 5

    assert make_relay(engine, kafka_publisher, topic).run_once().published == 5

    copies = [dict(m.headers())["job_id"].decode() for m in consume_all(kafka_bootstrap, topic, 10)]  # type: ignore[attr-defined]
    assert sorted(copies) == sorted(job_ids * 2)  # every copy carries its job's job_id


def test_a_notification_wakes_the_relay_long_before_its_poll(
    engine: Engine, kafka_publisher: KafkaPublisher, topic: str
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    relay = make_relay(engine, kafka_publisher, topic, poll_interval=60,
                       listen_conninfo=libpq_conninfo(url))  # fmt: skip
    thread = threading.Thread(target=relay.run)
    thread.start()
    try:
        assert relay.idle.wait(10)
        with engine.begin() as conn:
            gateway.enqueue(conn, "t", {})
        assert wait_until(lambda: statuses(engine) == ["PUBLISHED"], timeout=10)
    finally:
        relay.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_with_notifications_off_the_relay_still_polls(
    engine: Engine, kafka_publisher: KafkaPublisher, topic: str
) -> None:
    relay = make_relay(engine, kafka_publisher, topic, poll_interval=0.1, listen_conninfo=None)
    thread = threading.Thread(target=relay.run)
    thread.start()
    try:
        assert relay.idle.wait(10)
        with engine.begin() as conn:
            gateway.enqueue(conn, "t", {}, notify=False)
        assert wait_until(lambda: statuses(engine) == ["PUBLISHED"], timeout=10)
    finally:
        relay.stop()
        thread.join(10)
