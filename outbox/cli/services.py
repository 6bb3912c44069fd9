"""Wiring of the long-running services from settings: the composition root's assembly line."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from outbox.database import create_engine, libpq_conninfo
from outbox.errors import OutboxError
from outbox.settings import Settings
from relay.publisher import Publisher
from relay.relay_loop import Relay
from relay.routing import Router


def build_publisher(settings: Settings) -> Publisher:
    """The publisher for ``OUTBOX_BROKER``; only the chosen broker's client is imported."""
    if settings.broker == "kafka":
        from relay.kafka_publisher import KafkaPublisher  # import only the broker in use

        return KafkaPublisher(
            settings.kafka_bootstrap_servers,
            timeout_seconds=settings.publish_timeout_seconds,
            extra_config=settings.kafka_config,
        )
    if settings.broker == "redis":
        from relay.redis_publisher import RedisPublisher

        return RedisPublisher(
            settings.redis_url,
            stream_prefix=settings.redis_stream_prefix,
            maxlen=settings.redis_maxlen or None,
            timeout_seconds=settings.publish_timeout_seconds,
        )
    raise OutboxError("OUTBOX_BROKER is 'none': workers claim from the table; no relay is needed")


def build_relay(settings: Settings) -> Relay:
    engine = create_engine(settings.database_url, pool_size=2)
    return Relay(
        engine,
        build_publisher(settings),
        Router(settings.default_topic, settings.topics_by_type),
        batch_size=settings.relay_batch_size,
        poll_interval=settings.poll_interval_seconds,
        listen_conninfo=libpq_conninfo(settings.database_url) if settings.notify else None,
    )


def stop_on_signals(stop_event: threading.Event) -> None:
    """SIGTERM and SIGINT ask the service to stop after the batch in hand."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop_event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
