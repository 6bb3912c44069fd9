"""HTTP gateway submissions beside the in-process enqueue API, in one run on the same server.

    .venv/bin/python bench/gateway_bench.py [--seconds 5 | --requests N] [--clients 8]
                                            [--batch-size 100] [--runs 3] [--http-client stdlib]

Starts an embedded PostgreSQL (stock, durable settings), migrates it, and serves ``outbox gateway``
as operators run it (a subprocess, one uvicorn worker, a bearer token, rate limit off) on a free
loopback port. Then, per run and in this order, with ``--clients`` concurrent clients each:

- ``GET /healthz``: no database; the most requests/s this gateway process answers at all;
- in-process ``gateway.enqueue``: one job per transaction from ``--clients`` threads, each on its
  own connection (the baseline of the single rows);
- ``POST /v1/jobs``: one job per request (the route also reads the job back in its transaction);
- in-process ``gateway.enqueue_many``: ``--batch-size`` jobs per transaction (batch baseline);
- ``POST /v1/jobs:batch``: ``--batch-size`` jobs per request.

The load generator is ``--clients`` threads, each on its own keep-alive connection, sending its
next request as soon as the previous one is answered (closed loop). It shares the cores with the
gateway and PostgreSQL, so it uses the stdlib's ``http.client``: measured here, httpx's sync
client spent about 4x its CPU per request, and httpx's async client about 10x, enough to saturate
a core before the gateway did (``--http-client httpx`` measures with ``httpx.Client``). The
``CPU bench/gw`` column shows the cores the bench process (load generator, or the in-process rows
themselves) and the gateway process used during the row; PostgreSQL's share is not counted.

Each row runs ``--seconds`` or ``--requests`` requests; rows are interleaved across ``--runs``
after one unrecorded warm-up run, and the table shows medians, with each job row's jobs/s as a
ratio to its in-process baseline of the same run. The table is truncated at the start of each
run. Every job carries a ``job_id`` of its row and run; after each row the database must hold
exactly the jobs the responses acknowledged, once each, or the bench stops (exit 1).
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/gateway_bench.py`: the repository root holds `bench`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine

from bench.closed_loop import BenchError, Client, Load, Sample, check_stored, drive
from bench.gateway_clients import (
    TRANSPORTS,
    Send,
    enqueue_batch,
    enqueue_one,
    get_healthz,
    http_client,
    post_batch,
    post_job,
)
from bench.gateway_process import RunningGateway, cpu_seconds, running_gateway
from outbox import migrations_runner
from outbox.database import create_engine
from outbox.embedded_servers import embedded_postgres

Measure = Callable[[Load, str], Sample]


@dataclass(frozen=True)
class Row:
    """One line of the table: how to measure it under a ``job_id`` prefix, and its baseline."""

    name: str
    measure: Measure
    baseline: str | None = None


HEALTHZ = "GET /healthz (no database)"


def build_rows(engine: Engine, gw: RunningGateway, batch_size: int, transport: str) -> list[Row]:
    """The rows in the order they run; each baseline runs just before the HTTP row it anchors."""
    single_baseline = "in-process enqueue, 1 job/txn"
    batch_baseline = f"in-process enqueue_many, {batch_size}/txn"

    def over_http(send: Send) -> Client:
        return http_client(gw, transport, send)

    return [
        Row(HEALTHZ, lambda load, p: drive(load, over_http(get_healthz), jobs_per=0)),
        Row(single_baseline, lambda load, p: drive(load, enqueue_one(engine, p), jobs_per=1)),
        Row("POST /v1/jobs, 1 job/request",
            lambda load, p: drive(load, over_http(post_job(p)), jobs_per=1), single_baseline),
        Row(batch_baseline, lambda load, p: drive(
            load, enqueue_batch(engine, p, batch_size), jobs_per=batch_size)),
        Row(f"POST /v1/jobs:batch, {batch_size}/request", lambda load, p: drive(
            load, over_http(post_batch(p, batch_size)), jobs_per=batch_size), batch_baseline),
    ]  # fmt: skip


@dataclass(frozen=True)
class Results:
    """Every row's samples, one per run, in the order the rows ran."""

    rows: list[Row]
    samples: dict[str, list[Sample]]


def run_bench(database_url: str, load: Load, runs: int, *, transport: str = "stdlib") -> Results:
    """Serve the gateway on ``database_url`` (migrated) and measure every row ``runs`` times."""
    engine = create_engine(database_url, pool_size=load.clients)
    try:
        with running_gateway(database_url, max_batch=load.batch_size) as gw:
            rows = build_rows(engine, gw, load.batch_size, transport)
            warm_up = Load(load.clients, requests=2 * load.clients, batch_size=load.batch_size)
            results = Results(rows, {row.name: [] for row in rows})
            for run in range(runs + 1):  # run 0 warms connections and caches; not recorded
                with engine.begin() as conn:
                    conn.execute(sa.text("TRUNCATE outbox_jobs"))
                for i, row in enumerate(rows):
                    prefix = f"bench-r{run}-{i}"
                    row_load = load if run else warm_up
                    sample = measure_cpu(gw.pid, partial(row.measure, row_load, prefix))
                    check_stored(engine, prefix, sample)
                    if run:
                        results.samples[row.name].append(sample)
            return results
    finally:
        engine.dispose()


def measure_cpu(gateway_pid: int, measure: Callable[[], Sample]) -> Sample:
    """``measure()``'s sample with the cores this process and the gateway used meanwhile."""
    ours, theirs, started = time.process_time(), cpu_seconds(gateway_pid), time.perf_counter()
    sample = measure()
    elapsed = time.perf_counter() - started
    return replace(sample, bench_cores=(time.process_time() - ours) / elapsed,
                   gateway_cores=(cpu_seconds(gateway_pid) - theirs) / elapsed)  # fmt: skip


def show(results: Results, load: Load, console: Console) -> None:
    runs = len(results.samples[results.rows[0].name])
    length = f"{load.requests:,} requests" if load.requests else f"{load.seconds:g} s"
    table = Table(title=f"gateway submissions: {load.clients} clients, {length} per row, "
                        f"median of {runs}")  # fmt: skip
    for column in ("row", "req/s", "jobs/s", "jobs/s min..max", "p50 ms", "p99 ms",
                   "vs in-process", "CPU bench/gw"):  # fmt: skip
        table.add_column(column, justify="left" if column == "row" else "right")
    for row in results.rows:
        table.add_row(*_cells(row, results))
    console.print(table)


def _cells(row: Row, results: Results) -> list[str]:
    samples = results.samples[row.name]
    jobs_rates = [s.jobs_per_second for s in samples]
    jobs_cells = ["-", "-"]
    if row.name != HEALTHZ:
        jobs_cells = [f"{statistics.median(jobs_rates):,.0f}",
                      f"{min(jobs_rates):,.0f}..{max(jobs_rates):,.0f}"]  # fmt: skip
    ratio = "-"
    if row.baseline is not None:
        base = statistics.median(s.jobs_per_second for s in results.samples[row.baseline])
        ratio = f"{statistics.median(jobs_rates) / base:.2f}x"
    cores = (f"{statistics.median(s.bench_cores for s in samples):.2f}/"
             f"{statistics.median(s.gateway_cores for s in samples):.2f}")  # fmt: skip
    return [row.name, f"{statistics.median(s.requests_per_second for s in samples):,.0f}",
            *jobs_cells, f"{statistics.median(s.p50_ms for s in samples):.2f}",
            f"{statistics.median(s.p99_ms for s in samples):.2f}", ratio, cores]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each row's run")
    parser.add_argument(
        "--requests", type=int, help="requests per row's run (instead of --seconds)"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (and threads)")
    parser.add_argument("--batch-size", type=int, default=100, help="jobs per batch request")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--http-client",
        choices=sorted(TRANSPORTS),
        default="stdlib",
        help="the load generator's HTTP client (default: the cheaper one)",
    )
    args = parser.parse_args()
    if args.clients < 1 or not 1 <= args.batch_size <= 10_000 or args.runs < 1:
        parser.error("--clients and --runs must be at least 1, --batch-size 1..10000")
    load = Load(args.clients, args.seconds, args.requests, args.batch_size)
    try:
        with embedded_postgres() as pg:
            migrations_runner.upgrade(pg.url)
            results = run_bench(pg.url, load, args.runs, transport=args.http_client)
    except BenchError as exc:
        raise SystemExit(f"error: {exc}") from None
    # Piped output gets rich's 80 columns, too narrow for the table; a terminal keeps its own.
    show(results, load, Console() if sys.stdout.isatty() else Console(width=132))


if __name__ == "__main__":
    main()
