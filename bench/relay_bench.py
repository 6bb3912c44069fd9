"""Relay throughput and latency beside the raw SQL limit, in one run on the same servers.

    .venv/bin/python bench/relay_bench.py [--jobs 100000] [--batch 500] [--runs 3]
                                          [--rate 1000] [--seconds 10]

Throughput rows: raw fetch+mark (the relay's own SQL, no broker), relay to Kafka (tansu), relay
to Redis; each the median of ``--runs`` drains of a fresh backlog; ratios are to the raw row.
Latency rows: commit-to-publish p50/p99 (``published_at - created_at``, both stamped by the
database) while a writer offers ``--rate`` jobs/s for ``--seconds`` in 5-job transactions with
NOTIFY; the baseline is the same relay loop whose "broker" acks at once.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine

import gateway
from outbox import migrations_runner, queries
from outbox.database import create_engine, libpq_conninfo
from outbox.embedded_servers import embedded_kafka, embedded_postgres, embedded_redis
from outbox.schema import jobs
from relay.kafka_publisher import KafkaPublisher
from relay.publisher import Delivery, OutgoingMessage, Publisher
from relay.redis_publisher import RedisPublisher
from relay.relay_loop import Relay
from relay.routing import Router


def fill(engine: Engine, jobs: int) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE outbox_jobs"))
    for start in range(0, jobs, 1000):
        specs = [gateway.JobSpec("bench.noop", {"i": i}, key=f"k{i % 64}")
                 for i in range(start, min(jobs, start + 1000))]  # fmt: skip
        with engine.begin() as conn:
            gateway.enqueue_many(conn, specs, notify=False)


def drain_raw(engine: Engine, batch: int) -> int:
    done = 0
    while True:
        with engine.begin() as conn:
            rows = queries.fetch_relayable(conn, limit=batch)
            if not rows:
                return done
            receipts = [queries.PublishReceipt(r.id, {"offset": r.id}) for r in rows]
            done += len(queries.mark_published(conn, receipts))


def drain_relay(relay: Relay) -> int:
    done = 0
    try:
        while (result := relay.run_once()).fetched:
            done += result.published
    finally:
        relay.close()  # frees its shards for the next relay of the run
    return done


class InstantAck:
    """A "broker" that acks every message at once: the relay loop's own latency floor."""

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[Delivery]:
        return [Delivery(m.id, {"offset": m.id}) for m in messages]

    def close(self) -> None:
        pass


JOBS_PER_TRANSACTION = 5


def commit_to_publish(
    engine: Engine, publisher: Publisher, rate: int, seconds: float
) -> tuple[float, float]:
    """p50 and p99 (ms) of commit-to-publish while a writer offers ``rate`` jobs/s."""
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE outbox_jobs"))
    url = engine.url.render_as_string(hide_password=False)
    relay = Relay(engine, publisher, Router(f"lat-{uuid.uuid4().hex[:8]}"),
                  listen_conninfo=libpq_conninfo(url))  # fmt: skip
    thread = threading.Thread(target=relay.run)
    thread.start()
    relay.idle.wait(30)
    transactions = int(rate * seconds / JOBS_PER_TRANSACTION)
    started = time.monotonic()
    for t in range(transactions):
        # Open loop: each transaction starts on its schedule, however the relay keeps up.
        delay = started + t * JOBS_PER_TRANSACTION / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with engine.begin() as conn:
            gateway.enqueue_many(conn, [gateway.JobSpec("bench.noop", {"t": t}, key=f"k{t % 64}")
                                        for _ in range(JOBS_PER_TRANSACTION)])  # fmt: skip
    total = transactions * JOBS_PER_TRANSACTION
    published = sa.select(sa.func.count()).where(jobs.c.status == "PUBLISHED")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(published).scalar_one() == total:
                break
        time.sleep(0.05)  # the writer is done; poll for the tail with a deadline
    relay.stop()
    thread.join(30)
    latency_ms = sa.func.extract("epoch", jobs.c.published_at - jobs.c.created_at) * 1000
    with engine.connect() as conn:
        p50, p99, done = conn.execute(sa.select(
            sa.func.percentile_cont(0.5).within_group(latency_ms),
            sa.func.percentile_cont(0.99).within_group(latency_ms),
            sa.func.count(jobs.c.published_at),
        )).one()  # fmt: skip
    if done != total:
        raise SystemExit(f"published {done} of {total} within the deadline")
    return float(p50), float(p99)


def measure(engine: Engine, jobs: int, drain: Callable[[], int]) -> float:
    fill(engine, jobs)
    started = time.perf_counter()
    drained = drain()
    elapsed = time.perf_counter() - started
    if drained != jobs:
        raise SystemExit(f"drained {drained} of {jobs}")
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=1000, help="offered jobs/s for latency")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency run length")
    args = parser.parse_args()
    with embedded_postgres() as pg, embedded_kafka() as kafka, embedded_redis() as redis_server:
        migrations_runner.upgrade(pg.url)
        engine = create_engine(pg.url)
        kafka_pub = KafkaPublisher(f"127.0.0.1:{kafka.port}")
        redis_pub = RedisPublisher(f"redis://127.0.0.1:{redis_server.port}/0", maxlen=None)
        rows: dict[str, Callable[[], int]] = {
            "raw fetch+mark (no broker)": lambda: drain_raw(engine, args.batch),
            "relay -> Kafka (tansu)": lambda: drain_relay(Relay(
                engine, kafka_pub, Router(f"bench-{uuid.uuid4().hex[:8]}"), batch_size=args.batch)),
            "relay -> Redis Streams": lambda: drain_relay(Relay(
                engine, redis_pub, Router(f"bench-{uuid.uuid4().hex[:8]}"), batch_size=args.batch)),
        }  # fmt: skip
        results: dict[str, list[float]] = {name: [] for name in rows}
        latency_rows: dict[str, Publisher] = {
            "relay, instant ack (no broker)": InstantAck(),
            "relay -> Kafka (tansu)": kafka_pub,
            "relay -> Redis Streams": redis_pub,
        }
        latencies: dict[str, list[tuple[float, float]]] = {name: [] for name in latency_rows}
        for _ in range(args.runs):  # interleaved, so machine noise hits every row alike
            for name, drain in rows.items():
                results[name].append(measure(engine, args.jobs, drain))
            for name, publisher in latency_rows.items():
                latencies[name].append(
                    commit_to_publish(engine, publisher, args.rate, args.seconds)
                )
        kafka_pub.close()
        redis_pub.close()
        engine.dispose()
    show(results, args)
    show_latency(latencies, args)


def show_latency(latencies: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> None:
    offered = f"{args.rate:,} jobs/s offered for {args.seconds:g} s"
    table = Table(title=f"commit-to-publish at {offered}, median of {args.runs}")
    for column in ("row", "p50 ms", "p99 ms", "p99 min..max"):
        table.add_column(column, justify="left" if column == "row" else "right")
    for name, runs in latencies.items():
        p50 = statistics.median(r[0] for r in runs)
        p99s = [r[1] for r in runs]
        table.add_row(name, f"{p50:.1f}", f"{statistics.median(p99s):.1f}",
                      f"{min(p99s):.1f}..{max(p99s):.1f}")  # fmt: skip
    Console().print(table)


def show(results: dict[str, list[float]], args: argparse.Namespace) -> None:
    raw = statistics.median(results["raw fetch+mark (no broker)"])
    table = Table(title=f"relay drain of {args.jobs:,} jobs, batch {args.batch}, "
                        f"median of {args.runs}")  # fmt: skip
    for column in ("row", "rows/s (median)", "min..max", "vs raw"):
        table.add_column(column, justify="left" if column == "row" else "right")
    for name, values in results.items():
        median = statistics.median(values)
        table.add_row(name, f"{median:,.0f}", f"{min(values):,.0f}..{max(values):,.0f}",
                      f"{median / raw:.2f}x")  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
