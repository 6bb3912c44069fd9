"""The worker fed by Kafka: enqueue -> relay -> topic -> consumer group -> row.

The real relay publishes; the worker consumes in a group and claims by the ``job_id`` header.
Offsets are committed by hand, per partition only up to the oldest message whose job's outcome
is not yet committed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from confluent_kafka import Consumer, Producer, TopicPartition
from sqlalchemy.engine import Engine

from outbox.states import JobStatus
from relay.kafka_publisher import KafkaPublisher
from relay.routing import Router
from tests.kafka_topics import consume_exactly, fresh_topic, topic_partitions
from tests.waiting import wait_until
from tests.worker.conftest import (
    FAST,
    QUICK_RETRIES,
    Runs,
    StartRelay,
    StartWorker,
    enqueue,
    job,
    wait_for_status,
)
from worker import HandlerRegistry, Job, Worker
from worker.kafka_source import KafkaSource

pytestmark = pytest.mark.kafka
S = JobStatus
PARTITIONS = 2
# tansu finishes a group join in about half the session timeout: keep it short in tests.
GROUP_CONFIG = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 300}


@pytest.fixture
def topic(kafka_bootstrap: str) -> str:
    return fresh_topic(kafka_bootstrap, partitions=PARTITIONS)


@pytest.fixture
def group() -> str:
    return f"workers-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def relay(start_relay: StartRelay, kafka_bootstrap: str, topic: str) -> None:
    start_relay(KafkaPublisher(kafka_bootstrap, timeout_seconds=10), Router(topic))


StartKafkaWorker = Callable[..., Worker]


@pytest.fixture
def kafka_sources() -> list[KafkaSource]:
    """Every source the test's workers read from, in the order they started."""
    return []


@pytest.fixture
def start_kafka_worker(
    engine: Engine, start_worker: StartWorker, kafka_bootstrap: str, topic: str, group: str,
    kafka_sources: list[KafkaSource],
) -> StartKafkaWorker:  # fmt: skip
    def start(registry: HandlerRegistry, **kwargs: Any) -> Worker:
        source = KafkaSource(engine, kafka_bootstrap, topics=[topic], group=group,
                             extra_config=GROUP_CONFIG, block_seconds=0.05)  # fmt: skip
        kafka_sources.append(source)
        return start_worker(registry, kwargs.pop("config", FAST), source=source, **kwargs)

    return start


@pytest.fixture
def committed(kafka_bootstrap: str, topic: str, group: str) -> Iterator[Callable[[], list[int]]]:
    """The group's committed offset of each partition (-1: none), asked without joining it."""
    reader = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})

    def offsets() -> list[int]:
        answers = reader.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], 10)
        return [max(-1, a.offset) for a in sorted(answers, key=lambda a: a.partition)]

    yield offsets
    reader.close()


def receipt(engine: Engine, job_id: str) -> tuple[int, int]:
    found = job(engine, job_id).publish_receipt
    assert found is not None
    return found["partition"], found["offset"]


def test_jobs_flow_from_enqueue_through_relay_and_topic_to_completed_exactly_once(
    engine: Engine, relay: None, start_kafka_worker: StartKafkaWorker,
    committed: Callable[[], list[int]],
) -> None:  # fmt: skip
    registry = HandlerRegistry()
    runs = Runs()
    registry.handler("email.send")(runs.record)
    job_ids = [enqueue(engine, "email.send", {"n": n}, key=f"k{n}") for n in range(40)]
    start_kafka_worker(registry)
    start_kafka_worker(registry)  # joins later: partitions move between them mid-stream

    for job_id in job_ids:
        assert wait_for_status(engine, job_id, S.COMPLETED, timeout=20).attempts == 1
    assert Counter(runs.calls) == Counter((job_id, 1) for job_id in job_ids)
    ends = Counter(receipt(engine, job_id)[0] for job_id in job_ids)  # messages per partition
    assert wait_until(lambda: committed() == [ends[p] for p in range(PARTITIONS)], timeout=10)


def test_partitions_moving_while_jobs_run_neither_lose_nor_repeat_them(
    engine: Engine, relay: None, start_kafka_worker: StartKafkaWorker,
    kafka_sources: list[KafkaSource], committed: Callable[[], list[int]],
) -> None:  # fmt: skip
    registry = HandlerRegistry()
    runs = Runs()
    release = threading.Event()

    @registry.handler("long")
    def long(job: Job) -> None:
        runs.record(job)
        assert release.wait(20)

    job_ids = [enqueue(engine, "long", key=f"k{n}") for n in range(8)]
    start_kafka_worker(registry, config=replace(FAST, concurrency=8))
    for job_id in job_ids:
        wait_for_status(engine, job_id, S.PROCESSING, timeout=20)
    assert {receipt(engine, job_id)[0] for job_id in job_ids} == {0, 1}  # both partitions

    # A second member: the group rebalances and one partition moves to the newcomer.
    start_kafka_worker(registry, config=replace(FAST, concurrency=8))
    first, second = kafka_sources
    assert wait_until(lambda: len(first.assigned()) == len(second.assigned()) == 1, timeout=20)
    release.set()

    for job_id in job_ids:
        assert wait_for_status(engine, job_id, S.COMPLETED).attempts == 1
    assert sorted(runs.calls) == sorted((job_id, 1) for job_id in job_ids)
    ends = Counter(receipt(engine, job_id)[0] for job_id in job_ids)
    assert wait_until(lambda: committed() == [ends[0], ends[1]], timeout=10)


def test_offsets_are_committed_only_behind_every_outcome_of_the_partition(
    engine: Engine, relay: None, start_kafka_worker: StartKafkaWorker,
    committed: Callable[[], list[int]],
) -> None:  # fmt: skip
    registry = HandlerRegistry()
    release = threading.Event()

    @registry.handler("step")
    def step(job: Job) -> None:
        if job.payload["slow"]:
            assert release.wait(10)

    slow = enqueue(engine, "step", {"slow": True}, key="same")
    quick = enqueue(engine, "step", {"slow": False}, key="same")  # same key: same partition
    start_kafka_worker(registry)

    wait_for_status(engine, quick, S.COMPLETED, timeout=20)
    assert job(engine, slow).status is S.PROCESSING
    partition, slow_offset = receipt(engine, slow)
    assert receipt(engine, quick) == (partition, slow_offset + 1)
    # The later message is done, but committing past the earlier one would lose it on a crash.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # a second of rounds, each of which may commit
        assert committed()[partition] <= slow_offset
        time.sleep(0.05)  # sampling the committed offset while rounds go by; no event to await

    release.set()
    wait_for_status(engine, slow, S.COMPLETED)
    assert wait_until(lambda: committed()[partition] == slow_offset + 2)


def test_a_duplicate_message_runs_the_handler_once(
    engine: Engine, relay: None, start_kafka_worker: StartKafkaWorker, kafka_bootstrap: str,
    topic: str, committed: Callable[[], list[int]],
) -> None:  # fmt: skip
    registry = HandlerRegistry()
    runs = Runs()
    started, release = threading.Event(), threading.Event()

    @registry.handler("pay")
    def pay(job: Job) -> None:
        runs.record(job)
        started.set()
        assert release.wait(10)

    job_id = enqueue(engine, "pay", key="k")
    start_kafka_worker(registry)
    assert started.wait(20)
    partition, offset = receipt(engine, job_id)
    partitions = topic_partitions(kafka_bootstrap, topic)
    [original] = consume_exactly(kafka_bootstrap, topic, partitions, 1)
    _produce_copy(kafka_bootstrap, topic, original, partition)  # while the job runs

    release.set()
    wait_for_status(engine, job_id, S.COMPLETED)
    _produce_copy(kafka_bootstrap, topic, original, partition)  # and once more, after it

    assert wait_until(lambda: committed()[partition] == offset + 3)
    assert runs.calls == [(job_id, 1)]


def _produce_copy(bootstrap: str, topic: str, original: Any, partition: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, value=original.value(), key=original.key(),
                     headers=original.headers(), partition=partition)  # fmt: skip
    assert producer.flush(10) == 0


def test_a_message_read_by_a_consumer_that_left_without_committing_is_read_again(
    engine: Engine, relay: None, start_kafka_worker: StartKafkaWorker, kafka_bootstrap: str,
    topic: str, group: str, committed: Callable[[], list[int]],
) -> None:  # fmt: skip
    registry = HandlerRegistry()
    runs = Runs()
    registry.handler("ship")(runs.record)
    job_id = enqueue(engine, "ship", key="k")
    wait_for_status(engine, job_id, S.PUBLISHED)
    # A member of the group reads the message, then goes away before doing anything with it.
    reader = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group,
                       "enable.auto.commit": False, "auto.offset.reset": "earliest",
                       **GROUP_CONFIG})  # fmt: skip
    reader.subscribe([topic])
    read: list[Any] = []

    def got_it() -> bool:
        read.extend(m for m in reader.consume(1, 0.2) if m.error() is None)
        return bool(read)

    assert wait_until(got_it, timeout=20)  # joined the group, was assigned, read it
    reader.close()  # no commit

    start_kafka_worker(registry)

    record = wait_for_status(engine, job_id, S.COMPLETED, timeout=20)
    assert (record.attempts, runs.calls) == (1, [(job_id, 1)])
    partition, offset = receipt(engine, job_id)
    assert wait_until(lambda: committed()[partition] == offset + 1)


def test_a_failing_job_is_retried_through_promote_relay_and_topic_until_dead(
    engine: Engine, relay: None, start_kafka_worker: StartKafkaWorker, kafka_bootstrap: str,
    topic: str,
) -> None:  # fmt: skip
    registry = HandlerRegistry()
    runs = Runs()

    @registry.handler("flaky", max_attempts=3)
    def flaky(job: Job) -> None:
        runs.record(job)
        raise ConnectionError("down")

    job_id = enqueue(engine, "flaky", key="k")
    start_kafka_worker(registry, config=QUICK_RETRIES, scheduler=BackgroundScheduler())

    record = wait_for_status(engine, job_id, S.DEAD, timeout=20)
    assert (record.attempts, record.last_error) == (3, "ConnectionError: down")
    assert runs.calls == [(job_id, 1), (job_id, 2), (job_id, 3)]
    partitions = topic_partitions(kafka_bootstrap, topic)
    messages = consume_exactly(kafka_bootstrap, topic, partitions, 3)
    assert [dict(m.headers())["attempt"] for m in messages] == [b"1", b"2", b"3"]
