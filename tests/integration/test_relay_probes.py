"""The relay's probe port: /healthz follows the loop, /readyz the database, /metrics the work."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

import gateway
from outbox.database import create_engine
from outbox.probe_server import ProbeServer, probe_app, schema_readiness
from relay.redis_publisher import RedisPublisher
from relay.relay_loop import Relay
from relay.routing import Router
from tests.waiting import wait_until

pytestmark = pytest.mark.redis


@pytest.fixture
def relay(engine: Engine, redis_url: str, redis_client: redis.Redis) -> Iterator[Relay]:
    prefix = "probe-test:"
    publisher = RedisPublisher(redis_url, stream_prefix=prefix)
    relay = Relay(engine, publisher, Router("jobs"), poll_interval=0.05, gauge_interval=0.05)
    yield relay
    relay.close()
    publisher.close()
    redis_client.delete(f"{prefix}jobs")


def serve(relay: Relay, stall_after: float = 60.0) -> tuple[ProbeServer, str]:
    app = probe_app(relay.metrics.registry, health=lambda: relay.health(stall_after),
                    ready=schema_readiness(relay.engine))  # fmt: skip
    server = ProbeServer(app, host="127.0.0.1", port=0)
    return server, f"http://127.0.0.1:{server.start()}"


def samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{base}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_what_the_running_relay_published(engine: Engine, relay: Relay) -> None:
    with engine.begin() as conn:
        gateway.enqueue_many(conn, [gateway.JobSpec("t", {"i": i}) for i in range(12)])
    server, base = serve(relay)
    thread = threading.Thread(target=relay.run)
    thread.start()
    try:
        assert relay.idle.wait(10)
        assert wait_until(
            lambda: (
                samples(base).get(
                    ("outbox_relay_published_total", (("outcome", "acked"), ("topic", "jobs")))
                )
                == 12
            )
        )
        found = samples(base)
        assert found[("outbox_relay_shards_owned", ())] == 16
        assert found[("outbox_relay_commit_to_publish_seconds_count", ())] == 12
        assert found[("outbox_relay_batch_duration_seconds_count", ())] >= 1
        assert found[("outbox_relay_oldest_pending_age_seconds", ())] == 0
        assert ("outbox_relay_horizon_delay_seconds", ()) in found
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").json() == {"status": "ok"}
    finally:
        relay.stop()
        thread.join(10)
        server.stop()


def test_healthz_fails_once_the_loop_has_stalled(relay: Relay) -> None:
    server, base = serve(relay, stall_after=0.0)  # the loop is not running at all
    try:
        answer = httpx.get(f"{base}/healthz")
    finally:
        server.stop()
    assert answer.status_code == 503
    assert "stalled" in answer.json()["reason"]


def test_readyz_fails_on_a_database_without_the_schema(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url)
    app = probe_app(CollectorRegistry(), health=lambda: None, ready=schema_readiness(engine))
    server = ProbeServer(app, host="127.0.0.1", port=0)
    base = f"http://127.0.0.1:{server.start()}"
    try:
        answer = httpx.get(f"{base}/readyz")
    finally:
        server.stop()
        engine.dispose()
    assert answer.status_code == 503
    assert "outbox migrate" in answer.json()["reason"]
