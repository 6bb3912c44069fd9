"""The suite's measurements, in groups that share a fresh database and run once per suite run.

Each group returns one :class:`~bench.report.Sample` per row name it measures; the suite
interleaves the groups across runs, so machine noise hits every row alike. The measuring code
is the standalone benches' (``raw_limits``, ``gateway_bench``, ``relay_bench``,
``worker_bench``, ``peer_drains``); this module only decides sizes and names.
"""

from __future__ import annotations

import asyncio
import statistics
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from bench import (
    closed_loop,
    databases,
    drains,
    gateway_bench,
    peer_drains,
    raw_limits,
    relay_bench,
    worker_bench,
    worker_latency,
)
from bench.report import Row, Sample
from bench.servers import Servers, fresh_database
from outbox.database import create_engine
from relay.kafka_publisher import KafkaPublisher
from relay.publisher import Publisher
from relay.redis_publisher import RedisPublisher
from relay.relay_loop import Relay
from relay.routing import Router

Samples = dict[str, Sample]


@dataclass(frozen=True)
class Sizes:
    """How much work each row does; ``Sizes.quick()`` is the 3-minute version."""

    runs: int = 3
    clients: int = 8
    seconds: float = 5.0  # each insert / enqueue / HTTP row
    claim_jobs: int = 50_000
    claim_jobs_b1: int = 5_000  # B=1 drains ~20x slower
    relay_jobs: int = 100_000
    relay_batch: int = 500
    latency_rate: int = 1_000
    latency_seconds: float = 10.0
    worker_jobs: int = 50_000
    slow_jobs: int = 2_000  # Kafka source and procrastinate drain a few hundred jobs/s here
    concurrency: int = 100
    finished_rows: tuple[int, ...] = (10_000, 1_000_000, 10_000_000)
    scaling_jobs: int = 20_000
    processes: tuple[int, ...] = (1, 2, 4)

    @staticmethod
    def quick() -> Sizes:
        return Sizes(runs=1, seconds=1.5, claim_jobs=10_000, claim_jobs_b1=1_000,
                     relay_jobs=20_000, latency_seconds=3.0, worker_jobs=10_000, slow_jobs=1_000,
                     finished_rows=(10_000, 1_000_000), scaling_jobs=10_000)  # fmt: skip


BATCH = 1_000
INSERT_1, INSERT_BATCH = raw_limits.insert_name(1), raw_limits.insert_name(BATCH)
CLAIM_B = (1, 100, 1_000)
CLAIM_CONNECTIONS = (1, 4)
ENQUEUE_1 = "in-process enqueue, 1 job/txn"
ENQUEUE_MANY = f"in-process enqueue_many, {BATCH}/txn"
HTTP_1 = "POST /v1/jobs, 1 job/request"
HTTP_BATCH = f"POST /v1/jobs:batch, {BATCH}/request"
RELAY_RAW = "raw fetch+mark (relay SQL, no broker)"
RELAY_KAFKA, RELAY_REDIS = "relay -> Kafka (tansu)", "relay -> Redis Streams"
LAT_RAW = "relay latency, instant-ack broker"
LAT_KAFKA, LAT_REDIS = "relay latency -> Kafka", "relay latency -> Redis"
WORKER_TABLE, WORKER_REDIS = "worker, table source", "worker, Redis Streams source"
WORKER_ASYNC = "worker, table source, async def no-op"
WORKER_KAFKA, WORKER_LATENCY = "worker, Kafka source (tansu)", "worker latency, table + NOTIFY"
PGQ, PROC = "pgqueuer 1.6", "procrastinate 3.10"
ENQUEUE_COST = "one enqueue added to a business txn"
STATEMENT_COST = "one plain insert added to a business txn"
JOB_ROW_COST = "one raw outbox insert added to a business txn"


def claim_batches(s: Sizes) -> list[int]:
    """B = 1, 100, 1,000, and the worker's batch size, so every worker row has its raw limit."""
    return sorted({*CLAIM_B, s.concurrency})


def claim_rows(batch: int) -> tuple[str, ...]:
    return tuple(raw_limits.claim_name(batch, c) for c in CLAIM_CONNECTIONS)


def rows(s: Sizes) -> list[Row]:
    """Every non-scaling row, in table order, with its references."""
    load = f"{s.clients} clients, {s.seconds:g} s"
    claims = [Row(raw_limits.claim_name(b, c), "rows/s", raw=(raw_limits.claim_name(b, c),),
                  notes=f"jobs: {s.claim_jobs_b1 if b == 1 else s.claim_jobs:,}")
              for b in claim_batches(s) for c in CLAIM_CONNECTIONS]  # fmt: skip
    drain = claim_rows(s.concurrency)
    relay = f"jobs: {s.relay_jobs:,}, batch {s.relay_batch}"
    offered = f"{s.latency_rate:,} jobs/s offered, {s.latency_seconds:g} s"
    return [
        Row(INSERT_1, "rows/s", raw=(INSERT_1,), notes=load),
        Row(INSERT_BATCH, "rows/s", raw=(INSERT_BATCH,), notes=load),
        *claims,
        Row(
            STATEMENT_COST,
            "ms",
            raw=(STATEMENT_COST,),
            notes="a second business row: any one more statement's round trip",
        ),
        Row(
            JOB_ROW_COST,
            "ms",
            raw=(JOB_ROW_COST,),
            notes="the job's row alone, straight to the driver: no checks, no NOTIFY",
        ),
        Row(
            ENQUEUE_COST,
            "ms",
            raw=(JOB_ROW_COST,),
            notes=f"1 conn, turns of 25 of each over {3 * s.seconds:g} s; target < 0.3 ms",
        ),
        Row(ENQUEUE_1, "jobs/s", raw=(INSERT_1,), notes=load),
        Row(HTTP_1, "jobs/s", raw=(INSERT_1,), notes=load),
        Row(ENQUEUE_MANY, "jobs/s", raw=(INSERT_BATCH,), peer_kind="enqueue", notes=load),
        Row(HTTP_BATCH, "jobs/s", raw=(INSERT_BATCH,), peer_kind="enqueue", notes=load),
        Row(
            f"{PGQ} enqueue, {BATCH}/batch",
            "jobs/s",
            raw=(INSERT_BATCH,),
            peer_kind="enqueue",
            is_peer=True,
            notes=f"jobs: {s.worker_jobs:,}, 1 conn",
        ),
        Row(
            f"{PROC} batch_defer, {BATCH}/batch",
            "jobs/s",
            raw=(INSERT_BATCH,),
            peer_kind="enqueue",
            is_peer=True,
            notes=f"jobs: {s.slow_jobs:,}, 1 conn",
        ),
        Row(RELAY_RAW, "rows/s", raw=(RELAY_RAW,), notes=relay),
        Row(RELAY_KAFKA, "rows/s", raw=(RELAY_RAW,), notes=relay),
        Row(RELAY_REDIS, "rows/s", raw=(RELAY_RAW,), notes=relay),
        Row(LAT_RAW, "ms", raw=(LAT_RAW,), notes=f"commit-to-publish, {offered}"),
        Row(LAT_KAFKA, "ms", raw=(LAT_RAW,), notes=f"commit-to-publish, {offered}"),
        Row(LAT_REDIS, "ms", raw=(LAT_RAW,), notes=f"commit-to-publish, {offered}"),
        Row(
            WORKER_TABLE,
            "jobs/s",
            raw=drain,
            peer_kind="drain",
            notes=f"jobs: {s.worker_jobs:,}, C={s.concurrency}",
        ),
        Row(
            WORKER_ASYNC,
            "jobs/s",
            raw=drain,
            peer_kind="drain",
            notes=f"jobs: {s.worker_jobs:,}, C={s.concurrency}; the peers' no-ops are async too",
        ),
        Row(
            WORKER_REDIS,
            "jobs/s",
            raw=drain,
            peer_kind="drain",
            notes=f"jobs: {s.worker_jobs:,}, C={s.concurrency}",
        ),
        Row(
            WORKER_KAFKA,
            "jobs/s",
            raw=drain,
            peer_kind="drain",
            notes=f"jobs: {s.slow_jobs:,}, C={s.concurrency}",
        ),
        Row(WORKER_LATENCY, "ms", notes=f"commit-to-handled, {offered}; target p99 < 50 ms"),
        Row(
            f"{PGQ} drain",
            "jobs/s",
            raw=drain,
            peer_kind="drain",
            is_peer=True,
            notes=f"jobs: {s.worker_jobs:,}, batch {s.concurrency // 2}, {s.concurrency} tasks",
        ),
        Row(
            f"{PROC} drain",
            "jobs/s",
            raw=drain,
            peer_kind="drain",
            is_peer=True,
            notes=f"jobs: {s.slow_jobs:,}, concurrency {s.concurrency}",
        ),
    ]


def raw_limits_group(servers: Servers, s: Sizes) -> Samples:
    load = closed_loop.Load(clients=s.clients, seconds=s.seconds)
    out: Samples = {}
    with fresh_database(servers) as url:
        for batch in claim_batches(s):
            jobs = s.claim_jobs_b1 if batch == 1 else s.claim_jobs
            for connections in CLAIM_CONNECTIONS:
                name = raw_limits.claim_name(batch, connections)
                out[name] = raw_limits.measure_claims(url, jobs, batch, connections)
        added = raw_limits.added_to_business_transactions(url, 3 * s.seconds)
        out[ENQUEUE_COST] = Sample(added["enqueue"])
        out[STATEMENT_COST] = Sample(added["row"])
        out[JOB_ROW_COST] = Sample(added["outbox row"])
        # Last, so the enqueue rows measured next find the machine as their reference did.
        out[INSERT_1] = raw_limits.measure_inserts(url, load, 1, "raw1")
        out[INSERT_BATCH] = raw_limits.measure_inserts(url, load, BATCH, "rawb")
    return out


def enqueue_group(servers: Servers, s: Sizes) -> Samples:
    """gateway_bench's in-process and HTTP rows (it starts ``outbox gateway`` itself)."""
    load = closed_loop.Load(clients=s.clients, seconds=s.seconds, batch_size=BATCH)
    with fresh_database(servers) as url:
        results = gateway_bench.run_bench(url, load, runs=1)
    out: Samples = {}
    for name in (ENQUEUE_1, HTTP_1, ENQUEUE_MANY, HTTP_BATCH):
        [sample] = results.samples[name]
        out[name] = Sample(sample.jobs_per_second, sample.p50_ms, sample.p99_ms)
    return out


def _latency_sample(p50_p99: tuple[float, float]) -> Sample:
    return Sample(p50_p99[0], *p50_p99)


def relay_group(servers: Servers, s: Sizes) -> Samples:
    publishers: dict[str, Publisher] = {}
    if servers.kafka_bootstrap:
        publishers["kafka"] = KafkaPublisher(servers.kafka_bootstrap)
    if servers.redis_url:
        publishers["redis"] = RedisPublisher(servers.redis_url, maxlen=None)
    out: Samples = {}
    with fresh_database(servers) as url:
        engine = create_engine(url)

        def relay(publisher: Publisher) -> Callable[[], int]:
            router = Router(f"bench-{uuid.uuid4().hex[:8]}")
            return lambda: relay_bench.drain_relay(
                Relay(engine, publisher, router, batch_size=s.relay_batch)
            )

        try:
            raw = lambda: relay_bench.drain_raw(engine, s.relay_batch)  # noqa: E731
            out[RELAY_RAW] = Sample(relay_bench.measure(engine, s.relay_jobs, raw))
            for key, name in (("kafka", RELAY_KAFKA), ("redis", RELAY_REDIS)):
                if key in publishers:
                    out[name] = Sample(relay_bench.measure(engine, s.relay_jobs,
                                                           relay(publishers[key])))  # fmt: skip
            brokers = (("kafka", LAT_KAFKA), ("redis", LAT_REDIS))
            latency = [(LAT_RAW, relay_bench.InstantAck()),
                       *((n, publishers[k]) for k, n in brokers if k in publishers)]  # fmt: skip
            for name, publisher in latency:
                out[name] = _latency_sample(relay_bench.commit_to_publish(
                    engine, publisher, s.latency_rate, s.latency_seconds))  # fmt: skip
        finally:
            engine.dispose()
            for publisher in publishers.values():
                publisher.close()
    return out


def _rate(jobs: int, drained: drains.Drained) -> Sample:
    return Sample(jobs / drained.seconds)


def worker_group(servers: Servers, s: Sizes) -> Samples:
    setup = drains.Setup(admin_url=servers.admin_url, jobs=s.worker_jobs,
                         concurrency=s.concurrency, template=servers.template,
                         redis_url=servers.redis_url,
                         kafka_bootstrap=servers.kafka_bootstrap)  # fmt: skip
    slow = drains.Setup(**{**setup.__dict__, "jobs": min(s.slow_jobs, s.worker_jobs)})
    out: Samples = {WORKER_TABLE: _rate(setup.jobs, worker_bench.run_outbox(setup, "none"))}
    async_drain = worker_bench.run_outbox(setup, "none", awaited=True)
    out[WORKER_ASYNC] = _rate(setup.jobs, async_drain)
    if servers.redis_url:
        out[WORKER_REDIS] = _rate(setup.jobs, worker_bench.run_outbox(setup, "redis"))
    if servers.kafka_bootstrap:
        out[WORKER_KAFKA] = _rate(slow.jobs, worker_bench.run_outbox(slow, "kafka"))
    with fresh_database(servers) as url:
        seconds = worker_latency.commit_to_handled(url, rate=s.latency_rate,
                                                   seconds=s.latency_seconds)  # fmt: skip
    p50, p99 = _quantiles_ms(seconds)
    out[WORKER_LATENCY] = Sample(p50, p50, p99)
    return out


def _quantiles_ms(seconds: list[float]) -> tuple[float, float]:
    if len(seconds) < 2:
        return seconds[0] * 1000, seconds[0] * 1000
    q = statistics.quantiles(seconds, n=100, method="inclusive")
    return q[49] * 1000, q[98] * 1000


def peers_group(servers: Servers, s: Sizes) -> Samples:
    """pgqueuer and procrastinate: their batch enqueue, then their drain, each a fresh database."""
    out: Samples = {}
    for name, drain, jobs in ((PGQ, peer_drains.drain_pgqueuer, s.worker_jobs),
                              (PROC, peer_drains.drain_procrastinate, s.slow_jobs)):  # fmt: skip
        with databases.fresh_database(servers.admin_url) as url:
            drained = asyncio.run(drain(url, jobs, s.concurrency))
        out[f"{name} drain"] = _rate(jobs, drained)
        if drained.enqueue_seconds:
            label = "enqueue" if name == PGQ else "batch_defer"
            out[f"{name} {label}, {BATCH}/batch"] = Sample(jobs / drained.enqueue_seconds)
    return out
