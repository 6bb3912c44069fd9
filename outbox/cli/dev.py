"""``outbox dev``: the whole system on the embedded default, with no external service.

It starts an embedded PostgreSQL and broker (Redis by default; tansu for Kafka, or none, where
workers claim from the table), migrates, and runs the relay, a worker with the example
reservation handlers of seed 004 (some payment attempts fail and retry, a few are refused for
good) and the HTTP gateway. It submits a stream of demo jobs in business transactions, every
fifth one through the gateway's HTTP API, and one rolled back to show it leaves no job. A
progress bar follows the jobs to the end; the summary gives jobs per state, throughput and
latency percentiles. Ctrl-C (or SIGTERM) stops everything cleanly and still summarises.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, Literal

import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import Engine

import gateway
import worker
from gateway.auth import hash_token, new_token
from gateway.http_app import create_app
from outbox import migrations_runner, queries
from outbox.cli import render, services
from outbox.database import create_engine
from outbox.embedded_servers import embedded_kafka, embedded_postgres, embedded_redis
from outbox.errors import OutboxError
from outbox.probe_server import ProbeServer
from outbox.schema import jobs
from outbox.settings import Settings
from outbox.states import FINISHED_STATES
from relay.kafka_publisher import create_topic

DEMO_TYPES = ("reservation.expired", "payment.approved", "payment.failed")
JOBS_PER_TRANSACTION = 10
HTTP_EVERY = 5
"""Every fifth demo transaction goes through the gateway's HTTP API instead of the Python API."""

Broker = Literal["redis", "kafka", "none"]


def demo_registry(rng: random.Random) -> worker.HandlerRegistry:
    """The reservation handlers: fast, flaky, or refusing, as real integrations are."""
    registry = worker.HandlerRegistry()
    lock = threading.Lock()  # random.Random is not meant to be shared between threads

    def chance(p: float) -> bool:
        with lock:
            return rng.random() < p

    @registry.handler("reservation.expired")
    def release_seats(job: worker.Job) -> dict[str, object]:
        return {"released": job.payload["seats"]}

    @registry.handler("payment.approved")
    def confirm(job: worker.Job) -> None:
        if chance(0.2):
            raise ConnectionError("payment provider timed out")  # retried with backoff

    @registry.handler("payment.failed", max_attempts=3)
    def notify_customer(job: worker.Job) -> None:
        if chance(0.05):
            raise worker.PermanentError("customer has no contact address")  # DEAD at once
        if job.attempt == 1 and chance(0.5):
            raise RuntimeError("mail server refused the connection")

    return registry


@dataclass(frozen=True)
class Summary:
    counts: dict[str, int]
    seconds: float
    p50_ms: float | None
    p99_ms: float | None
    retried: int


@dataclass
class Submitted:
    total: int = 0
    via_http: int = 0


@dataclass(frozen=True)
class GatewayClient:
    """The demo's HTTP client of the gateway it started (stdlib only: a dev-time nicety)."""

    base_url: str
    token: str

    def submit_batch(self, specs: list[gateway.JobSpec]) -> None:
        body = {"jobs": [{"type": s.type, "payload": s.payload, "key": s.key} for s in specs]}
        request = urllib.request.Request(  # noqa: S310 - our own loopback URL
            f"{self.base_url}/v1/jobs:batch",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            if response.status != 201:
                raise RuntimeError(f"gateway answered {response.status} to a demo batch")


def dev_settings(
    database_url: str, broker: Broker, broker_address: str, gateway_port: int, token: str
) -> Settings:
    """Settings of the embedded stack; short delays, so the demo shows retries within seconds."""
    at: dict[str, Any] = {}
    if broker == "redis":
        at["redis_url"] = f"redis://{broker_address}/0"
    elif broker == "kafka":
        at["kafka_bootstrap_servers"] = broker_address
        # tansu completes a group join in about half the session timeout (default 45 s).
        at["kafka_config"] = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
    return Settings(
        database_url=database_url,
        broker=broker,
        **at,
        retry_base_seconds=0.2,
        retry_max_seconds=2.0,
        promote_interval_seconds=0.2,
        lease_seconds=10,
        poll_interval_seconds=0.5,
        worker_shutdown_grace_seconds=5.0,
        gateway_host="127.0.0.1",
        gateway_port=gateway_port,
        gateway_tokens={
            "dev": {
                "sha256": hash_token(token),
                "scopes": ["jobs:write", "jobs:read", "jobs:admin"],
            }
        },
    )


@contextmanager
def _embedded_broker(broker: Broker) -> Iterator[str]:
    """Start the broker; yield its address (empty for "none")."""
    if broker == "none":
        yield ""
        return
    start = embedded_redis if broker == "redis" else embedded_kafka
    with start() as server:
        yield f"127.0.0.1:{server.port}"


class _Services:
    """Relay, worker and gateway of the dev stack, each stopped however the demo ends."""

    def __init__(self, settings: Settings, registry: worker.HandlerRegistry) -> None:
        self.relay = services.build_relay(settings) if settings.broker != "none" else None
        self.worker = services.build_worker(settings, registry)
        self.gateway_engine = services.database_engine(settings, pool_size=4)
        self.gateway = ProbeServer(
            create_app(self.gateway_engine, services.gateway_config(settings)),
            host=settings.gateway_host,
            port=settings.gateway_port,
        )
        self._port = settings.gateway_port
        self._gateway_started = False
        self._threads: list[threading.Thread] = []

    def start(self) -> int:
        """Start everything; return the gateway's port."""
        try:
            port = self.gateway.start()
        except OSError:
            raise OutboxError(
                f"the gateway cannot listen on 127.0.0.1:{self._port} (in use?);"
                " pass --gateway-port 0 for any free port"
            ) from None
        self._gateway_started = True
        loops: list[tuple[str, Callable[[], None]]] = [("worker", self.worker.run)]
        if self.relay is not None:
            loops.insert(0, ("relay", self.relay.run))
        for name, run in loops:
            thread = threading.Thread(target=run, name=name)
            self._threads.append(thread)
            thread.start()
        return port

    def stop(self) -> None:
        if self._gateway_started:
            self.gateway.stop()
        if self.relay is not None:
            self.relay.stop()
        self.worker.stop()
        for thread in self._threads:
            thread.join(30)
        if self.relay is not None:
            self.relay.publisher.close()  # before the broker stops, or librdkafka complains
        self.gateway_engine.dispose()


def run_dev(
    out: Console,
    *,
    demo_jobs: int,
    rate: float = 500.0,
    seed: int = 4,
    broker: Broker = "redis",
    gateway_port: int = 8080,
) -> None:
    """Start everything, submit ``demo_jobs`` at ``rate`` jobs/s, follow them, summarise."""
    where = {"redis": "Redis Streams", "kafka": "Kafka (tansu)", "none": "no broker"}[broker]
    out.print(
        f"[bold]outbox dev[/bold]: embedded PostgreSQL, {where}, relay, worker and HTTP gateway;"
        " no Docker, no services"
    )
    # The summary counts failures and dead letters; one log line per retry would drown it.
    for noisy in ("worker", "relay", "apscheduler", "gateway", "uvicorn"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with ExitStack() as stack:
        stack.enter_context(_stop_signals_interrupt())
        pg = stack.enter_context(embedded_postgres())
        out.print(f"PostgreSQL up at {pg.url}")
        migrations_runner.upgrade(pg.url)
        address = stack.enter_context(_embedded_broker(broker))
        if address:
            out.print(f"{where} up at {address}")
        token = new_token()
        settings = dev_settings(pg.url, broker, address, gateway_port, token)
        if broker == "kafka":
            create_topic(address, settings.default_topic)
        engine = create_engine(pg.url, pool_size=4)
        stack.callback(engine.dispose)
        rng = random.Random(seed)  # demo data, not security
        submitted = Submitted()
        running = _Services(settings, demo_registry(rng))
        started = time.perf_counter()
        # Everything after the services start sits inside the try: a Ctrl-C at any line must
        # still stop them, or their threads would keep the process alive forever.
        try:
            port = running.start()
            client = GatewayClient(f"http://127.0.0.1:{port}", token)
            out.print(f"gateway at {client.base_url} (docs: /docs); try:")
            out.print(
                f"  curl -H 'Authorization: Bearer {token}' {client.base_url}/v1/jobs?limit=5",
                highlight=False,
            )
            out.print(
                f"worker started; submitting {demo_jobs} demo jobs at {rate:g} jobs/s"
                " (Ctrl-C stops)"
            )
            _follow(out, engine, client, rng, demo_jobs, rate, submitted)
        except KeyboardInterrupt:
            out.print("interrupted; stopping the gateway, relay and worker")
        finally:
            running.stop()
        summary = _summarise(engine, time.perf_counter() - started)
        _print_summary(out, engine, summary)
        out.print(f"submitted {submitted.total} jobs, {submitted.via_http} of them through the"
                  " HTTP gateway")  # fmt: skip
    out.print("stopped; the embedded database was deleted")


@contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt in the main thread while the demo runs.

    Set explicitly, not inherited: a shell that starts a command in the background without job
    control starts it with SIGINT *ignored*, and Python keeps an ignored SIGINT ignored, so
    ``kill -INT`` (or a test's ``send_signal``) would do nothing and the demo would run on.
    """

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: not set from Python; nothing to restore
                signal.signal(sig, handler)


def _follow(
    out: Console,
    engine: Engine,
    client: GatewayClient,
    rng: random.Random,
    count: int,
    rate: float,
    sent: Submitted,
) -> None:
    columns = (TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=out) as progress:
        submitted = progress.add_task("submitted", total=count)
        finished = progress.add_task("finished", total=count)
        start = time.monotonic()
        transactions = 0
        while sent.total < count:
            # Open loop at the offered rate; the relay and worker run meanwhile.
            wait = start + sent.total / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            size = min(JOBS_PER_TRANSACTION, count - sent.total)
            specs = [_demo_job(rng) for _ in range(size)]
            transactions += 1
            if transactions % HTTP_EVERY == 0:
                client.submit_batch(specs)
                sent.via_http += size
            else:
                with engine.begin() as conn:
                    gateway.enqueue_many(conn, specs)
            sent.total += size
            progress.update(submitted, completed=sent.total)
            progress.update(finished, completed=_finished(engine))
        _business_transaction_rolled_back(engine)
        while (done := _finished(engine)) < count:
            progress.update(finished, completed=done)
            time.sleep(0.1)  # a progress display refreshing, not synchronisation
        progress.update(finished, completed=count)


def _demo_job(rng: random.Random) -> gateway.JobSpec:
    return gateway.JobSpec(
        type=rng.choice(DEMO_TYPES),
        payload={"reservation_id": str(uuid.uuid4()), "seats": rng.randint(1, 4)},
        key=f"event-{rng.randint(1, 20)}",
    )


def _business_transaction_rolled_back(engine: Engine) -> None:
    with engine.connect() as conn, conn.begin() as transaction:
        gateway.enqueue(conn, "reservation.expired", {"seats": 1}, key="rolled-back")
        transaction.rollback()


def _finished(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    jobs.c.status.in_([s.value for s in FINISHED_STATES])
                )
            ).scalar_one()
        )


def _summarise(engine: Engine, seconds: float) -> Summary:
    latency_ms = sa.func.extract("epoch", jobs.c.finished_at - jobs.c.created_at) * 1000
    with engine.connect() as conn:
        by_status = sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
        counts: dict[str, int] = dict(conn.execute(by_status).tuples().all())
        p50, p99 = conn.execute(
            sa.select(
                sa.func.percentile_cont(0.5).within_group(latency_ms),
                sa.func.percentile_cont(0.99).within_group(latency_ms),
            ).where(jobs.c.status == "COMPLETED")
        ).one()
        retried = conn.execute(sa.select(sa.func.count()).where(jobs.c.attempts > 1)).scalar_one()
    return Summary(counts, seconds, p50, p99, retried)


def _print_summary(out: Console, engine: Engine, summary: Summary) -> None:
    with engine.connect() as conn:
        out.print(render.stats_table(queries.backlog_stats(conn)))
        leaked = queries.list_jobs(conn, queries.JobFilter(key="rolled-back"), limit=1)
    finished = sum(summary.counts.get(s.value, 0) for s in FINISHED_STATES)
    rate = finished / summary.seconds if summary.seconds > 0 else 0.0
    out.print(f"finished {finished} jobs in {summary.seconds:.1f} s ({rate:,.0f} jobs/s); "
              f"{summary.retried} needed more than one attempt")  # fmt: skip
    if summary.p50_ms is not None and summary.p99_ms is not None:
        out.print(
            f"enqueue to completion: p50 {summary.p50_ms:.0f} ms, p99 {summary.p99_ms:.0f} ms"
        )
    out.print(f"jobs left by the rolled-back transaction: {len(leaked)}")
