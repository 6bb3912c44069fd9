"""Two relays at once: the work is shared, nothing is published twice, one key stays in order."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import gateway
from outbox.database import create_engine
from outbox.schema import jobs
from relay.kafka_publisher import KafkaPublisher
from relay.relay_loop import Relay
from relay.routing import Router
from tests.kafka_topics import consume_exactly, fresh_topic, topic_partitions
from tests.waiting import wait_until

pytestmark = pytest.mark.kafka

SHARDS = 16
KEYS = 24
TRANSACTIONS = 150
JOBS_PER_TRANSACTION = 8


class RunningRelay:
    """A relay on its own engine and publisher, running in a thread, as a replica would."""

    def __init__(self, database_url: str, bootstrap: str, topic: str) -> None:
        self.engine = create_engine(database_url, pool_size=2)
        self.publisher = KafkaPublisher(bootstrap, timeout_seconds=10)
        self.relay = Relay(
            self.engine,
            self.publisher,
            Router(topic),
            batch_size=50,
            poll_interval=0.05,
            rebalance_interval=0.1,
            shard_count=SHARDS,
        )
        self.thread = threading.Thread(target=self.relay.run)
        self.thread.start()

    def published(self) -> float:
        return sum(
            sample.value
            for metric in self.relay.metrics.published.collect()
            for sample in metric.samples
            if sample.name == "outbox_relay_published_total" and sample.labels["outcome"] == "acked"
        )

    def stop(self) -> None:
        self.relay.stop()
        self.thread.join(10)
        self.publisher.close()
        self.engine.dispose()


@pytest.fixture
def two_relays(database_url: str, kafka_bootstrap: str) -> Iterator[tuple[str, list[RunningRelay]]]:
    topic = fresh_topic(kafka_bootstrap)
    relays = [RunningRelay(database_url, kafka_bootstrap, topic) for _ in range(2)]
    try:
        yield topic, relays
    finally:
        for relay in relays:
            relay.stop()


def test_two_relays_share_the_shards_publish_each_job_once_and_keep_each_key_in_order(
    engine: Engine, kafka_bootstrap: str, two_relays: tuple[str, list[RunningRelay]]
) -> None:
    topic, relays = two_relays
    assert wait_until(
        lambda: all(len(r.relay.ownership.owned) == SHARDS // 2 for r in relays), timeout=10
    )

    def write_business_transactions() -> None:
        for t in range(TRANSACTIONS):
            with engine.begin() as conn:
                gateway.enqueue_many(conn, [
                    gateway.JobSpec("t", {"t": t, "j": j}, key=f"k{(t * 7 + j) % KEYS}")
                    for j in range(JOBS_PER_TRANSACTION)
                ])  # fmt: skip

    writers = [threading.Thread(target=write_business_transactions) for _ in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    total = 2 * TRANSACTIONS * JOBS_PER_TRANSACTION

    def all_published() -> bool:
        with engine.connect() as conn:
            return (
                conn.execute(
                    sa.select(sa.func.count()).where(jobs.c.status == "PUBLISHED")
                ).scalar_one()
                == total
            )

    assert wait_until(all_published, timeout=30)
    assert all(r.published() > 0 for r in relays), "one relay did all the work"
    assert sum(r.published() for r in relays) == total  # no job published twice

    messages = consume_exactly(
        kafka_bootstrap, topic, topic_partitions(kafka_bootstrap, topic), total
    )
    with engine.connect() as conn:
        id_of = dict(conn.execute(sa.select(jobs.c.job_id, jobs.c.id)).all())
    seen_by_key: dict[bytes, list[int]] = defaultdict(list)
    for message in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        job_id = dict(message.headers() or [])["job_id"].decode()
        seen_by_key[message.key() or b""].append(id_of[job_id])
    assert len(seen_by_key) == KEYS
    for key, ids in seen_by_key.items():
        assert ids == sorted(ids), f"key {key!r} reached the broker out of order"
    assert sorted(i for ids in seen_by_key.values() for i in ids) == sorted(id_of.values())
