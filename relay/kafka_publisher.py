"""Kafka publisher (confluent-kafka): idempotent producer, acks from all in-sync replicas.

Message key = the job's key, so one key's jobs share a partition and keep their order; headers
carry ``job_id``, ``type``, ``attempt`` and the job's trace context. A message without a delivery
report in time counts as failed: its fate at the broker is unknown, so it is sent again with the
same ``job_id`` and consumers drop the copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from outbox.failpoints import failpoint
from relay.publisher import Delivery, OutgoingMessage

# Settings the outbox's guarantees rest on; configuration cannot weaken them.
REQUIRED_CONFIG: dict[str, Any] = {"enable.idempotence": True, "acks": "all"}


class KafkaPublisher:
    """Publishes batches and waits for every delivery report, at most ``timeout_seconds``."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        timeout_seconds: float = 30.0,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "linger.ms": 5,
            "message.timeout.ms": int(timeout_seconds * 1000),
            **(extra_config or {}),
            **REQUIRED_CONFIG,
        }
        self._timeout = timeout_seconds
        self._producer: Producer | None = Producer(config)

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[Delivery]:
        if self._producer is None:
            return [Delivery(m.id, error="publisher is closed") for m in messages]
        reports: dict[int, Delivery] = {}
        for message in messages:
            self._produce(self._producer, message, reports)
        failpoint("relay.after_produce")  # handed to librdkafka; no delivery report awaited yet
        # message.timeout.ms bounds every report; the extra seconds cover the callbacks.
        self._producer.flush(self._timeout + 5)
        return [
            reports.get(m.id) or Delivery(m.id, error="no delivery report before the timeout")
            for m in messages
        ]

    def _produce(
        self, producer: Producer, message: OutgoingMessage, reports: dict[int, Delivery]
    ) -> None:
        def on_delivery(error: Any, delivered: Message) -> None:
            if error is not None:
                reports[message.id] = Delivery(message.id, error=str(error))
            else:
                receipt = {"topic": delivered.topic(), "partition": delivered.partition(),
                           "offset": delivered.offset()}  # fmt: skip
                reports[message.id] = Delivery(message.id, receipt=receipt)

        headers: list[tuple[str, str | bytes | None]] = [
            (k, v.encode()) for k, v in message.broker_headers().items()
        ]
        for _ in range(2):
            try:
                producer.produce(message.topic, value=message.payload_json.encode(),
                                 key=message.key.encode(), headers=headers,
                                 on_delivery=on_delivery)  # fmt: skip
                return
            except BufferError:
                producer.poll(1.0)  # the local queue is full: serve reports, then try once more
            except KafkaException as exc:
                reports[message.id] = Delivery(message.id, error=str(exc))
                return
        reports[message.id] = Delivery(message.id, error="local producer queue is full")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self._timeout)
            self._producer = None


def create_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    partitions: int = 4,
    extra_config: Mapping[str, Any] | None = None,
    timeout_seconds: float = 20.0,
) -> None:
    """Create ``topic`` unless it exists: consumers that subscribe before it does wait minutes.

    For development stacks; in production topics belong to whoever runs the brokers.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **(extra_config or {})})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)],
        operation_timeout=timeout_seconds,
    )
    try:
        futures[topic].result(timeout=timeout_seconds)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
