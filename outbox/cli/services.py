"""Wiring of the long-running services from settings: the composition root's assembly line."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from datetime import UTC, timedelta
from types import FrameType

import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine

from gateway.app_context import GatewayConfig
from gateway.auth import TokenTable, hash_token, new_token
from gateway.http_app import create_app
from gateway.job_types import JobTypeRegistry
from outbox.backoff import BackoffPolicy
from outbox.database import create_engine, libpq_conninfo
from outbox.errors import OutboxError
from outbox.new_job import EnqueueLimits
from outbox.probe_server import Check, ProbeServer, probe_app, schema_readiness
from outbox.settings import Settings, SettingsError
from outbox.topics import TopicRoutes, redis_stream
from relay.publisher import Publisher
from relay.relay_loop import Relay
from relay.routing import Router
from worker.autoscale import ScalePolicy
from worker.handlers import HandlerRegistry, default_registry
from worker.policy import WorkerConfig
from worker.rate_limits import RateLimit
from worker.source import JobSource
from worker.worker_loop import Worker, new_worker_id


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
    engine = database_engine(settings, pool_size=2)
    return Relay(
        engine,
        build_publisher(settings),
        Router(settings.default_topic, settings.topics_by_type),
        batch_size=settings.relay_batch_size,
        poll_interval=settings.poll_interval_seconds,
        listen_conninfo=listen_conninfo(settings),
        shard_count=settings.relay_shards,
        transaction_pooling=settings.transaction_pooling,
    )


def database_engine(settings: Settings, *, pool_size: int) -> Engine:
    return create_engine(
        settings.database_url,
        pool_size=pool_size,
        transaction_pooling=settings.transaction_pooling,
    )


def listen_conninfo(settings: Settings) -> str | None:
    """Where to LISTEN for wake-ups; None (poll only) when notifications cannot arrive."""
    # LISTEN belongs to a session, and a transaction-pooling proxy hands out no session.
    if not settings.notify or settings.transaction_pooling:
        return None
    return libpq_conninfo(settings.database_url)


def start_probes(
    settings: Settings, registry: CollectorRegistry, *, health: Check, engine: Engine
) -> ProbeServer:
    """Serve /healthz (``health``), /readyz (schema at head) and /metrics on OUTBOX_PROBE_PORT."""
    app = probe_app(registry, health=health, ready=schema_readiness(engine))
    server = ProbeServer(app, host=settings.probe_host, port=settings.probe_port)
    try:
        server.start()
    except OSError as exc:
        where = f"{settings.probe_host}:{settings.probe_port}"
        raise OutboxError(f"cannot serve probes on {where} (OUTBOX_PROBE_PORT): {exc}") from None
    return server


def start_relay_probes(settings: Settings, relay: Relay) -> ProbeServer:
    """Serve the relay's /healthz, /readyz and /metrics on OUTBOX_PROBE_PORT."""
    # A healthy loop goes round at least once per publish timeout plus a poll interval.
    stall_after = 2 * (settings.publish_timeout_seconds + settings.poll_interval_seconds) + 10
    return start_probes(
        settings, relay.metrics.registry, health=lambda: relay.health(stall_after),
        engine=relay.engine,
    )  # fmt: skip


def start_worker_probes(settings: Settings, worker: Worker) -> ProbeServer:
    """Serve the worker's /healthz, /readyz and /metrics on OUTBOX_PROBE_PORT."""
    # Its default stall bound: twice a poll interval plus an outage's longest wait, plus 10 s.
    registry = worker.metrics.registry
    return start_probes(settings, registry, health=worker.health, engine=worker.engine)


def run_worker(settings: Settings, worker: Worker) -> None:
    """Run ``worker`` until it is stopped, serving its probes once its source is connected."""
    probes: list[ProbeServer] = []
    try:
        # Not before: a broker that cannot be reached at start stays the one line printed.
        worker.run(on_started=lambda: probes.append(start_worker_probes(settings, worker)))
    finally:
        for server in probes:
            server.stop()


def load_handlers(modules: list[str]) -> HandlerRegistry:
    """Import each handlers module, so its decorators fill the default registry; return it."""
    # Like celery and dramatiq: modules of the project the command runs in are importable.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise OutboxError(f"cannot import handlers module {name!r}: {reason}") from None
    if not default_registry.handlers:
        raise OutboxError(f"no handlers registered by {', '.join(modules)} (use @worker.handler)")
    return default_registry


def build_source(
    settings: Settings, engine: Engine, registry: HandlerRegistry, worker_id: str
) -> JobSource | None:
    """The broker source for ``OUTBOX_BROKER`` (None: the table); only its client is imported."""
    if settings.broker == "none":
        return None
    routes = TopicRoutes(settings.default_topic, settings.topics_by_type)
    topics = settings.worker_topics or routes.topics_of(registry.handlers)
    if settings.broker == "kafka":
        from worker.kafka_source import KafkaSource  # import only the broker in use

        return KafkaSource(
            engine, settings.kafka_bootstrap_servers, topics=topics, group=settings.worker_group,
            extra_config=settings.kafka_config, block_seconds=settings.poll_interval_seconds,
            max_waiting=settings.worker_batch_size,
        )  # fmt: skip
    from worker.redis_source import RedisSource

    return RedisSource(
        engine, settings.redis_url,
        streams=[redis_stream(settings.redis_stream_prefix, topic) for topic in topics],
        group=settings.worker_group, consumer=worker_id,
        min_idle_seconds=settings.worker_redis_min_idle_seconds,
        block_seconds=settings.poll_interval_seconds, max_waiting=settings.worker_batch_size,
    )  # fmt: skip


def build_worker(settings: Settings, registry: HandlerRegistry) -> Worker:
    """The worker for ``registry`` on ``OUTBOX_BROKER``'s source, duties on a scheduler."""
    if settings.log_level != "DEBUG":
        # APScheduler logs two INFO lines per duty run, and promotion runs every second.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    retention = timedelta(days=settings.retention_days) if settings.retention_days else None
    minimum, maximum = settings.worker_concurrency_bounds
    config = WorkerConfig(
        concurrency=minimum,  # an autoscaled worker starts small and grows with its backlog
        autoscale=ScalePolicy(minimum, maximum) if maximum > minimum else None,
        batch_size=settings.worker_batch_size,
        lease=timedelta(seconds=settings.lease_seconds),
        poll_interval=settings.poll_interval_seconds,
        shutdown_grace=settings.worker_shutdown_grace_seconds,
        default_max_attempts=settings.max_attempts,
        max_attempts_by_type=settings.max_attempts_by_type,
        backoff=BackoffPolicy(settings.retry_base_seconds, settings.retry_max_seconds),
        rate_limits_by_type=_rate_limits(settings.rate_limits_by_type),
        promote_interval=settings.promote_interval_seconds,
        rescue_interval=settings.rescue_interval_seconds,
        prune_interval=settings.prune_interval_seconds,
        retention=retention,
    )
    engine = database_engine(settings, pool_size=4)
    worker_id = new_worker_id()
    return Worker(
        engine,
        registry,
        config,
        listen_conninfo=listen_conninfo(settings),
        scheduler=BackgroundScheduler(timezone=UTC),
        worker_id=worker_id,
        notify=settings.notify,
        source=build_source(settings, engine, registry, worker_id),
    )


def _rate_limits(by_type: dict[str, str]) -> dict[str, RateLimit]:
    try:
        return {job_type: RateLimit.parse(text) for job_type, text in by_type.items()}
    except ValueError as exc:
        raise SettingsError(f"invalid settings: OUTBOX_RATE_LIMITS_BY_TYPE: {exc}") from None


def stop_on_signals(stop_event: threading.Event) -> None:
    """SIGTERM and SIGINT ask the service to stop after the batch in hand."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop_event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def gateway_config(settings: Settings) -> GatewayConfig:
    """The HTTP gateway's configuration; a job type schema that is no JSON Schema is refused."""
    try:
        job_types = JobTypeRegistry(settings.gateway_job_types)
    except ValueError as exc:
        raise SettingsError(f"invalid settings: OUTBOX_GATEWAY_JOB_TYPES: {exc}") from None
    tokens = TokenTable.from_hex(
        {name: (t.sha256.lower(), t.scopes) for name, t in settings.gateway_tokens.items()}
    )
    return GatewayConfig(
        tokens=tokens,
        max_batch=settings.gateway_max_batch,
        max_body_bytes=settings.gateway_max_body_bytes,
        max_json_depth=settings.gateway_max_json_depth,
        rate_per_second=settings.gateway_rate_limit_per_second,
        rate_burst=settings.gateway_rate_limit_burst,
        backlog_bounds=settings.gateway_backlog_limits,
        job_types=job_types,
        max_wait_seconds=settings.gateway_max_wait_seconds,
        limits=EnqueueLimits(max_payload_bytes=settings.max_payload_bytes),
        notify=settings.notify,
    )


def run_gateway(settings: Settings) -> None:
    """Serve the HTTP gateway until SIGTERM or Ctrl-C (uvicorn finishes requests in flight)."""
    config = gateway_config(settings)
    if not len(config.tokens):
        logging.getLogger("gateway").warning(
            "OUTBOX_GATEWAY_TOKENS is empty: only the public routes will answer"
        )
    engine = database_engine(settings, pool_size=10)
    # uvicorn stops gracefully on SIGTERM/SIGINT, then raises the signal again for the handler it
    # found; one that does nothing lets the command end normally (exit 0), as the relay's does.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda signum, frame: None)
    try:
        uvicorn.run(
            create_app(engine, config),
            host=settings.gateway_host,
            port=settings.gateway_port,
            log_config=None,  # our logging setup stays in charge
            log_level=settings.log_level.lower(),
            access_log=False,  # outbox_gateway_requests_total counts requests; tokens never logged
            server_header=False,
        )
    finally:
        engine.dispose()


def gateway_token_hash(token: str) -> str:
    """The SHA-256 of a gateway token, as OUTBOX_GATEWAY_TOKENS stores it."""
    return hash_token(token)


def new_gateway_token() -> str:
    return new_token()
