"""The same servers as the laptop stack, started by testcontainers where a Docker engine answers.

Without an engine, conftest marks these skipped with the reason. testcontainers is imported
inside each test so that collection never touches Docker. Its top-level modules
(``testcontainers.postgres`` and so on) are deprecated aliases that warn, so the ``community``
modules are imported instead; the warnings filter stays around each use because pytest turns
any remaining DeprecationWarning from the library into an error.
"""

from __future__ import annotations

import time
import uuid
import warnings

import pytest
import sqlalchemy as sa

from outbox import migrations_runner

DEADLINE_S = 30.0


@pytest.mark.docker
def test_postgres_container_can_be_migrated_to_head() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="psycopg") as postgres:
            url = postgres.get_connection_url()
            assert sa.make_url(url).drivername == "postgresql+psycopg"

            migrations_runner.upgrade(url)

            engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
            try:
                with engine.connect() as conn:
                    assert sa.inspect(conn).has_table("outbox_jobs")
                    assert migrations_runner.is_at_head(conn)
            finally:
                engine.dispose()


@pytest.mark.docker
def test_redis_container_answers_ping() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from testcontainers.community.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as container:
            client = container.get_client(decode_responses=True)
            try:
                assert client.ping() is True
                key = f"tc:{uuid.uuid4().hex}"
                client.set(key, "v")
                assert client.get(key) == "v"
            finally:
                client.close()


@pytest.mark.docker
def test_kafka_container_round_trips_a_message() -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            bootstrap = kafka.get_bootstrap_server()
            topic = f"tc-{uuid.uuid4().hex}"
            admin = AdminClient({"bootstrap.servers": bootstrap})
            admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[
                topic
            ].result(timeout=DEADLINE_S)

            producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
            errors: list[object] = []
            producer.produce(
                topic,
                key=b"job-1",
                value=b"{}",
                headers=[("type", b"tc.ping")],
                on_delivery=lambda err, _msg: errors.append(err),
            )
            assert producer.flush(DEADLINE_S) == 0
            assert errors == [None]

            consumer = Consumer(
                {
                    "bootstrap.servers": bootstrap,
                    "group.id": f"tc-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                }
            )
            try:
                consumer.assign([TopicPartition(topic, 0, 0)])
                message = None
                deadline = time.monotonic() + DEADLINE_S
                while message is None and time.monotonic() < deadline:
                    message = consumer.poll(0.5)
                assert message is not None, f"no message within {DEADLINE_S} s"
                assert message.error() is None, message.error()
                assert (message.key(), message.value()) == (b"job-1", b"{}")
                assert message.headers() == [("type", b"tc.ping")]
            finally:
                consumer.close()
