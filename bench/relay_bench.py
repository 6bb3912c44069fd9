"""Relay throughput beside the raw SQL limit, in one run on the same embedded servers.

    .venv/bin/python bench/relay_bench.py [--jobs 100000] [--batch 500] [--runs 3]

Rows: raw fetch+mark (the relay's own SQL, no broker), relay to Kafka (tansu), relay to Redis.
Each figure is the median of ``--runs`` drains of a fresh backlog; ratios are to the raw row.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine

import gateway
from outbox import migrations_runner, queries
from outbox.database import create_engine
from outbox.embedded_servers import embedded_kafka, embedded_postgres, embedded_redis
from relay.kafka_publisher import KafkaPublisher
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
    while (result := relay.run_once()).fetched:
        done += result.published
    return done


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
        for _ in range(args.runs):  # interleaved, so machine noise hits every row alike
            for name, drain in rows.items():
                results[name].append(measure(engine, args.jobs, drain))
        kafka_pub.close()
        redis_pub.close()
        engine.dispose()
    show(results, args)


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
