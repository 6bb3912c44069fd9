"""Two relays at once: the work is shared, nothing is published twice, one key stays in order.

Also behind a transaction-pooling proxy, where shards are locked per batch rather than held,
and with one relay of each kind, whose locks must exclude each other just the same.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator

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
TOTAL = 2 * TRANSACTIONS * JOBS_PER_TRANSACTION


class RunningRelay:
    """A relay on its own engine and publisher, running in a thread, as a replica would."""

    def __init__(
        self, database_url: str, bootstrap: str, topic: str, *, transaction_pooling: bool
    ) -> None:
        self.engine = create_engine(
            database_url, pool_size=2, transaction_pooling=transaction_pooling
        )
        self.publisher = KafkaPublisher(bootstrap, timeout_seconds=10)
        self.relay = Relay(
            self.engine,
            self.publisher,
            Router(topic),
            batch_size=50,
            poll_interval=0.05,
            rebalance_interval=0.1,
            shard_count=SHARDS,
            transaction_pooling=transaction_pooling,
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


def write_business_transactions(engine: Engine) -> None:
    """Two writers commit interleaved transactions, each with jobs of several keys.

    Each writer has keys of its own: the order owed to one key is that of transactions that
    follow each other. Two transactions running at once have no order, and their ids can
    interleave either way, so a key shared by two concurrent writers would have no oracle.
    """

    def write(writer: int) -> None:
        for t in range(TRANSACTIONS):
            with engine.begin() as conn:
                gateway.enqueue_many(conn, [
                    gateway.JobSpec(
                        "t", {"t": t, "j": j}, key=f"w{writer}-k{(t * 7 + j) % (KEYS // 2)}"
                    )
                    for j in range(JOBS_PER_TRANSACTION)
                ])  # fmt: skip

    writers = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()


def assert_each_job_once_and_every_key_in_order(
    engine: Engine, kafka_bootstrap: str, topic: str, relays: list[RunningRelay]
) -> None:
    def all_published() -> bool:
        with engine.connect() as conn:
            return (
                conn.execute(
                    sa.select(sa.func.count()).where(jobs.c.status == "PUBLISHED")
                ).scalar_one()
                == TOTAL
            )

    assert wait_until(all_published, timeout=30)
    assert sum(r.published() for r in relays) == TOTAL  # no job published twice

    messages = consume_exactly(
        kafka_bootstrap, topic, topic_partitions(kafka_bootstrap, topic), TOTAL
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


@pytest.fixture
def topic(kafka_bootstrap: str) -> str:
    return fresh_topic(kafka_bootstrap)


@pytest.fixture
def start_relays(
    database_url: str, kafka_bootstrap: str, topic: str
) -> Iterator[Callable[..., list[RunningRelay]]]:
    """Start one relay per flag given (True: behind transaction pooling); stopped afterwards."""
    relays: list[RunningRelay] = []

    def start(*transaction_pooling: bool) -> list[RunningRelay]:
        for flag in transaction_pooling:
            relays.append(
                RunningRelay(database_url, kafka_bootstrap, topic, transaction_pooling=flag)
            )
        return relays

    yield start
    for relay in relays:
        relay.stop()


def test_two_relays_share_the_shards_publish_each_job_once_and_keep_each_key_in_order(
    engine: Engine,
    kafka_bootstrap: str,
    topic: str,
    start_relays: Callable[..., list[RunningRelay]],
) -> None:
    relays = start_relays(False, False)
    assert wait_until(
        lambda: all(len(r.relay.ownership.owned) == SHARDS // 2 for r in relays), timeout=10
    )
    write_business_transactions(engine)
    assert_each_job_once_and_every_key_in_order(engine, kafka_bootstrap, topic, relays)
    assert all(r.published() > 0 for r in relays), "one relay did all the work"


@pytest.mark.parametrize(
    "transaction_pooling",
    [pytest.param((True, True), id="both-per-batch"), pytest.param((False, True), id="mixed")],
)
def test_relays_locking_shards_per_batch_publish_each_job_once_in_key_order(
    engine: Engine,
    kafka_bootstrap: str,
    topic: str,
    start_relays: Callable[..., list[RunningRelay]],
    transaction_pooling: tuple[bool, bool],
) -> None:
    relays = start_relays(*transaction_pooling)
    write_business_transactions(engine)
    assert_each_job_once_and_every_key_in_order(engine, kafka_bootstrap, topic, relays)
